"""Batches of preference pairs. Each distinct text in a batch is encoded once: the collator pads the
unique texts and gives index vectors that pick the chosen and rejected scores out of one forward."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

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


class GroupShuffleSampler(Sampler[int]):
    """Pair indices in a seeded order of whole groups (A/B tests; or single pairs when ``codes`` is
    None). The order of a pass depends only on (seed, epoch), never on how many passes came before,
    so a resumed run sees exactly the order an uninterrupted one would. Lightning calls
    ``set_epoch`` before every training epoch (it looks for ``batch_sampler.sampler.set_epoch``);
    without it, each pass advances the epoch by one."""

    def __init__(self, codes: np.ndarray | None, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = int(n), int(seed), shuffle
        self.groups = None
        if codes is not None:
            order = np.argsort(codes, kind="stable")
            self.groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None   # (epoch, indices to skip) for one pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, skip: int) -> None:
        """Skip the first ``skip`` indices of the pass of ``epoch`` (those were trained on already)."""
        self._resume = (int(epoch), int(skip))

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.concatenate(self.groups) if self.groups else np.arange(self.n)
        rng = np.random.default_rng([self.seed, epoch])
        if self.groups is None:
            return rng.permutation(self.n)
        groups = [self.groups[i] for i in rng.permutation(len(self.groups))]
        return np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        flat = self.order(epoch)
        if self._resume is not None:
            resume_epoch, skip = self._resume
            self._resume = None
            if resume_epoch == epoch:
                flat = flat[skip:]
        return iter(flat.tolist())

    def __len__(self) -> int:
        return self.n


class TestGroupedBatchSampler(BatchSampler):
    __test__ = False  # "Test" here is an A/B test, not a pytest class
    """Batches made of whole tests in a seeded random order: texts of one test are shared by its
    pairs, so a batch encodes far fewer texts than 2 x pairs. Reshuffles at every pass (epoch).

    By default batches hold exactly ``batch_size`` pairs, so a test may straddle two batches. With
    ``whole_tests=True`` a test is never cut (what listwise and pointwise losses need): tests are
    added while the batch stays within ``batch_size`` pairs; a larger test is a batch of its own.

    With ``num_replicas`` > 1 (data-parallel training) every rank builds the same global batches of
    ``batch_size * num_replicas`` pairs and keeps its own slice, so N ranks at batch b see exactly
    the pairs one process sees at batch N x b (the loss is normalised over the global batch, see
    RewardModule). Every rank yields the same number of training batches, as DDP needs: when a
    global batch has fewer pairs than ranks, training tops it up by repeating its pairs, and
    evaluation leaves the short ranks out of that batch (nothing is scored twice).
    """

    def __init__(self, test_codes: np.ndarray | None, batch_size: int, seed: int, shuffle: bool = True,
                 n: int | None = None, whole_tests: bool = False, num_replicas: int = 1, rank: int = 0):
        n = len(test_codes) if test_codes is not None else int(n)
        if whole_tests and test_codes is None:
            raise ValueError("whole_tests=True needs the pairs' test codes")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        # The parent batches the global order; each rank then keeps its slice of every batch.
        super().__init__(GroupShuffleSampler(test_codes, n, seed, shuffle), batch_size * num_replicas,
                         drop_last=False)
        self.num_replicas, self.rank, self.shuffle = num_replicas, rank, shuffle
        self.whole_tests = whole_tests
        self.codes = None if test_codes is None else np.asarray(test_codes)

    def _pack(self, flat) -> list[list[int]]:
        """Cut an index order (tests contiguous) into batches that never split a test."""
        flat = np.asarray(list(flat), dtype=np.int64)
        if len(flat) == 0:
            return []
        starts = np.r_[0, np.flatnonzero(np.diff(self.codes[flat])) + 1]
        batches, batch = [], []
        for group in np.split(flat, starts[1:]):
            if batch and len(batch) + len(group) > self.batch_size:
                batches.append(batch)
                batch = []
            batch.extend(group.tolist())
        return batches + ([batch] if batch else [])

    def _global_batches(self):
        if not self.whole_tests:
            yield from super().__iter__()
            return
        yield from self._pack(self.sampler)

    def _slice(self, batch: list[int]) -> list[int]:
        world = self.num_replicas
        if world == 1:
            return batch
        if len(batch) < world and self.shuffle:
            batch = (batch * world)[:world]          # top up so every rank steps
        # Equal slices of a full global batch; near-equal ones for a short one.
        return np.array_split(np.asarray(batch, dtype=np.int64), world)[self.rank].tolist()

    def __iter__(self):
        for batch in self._global_batches():
            part = self._slice(batch)
            if part:
                yield part

    def __len__(self) -> int:
        if not self.whole_tests:
            full = super().__len__()
            last = self.sampler.n % self.batch_size
        else:
            # The packing depends on the order: count the batches of the coming pass.
            packed = self._pack(self.sampler.order(self.sampler.epoch))
            full, last = len(packed), (len(packed[-1]) if packed else 0)
        if self.num_replicas > 1 and not self.shuffle and 0 < last < self.num_replicas:
            full -= int(self.rank >= last)           # the short last evaluation batch leaves this rank out
        return full

    def indices_before(self, epoch: int, batches: int) -> int:
        """How many pair indices the first ``batches`` batches of ``epoch``'s pass hold (for resuming)."""
        if not self.whole_tests:
            return batches * self.batch_size
        return sum(len(b) for b in self._pack(self.sampler.order(epoch))[:batches])


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`TestGroupedBatchSampler` that Lightning can resume mid-epoch.

    Lightning saves ``state_dict()`` in every checkpoint and calls ``load_state_dict`` before a
    mid-epoch restart; the state is the epoch and the number of batches already handed out, so the
    restarted pass skips exactly those and neither repeats nor drops a batch. Counting happens where
    batches leave the loader, so worker prefetching does not skew it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, TestGroupedBatchSampler):
            raise TypeError("ResumableDataLoader needs batch_sampler=TestGroupedBatchSampler(...)")
        self._epoch, self._served, self._resumed_batches = 0, 0, 0

    def __iter__(self):
        sampler = self.batch_sampler.sampler
        self._epoch = sampler.epoch
        resume = sampler._resume
        self._served = self._resumed_batches if resume and resume[0] == self._epoch else 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict) -> None:
        self._resumed_batches = int(state["batches"])
        self.batch_sampler.sampler.resume(state["epoch"], self.batch_sampler.indices_before(state["epoch"], state["batches"]))
