"""Reward losses and the classification study: their cost next to a training step.

Prints, for each loss, microseconds per forward+backward on a batch shaped like the real ones
(whole tests of the real Upworthy training split, up to 32 pairs), and the seconds the
classification study takes on the real held-out pairs (scores drawn at random: the cost does not
depend on them) with 1000 bootstrap resamples. A MiniLM training step is about 0.8 s on this CPU.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from _common import Timer, default_cfg

from pushgen.data.collate import PairCollator, PairDataset, TestGroupedBatchSampler
from pushgen.data.pipeline import prepare
from pushgen.evaluation.classification import classification_table
from pushgen.losses import LOSSES, reward_loss


def main(repeats: int = 200) -> None:
    torch.set_num_threads(2)
    prepared = prepare(default_cfg().data, seed=0)
    train = prepared.split("train")
    sampler = TestGroupedBatchSampler(pd.factorize(train["test_id"])[0], 32, seed=0, whole_tests=True)
    collate = PairCollator([[1]] * len(prepared.pooled), pad_id=0, arms=prepared.pooled)
    ds = PairDataset(train)
    batches = [collate([ds[i] for i in b]) for b, _ in zip(sampler, range(50))]
    texts = np.mean([len(b["text_group"]) for b in batches])
    print(f"batches: {np.mean([len(b['index']) for b in batches]):.1f} pairs, {texts:.1f} texts on average")
    for name in LOSSES:
        cfg = {"name": name, "use_weights": False}
        scores = [torch.randn(len(b["text_group"]), requires_grad=True) for b in batches]
        with Timer() as t:
            for r in range(repeats):
                i = r % len(batches)
                reward_loss(cfg, scores[i], batches[i]).backward()
        print(f"loss {name:14s} {1e6 * t.seconds / repeats:8.0f} us per forward+backward")

    test = prepared.split("test")
    rng = np.random.default_rng(0)
    test = test.assign(score_chosen=rng.normal(size=len(test)), score_rejected=rng.normal(size=len(test)))
    with Timer() as t:
        classification_table(test, prepared.pooled, n_boot=1000)
    print(f"classification study: {len(test)} pairs from {test['test_id'].nunique()} tests, "
          f"1000 resamples in {t.seconds:.1f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
