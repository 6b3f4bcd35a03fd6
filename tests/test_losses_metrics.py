"""Losses against hand-computed values and gradients; metrics against hand counts; the collator."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pushgen.data.collate import PairCollator, PairDataset, TestGroupedBatchSampler, pad_sequences
from pushgen.evaluation.baselines import longer_wins
from pushgen.evaluation.metrics import PairwiseMetrics, accuracy_by_bucket, pairwise_summary
from pushgen.losses import pairwise_loss


def test_bradley_terry_value_and_gradient():
    margin = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    loss = pairwise_loss("bradley_terry", margin, torch.full((3,), 0.9), None)
    hand = np.mean([math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0)), math.log(2)])
    assert math.isclose(loss.item(), hand, rel_tol=1e-12)
    loss.backward()
    # d/dm of mean softplus(-m) = -sigmoid(-m) / n
    assert torch.allclose(margin.grad, -torch.sigmoid(-margin.detach()) / 3)
    assert torch.autograd.gradcheck(lambda m: pairwise_loss("bradley_terry", m, None, None), (margin.detach().requires_grad_(),))


def test_weighted_loss_is_a_weighted_mean():
    margin = torch.tensor([1.0, -1.0], dtype=torch.float64)
    w = torch.tensor([3.0, 1.0], dtype=torch.float64)
    got = pairwise_loss("bradley_terry", margin, None, w).item()
    hand = (3 * math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 4
    assert math.isclose(got, hand, rel_tol=1e-12)


def test_soft_bce_matches_hand_value_and_is_minimised_at_the_label_logit():
    margin = torch.tensor([0.5], dtype=torch.float64)
    p = 0.8
    got = pairwise_loss("soft_bce", margin, torch.tensor([p], dtype=torch.float64), None).item()
    s = 1 / (1 + math.exp(-0.5))
    assert math.isclose(got, -(p * math.log(s) + (1 - p) * math.log(1 - s)), rel_tol=1e-12)
    m = torch.tensor([math.log(p / (1 - p))], dtype=torch.float64, requires_grad=True)
    pairwise_loss("soft_bce", m, torch.tensor([p], dtype=torch.float64), None).backward()
    assert abs(m.grad.item()) < 1e-12


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="loss.name must be one of"):
        pairwise_loss("hinge2", torch.zeros(1), torch.zeros(1), None)


def test_pairwise_summary_hand_counts():
    chosen = torch.tensor([1.0, 0.25, 0.5, 0.375])    # binary fractions: margins are exact
    rejected = torch.tensor([0.0, 0.5, 0.5, 0.125])
    out = pairwise_summary(chosen, rejected)
    assert out["acc"] == 0.5          # the tie (0.5 vs 0.5) counts as wrong
    assert math.isclose(out["margin"], (1.0 - 0.25 + 0.0 + 0.25) / 4, rel_tol=1e-6)
    # AUC over margins shown both ways: positives {1,-.25,0,.25}, negatives {-1,.25,0,-.25} -> 11.5/16
    pos, neg = [1, -0.25, 0, 0.25], [-1, 0.25, 0, -0.25]
    hand = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg])
    assert math.isclose(out["auc"], hand, rel_tol=1e-6) and hand == 11.5 / 16


def test_metric_splits_significant_pairs():
    m = PairwiseMetrics()
    m.update(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.01, 0.5]))
    m.update(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.04]))
    out = m.compute()
    assert math.isclose(out["acc"], 2 / 3, rel_tol=1e-6) and out["acc_sig"] == 1.0 and out["n_sig"] == 2


def test_bucket_accuracy_and_longer_wins():
    rows = accuracy_by_bucket(np.array([0.001, 0.001, 0.03]), np.array([1.0, -1.0, 1.0]), edges=(0, 0.01, np.inf))
    assert rows[0][1:] == (2, 0.5) and rows[1][1:] == (1, 1.0)
    pairs = pd.DataFrame({"chosen_text": ["aaaa", "b", "cc"], "rejected_text": ["a", "bbb", "dd"],
                          "p_value": [0.01, 0.01, 0.5]})
    out = longer_wins(pairs)
    assert math.isclose(out["pair_acc"], 1 / 3) and out["pair_acc_sig"] == 0.5 and out["n_pairs_sig"] == 2


def test_collator_encodes_each_text_once_and_indexes_back():
    token_ids = [[5, 6], [7], [8, 9, 10], [11]]
    pairs = pd.DataFrame({"chosen": [0, 2, 2], "rejected": [1, 1, 3], "soft_label": [0.6, 0.7, 0.8],
                          "weight": [1.0, 1.0, 2.0], "p_value": [0.1, 0.01, 0.5], "ctr_diff": [0.01, 0.02, 0.03], "z": [1.0, 2.0, 0.5],
                          "test_id": ["a", "a", "b"]})
    ds = PairDataset(pairs)
    batch = PairCollator(token_ids, pad_id=0)([ds[i] for i in range(3)])
    assert batch["input_ids"].shape == (4, 3)                       # 4 distinct texts, not 6
    for row, (c, r) in enumerate([(0, 1), (2, 1), (2, 3)]):
        ids = batch["input_ids"][batch["chosen_idx"][row]]
        assert ids[: len(token_ids[c])].tolist() == token_ids[c]
        ids = batch["input_ids"][batch["rejected_idx"][row]]
        assert ids[: len(token_ids[r])].tolist() == token_ids[r]
    ids, mask = pad_sequences([[1, 2], [3]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2], [0, 3]] and mask.tolist() == [[1, 1], [0, 1]]


def test_grouped_sampler_covers_every_pair_once_and_keeps_tests_whole():
    codes = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    sampler = TestGroupedBatchSampler(codes, batch_size=3, seed=0)
    first = list(sampler)
    flat = [i for b in first for i in b]
    assert sorted(flat) == list(range(8)) and len(first) == len(sampler)
    # whole tests are contiguous in the pass
    order = [codes[i] for i in flat]
    assert all(order.count(c) == len([x for x in codes if x == c]) for c in set(order))
    assert [order[i] for i in range(len(order))] == sorted(order, key=lambda c: order.index(c))
    assert list(TestGroupedBatchSampler(codes, 3, seed=0)) == first     # seeded
    assert list(sampler) != first or len(set(codes)) < 3                 # reshuffles per pass
