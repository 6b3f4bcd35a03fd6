"""Leakage-safe splits: tests that share a normalised text or an evidence text are connected, and a
whole connected group lands on one side. Groups are shuffled with the seed and fill test, val, train."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pushgen.data.text import normalise_key

SPLITS = ("train", "val", "test")


def leakage_groups(pooled: pd.DataFrame) -> pd.Series:
    """Group id per test: connected components of the graph linking tests through shared keys."""
    tests = pd.Index(pooled["test_id"].unique())
    ev_keys = np.array([normalise_key(e) for e in pooled["evidence"]], dtype=object)
    text_codes, _ = pd.factorize(pooled["key"])
    ev_codes, _ = pd.factorize(pd.Series(ev_keys).where(ev_keys != "", None))
    return components(tests, tests.get_indexer(pooled["test_id"]), text_codes, ev_codes)


def components(tests: pd.Index, test_pos: np.ndarray, text_codes: np.ndarray, ev_codes: np.ndarray) -> pd.Series:
    """Connected components of tests linked through text codes and evidence codes (-1: no evidence),
    one entry per text. Nodes are the tests first, so a group's id is fixed by the order of its
    first test alone, whatever order the keys were coded in (the out-of-core path relies on it)."""
    n_t, n_k = len(tests), int(text_codes.max()) + 1 if len(text_codes) else 0
    has_ev = ev_codes >= 0
    r = np.concatenate([test_pos, test_pos[has_ev]])
    c = np.concatenate([n_t + text_codes, n_t + n_k + ev_codes[has_ev]])
    n = n_t + n_k + max(int(ev_codes.max()) + 1 if len(ev_codes) else 0, 0)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return pd.Series(labels[:n_t], index=tests, name="group")


def assign_splits(pooled: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    """Split name per test id, with fractions measured in tests. seed=0 is a seed like any other."""
    check_fractions(val, test)
    return sides_of_groups(leakage_groups(pooled), val, test, seed)


def check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"data.split fractions must satisfy 0 <= val, test and val + test < 1; got val={val}, test={test}")


def sides_of_groups(groups: pd.Series, val: float, test: float, seed: int) -> pd.Series:
    """Split name per test from its leakage group: groups shuffled with the seed fill test, val, train."""
    codes = side_codes(groups.to_numpy(), val, test, seed)
    return pd.Series(np.asarray(SPLITS, dtype=object)[codes[groups.to_numpy()]], index=groups.index, name="split")


def side_codes(labels: np.ndarray, val: float, test: float, seed: int) -> np.ndarray:
    """Side per group (an index into SPLITS) from one group label per test, labels 0..G-1 as
    :func:`components` gives them. Integers only, so the out-of-core path can afford it for any log."""
    # value_counts' order (not only its counts) is what the seeded permutation shuffles: kept, so a
    # seed gives the splits it always gave; the counts are looked up in an array.
    sizes = pd.Series(labels).value_counts()
    order = np.random.default_rng(seed).permutation(sizes.index.to_numpy())
    count = np.bincount(labels)
    total = len(labels)
    targets = {2: test * total, 1: val * total}
    filled = {2: 0, 1: 0}
    codes = np.zeros(len(count), dtype=np.uint8)
    for g in order:
        # A group that would overshoot a side's target goes on to the next side, so one giant
        # component can never become the whole test set.
        side = next((s for s in (2, 1) if filled[s] + count[g] <= targets[s]), 0)
        codes[g] = side
        if side:
            filled[side] += count[g]
    return codes


def train_shards(pooled: pd.DataFrame, count: int, seed: int) -> pd.Series:
    """Shard index (0..count-1) per training test, whole leakage groups at a time, so that models
    trained on different shards never share a text or an evidence text (e.g. a proxy and a gold
    reward model trained on disjoint halves)."""
    if count < 2:
        raise ValueError(f"data.split.train_shard.count must be >= 2, got {count}")
    return shards_of_groups(leakage_groups(pooled[pooled["split"] == "train"]), count, seed)


def shards_of_groups(groups: pd.Series, count: int, seed: int) -> pd.Series:
    return pd.Series(shard_codes(groups.to_numpy(), count, seed)[groups.to_numpy()], index=groups.index, name="shard")


def shard_codes(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Shard per group, labels 0..G-1 in order of first appearance (as :func:`components` gives them)."""
    order = np.random.default_rng(seed).permutation(pd.unique(labels))
    # Deal groups round-robin in a shuffled order: shards of about equal size, none of them favoured.
    shard = np.zeros(len(order), dtype=np.int64)
    shard[order] = np.arange(len(order)) % count
    return shard
