"""Batches of preference pairs. Each distinct text in a batch is encoded once: the collator pads the
unique texts and gives index vectors that pick the chosen and rejected scores out of one forward."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

PAIR_FIELDS = ("soft_label", "weight", "p_value", "ctr_diff", "z")


class PairDataset(Dataset):
    def __init__(self, pairs):
        self.chosen = pairs["chosen"].to_numpy(dtype=np.int64)
        self.rejected = pairs["rejected"].to_numpy(dtype=np.int64)
        self.fields = {f: pairs[f].to_numpy(dtype=np.float32) for f in PAIR_FIELDS}

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> dict:
        item = {"chosen": self.chosen[i], "rejected": self.rejected[i], "index": i}
        item.update({f: v[i] for f, v in self.fields.items()})
        return item


def pad_sequences(seqs: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if side == "left":
            ids[row, width - len(seq):] = torch.as_tensor(seq)
            mask[row, width - len(seq):] = 1
        else:
            ids[row, : len(seq)] = torch.as_tensor(seq)
            mask[row, : len(seq)] = 1
    return ids, mask


class PairCollator:
    """Dynamic padding to the longest text in the batch.

    With ``arms`` (one row per text, in token_ids order, with test_id, clicks, impressions) a batch also
    holds, per distinct text, ``text_group`` (its test as an integer), ``text_clicks`` and
    ``text_impressions``: what listwise and pointwise losses read.
    """

    def __init__(self, token_ids: list[list[int]], pad_id: int, padding_side: str = "right", arms=None):
        self.token_ids, self.pad_id, self.padding_side = token_ids, pad_id, padding_side
        self.arm_fields = None
        if arms is not None:
            import pandas as pd
            if len(arms) != len(token_ids):
                raise ValueError(f"arms has {len(arms)} rows but there are {len(token_ids)} texts; pass the pooled table")
            self.arm_fields = {"text_group": pd.factorize(arms["test_id"])[0].astype(np.int64),
                               "text_clicks": arms["clicks"].to_numpy(dtype=np.float64),
                               "text_impressions": arms["impressions"].to_numpy(dtype=np.float64)}

    def __call__(self, items: list[dict]) -> dict:
        chosen = np.array([it["chosen"] for it in items])
        rejected = np.array([it["rejected"] for it in items])
        unique, inverse = np.unique(np.concatenate([chosen, rejected]), return_inverse=True)
        ids, mask = pad_sequences([self.token_ids[u] for u in unique], self.pad_id, self.padding_side)
        n = len(items)
        batch = {"input_ids": ids, "attention_mask": mask,
                 "chosen_idx": torch.as_tensor(inverse[:n]), "rejected_idx": torch.as_tensor(inverse[n:]),
                 "index": torch.as_tensor([it["index"] for it in items])}
        for f in PAIR_FIELDS:
            batch[f] = torch.as_tensor(np.array([it[f] for it in items], dtype=np.float32))
        if self.arm_fields is not None:
            batch.update({f: torch.as_tensor(v[unique]) for f, v in self.arm_fields.items()})
        return batch


class TestGroupedBatchSampler(Sampler[list[int]]):
    __test__ = False  # "Test" here is an A/B test, not a pytest class
    """Batches made of whole tests in a seeded random order: texts of one test are shared by its
    pairs, so a batch encodes far fewer texts than 2 x pairs. Reshuffles at every pass.

    By default batches hold exactly ``batch_size`` pairs, so a test may straddle two batches. With
    ``whole_tests=True`` a test is never cut (what listwise losses need): tests are added while the
    batch stays within ``batch_size`` pairs; a test larger than that is a batch of its own.
    """

    def __init__(self, test_codes: np.ndarray, batch_size: int, seed: int, shuffle: bool = True,
                 whole_tests: bool = False):
        self.batch_size, self.seed, self.shuffle, self.whole_tests = batch_size, seed, shuffle, whole_tests
        order = np.argsort(test_codes, kind="stable")
        bounds = np.flatnonzero(np.diff(test_codes[order])) + 1
        self.groups = np.split(order, bounds)
        self.passes = 0

    def _ordered_groups(self, pass_no: int) -> list[np.ndarray]:
        if not self.shuffle:
            return self.groups
        rng = np.random.default_rng([self.seed, pass_no])
        return [self.groups[i] for i in rng.permutation(len(self.groups))]

    def __iter__(self):
        groups = self._ordered_groups(self.passes)
        self.passes += 1
        if self.whole_tests:
            yield from self._pack(groups)
            return
        flat = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        for start in range(0, len(flat), self.batch_size):
            yield flat[start: start + self.batch_size].tolist()

    def _pack(self, groups):
        batch: list[int] = []
        for g in groups:
            if batch and len(batch) + len(g) > self.batch_size:
                yield batch
                batch = []
            batch.extend(g.tolist())
        if batch:
            yield batch

    def __len__(self) -> int:
        if self.whole_tests:  # the packing depends on the order: count the coming pass's batches
            return sum(1 for _ in self._pack(self._ordered_groups(self.passes)))
        n = sum(len(g) for g in self.groups)
        return (n + self.batch_size - 1) // self.batch_size
