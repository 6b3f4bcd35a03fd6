"""What the reliability guarantees cost: config validation per run, an atomic checkpoint save
(temporary file beside the target + fsync + rename) against Lightning's own save, and the resumable
training loader against a plain DataLoader over the same batches."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import Timer, default_cfg
from lightning.fabric.utilities.cloud_io import _atomic_save
from torch.utils.data import DataLoader

from pushgen.data.collate import PairDataset, ResumableDataLoader, TestGroupedBatchSampler
from pushgen.utils.checkpoint import AtomicCheckpointIO
from pushgen.utils.schema import validate_config


def main() -> None:
    cfg = default_cfg()
    validate_config(cfg, "train")
    with Timer() as t:
        for _ in range(20):
            validate_config(cfg, "train")
    print(f"config validation (train.yaml, every group): {t.seconds / 20 * 1000:.1f} ms per run")

    # A checkpoint the size of the default run's (MiniLM weights + AdamW moments ~ 270 MB).
    ckpt = {"state_dict": {f"w{i}": torch.randn(1024, 1024) for i in range(66)}}
    mb = sum(v.numel() * 4 for v in ckpt["state_dict"].values()) / 2**20
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as d:
        io = AtomicCheckpointIO()
        for name, save in (("lightning _atomic_save", lambda p: _atomic_save(ckpt, p)),
                           ("AtomicCheckpointIO", lambda p: io.save_checkpoint(ckpt, p))):
            with Timer() as t:
                save(Path(d) / "last.ckpt")
            print(f"checkpoint save, {name}: {mb:.0f} MB in {t.seconds:.2f} s = {mb / t.seconds:,.0f} MB/s")

    n = 10_876  # training pairs of the default run
    pairs = pd.DataFrame({"chosen": np.arange(n), "rejected": np.arange(n), "soft_label": 0.7, "weight": 1.0,
                          "p_value": 0.5, "ctr_diff": 0.01})
    codes = np.repeat(np.arange(n // 3 + 1), 3)[:n]
    collate = lambda items: len(items)  # noqa: E731  (the loader itself, not the collator, is measured)
    for name, make in (("DataLoader", lambda: DataLoader(PairDataset(pairs), batch_sampler=TestGroupedBatchSampler(codes, 32, 0),
                                                          collate_fn=collate)),
                       ("ResumableDataLoader", lambda: ResumableDataLoader(PairDataset(pairs), collate_fn=collate,
                                                                           batch_sampler=TestGroupedBatchSampler(codes, 32, 0)))):
        loader = make()
        with Timer() as t:
            for _ in range(3):
                batches = sum(1 for _ in loader)
        print(f"one epoch of batches, {name}: {batches} batches in {t.seconds / 3 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
