"""Batches of preference pairs. Each distinct text in a batch is encoded once: the collator pads the
unique texts and gives index vectors that pick the chosen and rejected scores out of one forward."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

PAIR_FIELDS = ("soft_label", "weight", "p_value", "ctr_diff")


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
    """Dynamic padding to the longest text in the batch."""

    def __init__(self, token_ids: list[list[int]], pad_id: int, padding_side: str = "right"):
        self.token_ids, self.pad_id, self.padding_side = token_ids, pad_id, padding_side

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
        return batch


class TestGroupedBatchSampler(Sampler[list[int]]):
    """Batches made of whole tests in a seeded random order: texts of one test are shared by its
    pairs, so a batch encodes far fewer texts than 2 x pairs. Reshuffles at every pass.

    With ``num_replicas`` > 1 (data-parallel training) every rank builds the same global batches of
    ``batch_size * num_replicas`` pairs and keeps its own slice, so N ranks at batch b see exactly
    the pairs one process sees at batch N x b (the loss is normalised over the global batch, see
    RewardModule). Every rank yields the same number of batches, as DDP needs: when the last global
    batch has fewer pairs than ranks, training tops it up from the start of the pass, and evaluation
    leaves the short ranks out of that batch (nothing is scored twice).
    """

    __test__ = False  # "Test" here is an A/B test, not a pytest class

    def __init__(self, test_codes: np.ndarray, batch_size: int, seed: int, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        order = np.argsort(test_codes, kind="stable")
        bounds = np.flatnonzero(np.diff(test_codes[order])) + 1
        self.groups = np.split(order, bounds) if len(order) else []
        self.passes = 0

    def _global_order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.passes])
        self.passes += 1
        groups = [self.groups[i] for i in rng.permutation(len(self.groups))] if self.shuffle else self.groups
        return np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)

    def __iter__(self):
        flat = self._global_order()
        world = self.num_replicas
        step = self.batch_size * world
        for start in range(0, len(flat), step):
            chunk = flat[start: start + step]
            if world > 1:
                if len(chunk) < world and self.shuffle:
                    chunk = np.concatenate([chunk, flat[: world - len(chunk)]])
                # Equal slices when the global batch is full; near-equal ones for the last batch.
                chunk = np.array_split(chunk, world)[self.rank]
            if len(chunk):
                yield chunk.tolist()

    def __len__(self) -> int:
        n = sum(len(g) for g in self.groups)
        full = (n + self.batch_size * self.num_replicas - 1) // (self.batch_size * self.num_replicas)
        if self.num_replicas > 1 and not self.shuffle and n % (self.batch_size * self.num_replicas):
            # The last evaluation batch may leave this rank out.
            last = n % (self.batch_size * self.num_replicas)
            full -= int(self.rank >= last)
        return full
