"""Labeling speed on the real Upworthy headlines: headlines/s for each labeler.

`python benchmarks/bench_labelers.py [rules learned]`. The learned labeler is loaded from its
cache (trained first if there is none; the training time is printed then).
"""

from __future__ import annotations

import sys

from _common import REPO, Timer
from hydra import compose, initialize_config_dir

from pushgen.categories import build_labeler, load_taxonomy
from pushgen.categories.hand_labels import distinct_headlines


def main(kinds: list[str]) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="categories")
    texts = distinct_headlines(cfg.data_path)["text"].tolist()
    taxonomy = load_taxonomy(cfg.taxonomy)
    for kind in kinds:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            lab_cfg = compose(config_name="categories", overrides=[f"labeler={kind}"]).labeler
        with Timer() as t:
            labeler = build_labeler(lab_cfg, taxonomy)
        print(f"{kind}: built (or loaded) in {t.seconds:.2f} s")
        labeler.label(texts[:50])                      # warm-up
        with Timer() as t:
            labeler.label(texts)
        print(f"{kind}: {len(texts)} headlines in {t.seconds:.2f} s = {len(texts) / t.seconds:,.0f} headlines/s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["rules", "learned"])
