"""LightningDataModule over prepared preference pairs and their pre-tokenised texts."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler

from pushgen.data.collate import PairCollator, PairDataset, TestGroupedBatchSampler


class PairDataModule(L.LightningDataModule):
    def __init__(self, splits: dict[str, pd.DataFrame], token_ids: list[list[int]], *, pad_id: int,
                 padding_side: str = "right", batch_size: int = 32, eval_batch_size: int = 64,
                 group_by_test: bool = True, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.splits = splits
        self.collate = PairCollator(token_ids, pad_id, padding_side)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.group_by_test, self.seed, self.num_workers = group_by_test, seed, num_workers
        for name, part in splits.items():
            if len(part) == 0:
                hint = ("raise data.split.val / data.split.test (fractions of tests)" if name != "train"
                        else "lower data.split.val / data.split.test")
                raise ValueError(f"the {name} split has no pairs; {hint}, or add data"
                                 + (", or set test=false" if name == "test" else ""))

    def _loader(self, name: str, train: bool) -> DataLoader:
        pairs = self.splits[name]
        codes = pd.factorize(pairs["test_id"])[0]
        ds = PairDataset(pairs)
        batch = self.batch_size if train else self.eval_batch_size
        world, rank = self._replicas()
        if train and not self.group_by_test:
            if world > 1:
                sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=int(self.seed))
                return DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=self.collate,
                                  num_workers=self.num_workers)
            gen = torch.Generator().manual_seed(int(self.seed))
            return DataLoader(ds, batch_size=batch, shuffle=True, generator=gen, collate_fn=self.collate,
                              num_workers=self.num_workers)
        # Evaluation also groups by test (unshuffled): shared texts are scored once.
        sampler = TestGroupedBatchSampler(np.asarray(codes), batch, seed=int(self.seed), shuffle=train,
                                          num_replicas=world, rank=rank)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers)

    def _replicas(self) -> tuple[int, int]:
        """(world size, rank) of data-parallel training; (1, 0) outside a Trainer or on one device.
        The samplers split batches themselves, so trainer configs set use_distributed_sampler=false."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False)

    def test_dataloader(self):
        return self._loader("test", False)

