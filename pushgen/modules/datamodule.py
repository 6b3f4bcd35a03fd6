"""LightningDataModule over prepared preference pairs and their pre-tokenised texts."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from pushgen.data.collate import PairCollator, PairDataset, ResumableDataLoader, TestGroupedBatchSampler


class PairDataModule(L.LightningDataModule):
    def __init__(self, splits: dict[str, pd.DataFrame], token_ids: list[list[int]], *, pad_id: int,
                 padding_side: str = "right", batch_size: int = 32, eval_batch_size: int = 64,
                 group_by_test: bool = True, seed: int = 0, num_workers: int = 0, arms: pd.DataFrame | None = None,
                 whole_tests: bool = False):
        """``arms``: the pooled table (one row per text, token_ids order), for losses that read each
        test's arms; ``whole_tests``: batches never cut a test (listwise and pointwise losses)."""
        super().__init__()
        self.splits = splits
        self.collate = PairCollator(token_ids, pad_id, padding_side, arms=arms)
        self.whole_tests = whole_tests
        if whole_tests and not group_by_test:
            raise ValueError("this loss reads whole tests: it needs data.group_by_test=true")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.group_by_test, self.seed, self.num_workers = group_by_test, seed, num_workers
        self._train_loader: ResumableDataLoader | None = None
        self._resume_state: dict | None = None
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
        # Training order is a function of (seed, epoch) only, and the loader records how far it got:
        # a run resumed mid-epoch continues with exactly the batches an uninterrupted run would see.
        # Evaluation also groups by test (unshuffled): shared texts are scored once.
        grouped = self.group_by_test or not train
        world, rank = self._replicas()
        sampler = TestGroupedBatchSampler(np.asarray(codes) if grouped else None, batch, seed=int(self.seed),
                                          shuffle=train, n=len(ds), whole_tests=self.whole_tests,
                                          num_replicas=world, rank=rank)
        return ResumableDataLoader(ds, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers)

    def _replicas(self) -> tuple[int, int]:
        """(world size, rank) of data-parallel training; (1, 0) outside a Trainer or on one device.
        The samplers split batches themselves, so trainer configs set use_distributed_sampler=false."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def train_dataloader(self):
        loader = self._loader("train", True)
        if self._resume_state:
            loader.load_state_dict(self._resume_state)
            self._resume_state = None
        self._train_loader = loader
        return loader

    # Lightning restores the datamodule before it first asks for the training loader (which, with
    # an LR schedule sized by `trainer.estimated_stepping_batches`, happens before the loops are
    # restored and the loader's own state would be applied): the position goes through here.
    def state_dict(self) -> dict:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._resume_state = state.get("train_loader")

    def val_dataloader(self):
        return self._loader("val", False)

    def test_dataloader(self):
        return self._loader("test", False)

