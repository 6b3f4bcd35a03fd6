"""Data preparation and tokenisation speed on the real Upworthy log.

Prints arms/s for file -> validated -> filtered -> pooled -> split -> pairs, and texts/s for
tokenising every pooled text with the default backbone's tokenizer (cold, then from the cache).
"""

from __future__ import annotations

import tempfile

from _common import Timer, default_cfg

from pushgen.data.pipeline import prepare
from pushgen.data.tokenize import tokenize_texts
from pushgen.models import load_backbone


def main() -> None:
    cfg = default_cfg()
    with Timer() as t:
        prepared = prepare(cfg.data, seed=0)
    arms = prepared.stats["rows_read"]
    print(f"prepare: {arms} arms read -> {len(prepared.pairs)} pairs in {t.seconds:.2f} s = {arms / t.seconds:,.0f} arms/s")

    tok = load_backbone(cfg.backbone).tokenizer
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "cached"):
            with Timer() as t:
                ids, _ = tokenize_texts(prepared.pooled, tok, max_length=64, use_evidence=False, kind="encoder",
                                        cache_dir=cache)
            print(f"tokenise ({label}): {len(ids)} texts in {t.seconds:.2f} s = {len(ids) / t.seconds:,.0f} texts/s")
        with Timer() as t:
            ids, _ = tokenize_texts(prepared.pooled, tok, max_length=256, use_evidence=True, kind="encoder",
                                    cache_dir=cache)
        print(f"tokenise with lede (cold): {len(ids)} texts in {t.seconds:.2f} s = {len(ids) / t.seconds:,.0f} texts/s")


if __name__ == "__main__":
    main()
