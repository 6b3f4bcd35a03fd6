"""Synthetic A/B logs with the shapes of a real one, for scaling benchmarks and tests.

Each test is one item with 2-6 arms; some arms show the same headline with another image (as in the
Upworthy archive, so pooling has work to do); impressions are balanced within a test (a working
randomiser), clicks are binomial around a CTR of about 1.5% that depends on the headline. Columns
use the Upworthy names, so ``data=upworthy data.path=FILE`` reads the file as it is.

    python -m pushgen.data.synthetic --tests 20000 --out /tmp/synthetic_ab.parquet
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

_SUBJECTS = ["a teacher", "this dad", "a nurse", "the mayor", "a 9-year-old", "scientists", "my grandmother",
             "a stranger", "these students", "one small town", "a firefighter", "the internet", "a chef", "two sisters"]
_VERBS = ["found", "said", "built", "wrote", "asked", "did", "shared", "changed", "fixed", "noticed", "saved"]
_OBJECTS = ["something incredible", "a letter to her son", "the one thing nobody expected", "a tiny house",
            "what everyone was thinking", "a simple idea", "the truth about school lunches", "a song",
            "an old photo", "the rules", "a garden on the roof", "a map of the city", "a question"]
_HOOKS = ["", "You won't believe what happened next.", "Watch till the end.", "This is beautiful.",
          "It's about time.", "Here's why it matters.", "The reaction says it all.", "Wow.", "Read this."]
_LEDES = ["A story about {s} and {o}.", "When {s} {v} {o}, people listened.", "What {s} {v} will surprise you."]


def synthetic_ab_log(n_tests: int, seed: int = 0, min_arms: int = 2, max_arms: int = 6,
                     image_variant_share: float = 0.25) -> pd.DataFrame:
    """One row per arm, ``n_tests`` tests of ``min_arms``..``max_arms`` arms (mean about 4).
    Vectorised over arms: a million arms take a few seconds."""
    if n_tests < 1 or not 2 <= min_arms <= max_arms:
        raise ValueError(f"need n_tests >= 1 and 2 <= min_arms <= max_arms, got {n_tests}, {min_arms}, {max_arms}")
    rng = np.random.default_rng(seed)
    n_arms = rng.integers(min_arms, max_arms + 1, n_tests)
    test = np.repeat(np.arange(n_tests), n_arms)
    total = len(test)
    pos = np.arange(total) - np.repeat(np.cumsum(n_arms) - n_arms, n_arms)   # arm's place in its test

    parts = [rng.integers(len(words), size=total) for words in (_SUBJECTS, _VERBS, _OBJECTS, _HOOKS)]
    # A year in every headline and lede keeps texts (nearly) unique across tests, as in a real log:
    # without it, thousands of tests drawn from a few thousand word combinations share texts and
    # the leakage graph joins them into one component that no held-out split can take.
    years = rng.integers(1900, 2026, size=total)
    headline = np.array([f"{_SUBJECTS[a][0].upper()}{_SUBJECTS[a][1:]} {_VERBS[b]} {_OBJECTS[c]} in {y}. {_HOOKS[d]}".strip()
                         for a, b, c, d, y in zip(*parts, years)], dtype=object)
    # Image variants: an arm repeats the text of an earlier arm of its test (resolved in arm order,
    # so a copy of a copy is the original text).
    variant = (pos > 0) & (rng.random(total) < image_variant_share)
    source = np.arange(total) - (rng.random(total) * np.maximum(pos, 1)).astype(np.int64) - 1
    for p in range(1, max_arms):
        take = variant & (pos == p)
        headline[take] = headline[source[take]]

    ls, lv, lo, lt = (rng.integers(len(w), size=n_tests) for w in (_SUBJECTS, _VERBS, _OBJECTS, _LEDES))
    lede_years = rng.integers(1900, 2026, size=n_tests)
    ledes = np.array([_LEDES[t].format(s=_SUBJECTS[a], v=_VERBS[b], o=_OBJECTS[c]) + f" ({y})"
                      for a, b, c, t, y in zip(ls, lv, lo, lt, lede_years)], dtype=object)
    base_imps = rng.lognormal(np.log(3300), 0.3, n_tests)
    base_ctr = np.clip(rng.lognormal(np.log(0.015), 0.5, n_tests), 0.002, 0.08)
    imps = np.maximum(rng.normal(base_imps[test], np.sqrt(base_imps[test])), 1).astype(np.int64)  # balanced: passes SRM
    # A text's effect is fixed by its words, so image variants of one text share it.
    effect = np.array([(zlib.crc32(h.encode()) % 1000) / 1000 - 0.5 for h in headline]) * 0.3
    ctr = np.clip(base_ctr[test] * np.exp(effect), 0, 1)
    return pd.DataFrame({
        "clickability_test_id": np.char.add(f"syn{seed}_", np.char.zfill(test.astype(str), 7)).astype(object),
        "headline": headline, "lede": ledes[test], "impressions": imps, "clicks": rng.binomial(imps, ctr),
        "test_week": 201410 + rng.integers(0, 40, n_tests)[test],      # outside Upworthy's excluded window
        "eyecatcher_id": np.char.add("img", rng.integers(1_000_000, size=total).astype(str)).astype(object),
        "first_place": pos == 0,
    })


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="write a synthetic A/B log (Upworthy column names)")
    ap.add_argument("--tests", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help=".parquet, .csv or .jsonl")
    args = ap.parse_args(argv)
    table = synthetic_ab_log(args.tests, seed=args.seed)
    suffix = args.out.suffix.lower()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        table.to_parquet(args.out, index=False)
    elif suffix == ".csv":
        table.to_csv(args.out, index=False)
    elif suffix == ".jsonl":
        table.to_json(args.out, orient="records", lines=True)
    else:
        raise SystemExit(f"--out must end in .parquet, .csv or .jsonl, got {args.out}")
    print(f"{len(table)} arms of {args.tests} tests -> {args.out}")
    return args.out


if __name__ == "__main__":
    main()
