"""Every reward loss against a hand-computed value and a float64 gradient check; the registry's
checks; the per-test collator and whole-test batches; each loss trains a tiny model end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.autograd import gradcheck

from pushgen.data.collate import PairCollator, PairDataset, TestGroupedBatchSampler
from pushgen.losses import LOSSES, get_loss, pairwise_loss, reward_loss
from pushgen.losses.listwise import plackett_luce
from pushgen.losses.pointwise import binomial

D = torch.float64


def _sp(x):  # softplus
    return math.log1p(math.exp(x))


def test_bt_margin_hand_value_and_gradcheck():
    m = torch.tensor([1.0, -0.5], dtype=D)
    z = torch.tensor([2.0, 8.0], dtype=D)
    got = pairwise_loss("bt_margin", m, None, None, z=z, margin_scale=0.5, margin_cap=3.0).item()
    # delta = min(0.5*|z|, 3) = [1.0, 3.0]; loss = mean softplus(delta - m)
    assert math.isclose(got, (_sp(1.0 - 1.0) + _sp(3.0 + 0.5)) / 2, rel_tol=1e-12)
    ctr = torch.tensor([0.01, 0.002], dtype=D)
    got = pairwise_loss("bt_margin", m, None, None, ctr_diff=ctr, margin_from="ctr_diff", margin_scale=100.0).item()
    assert math.isclose(got, (_sp(1.0 - 1.0) + _sp(0.2 + 0.5)) / 2, rel_tol=1e-12)
    assert gradcheck(lambda x: pairwise_loss("bt_margin", x, None, None, z=z, margin_scale=0.5),
                     (m.clone().requires_grad_(),))


def test_hinge_hand_value_and_gradcheck():
    m = torch.tensor([2.0, 0.25, -1.0], dtype=D)
    got = pairwise_loss("hinge", m, None, None, hinge_margin=1.0).item()
    assert math.isclose(got, (0 + 0.75 + 2.0) / 3, rel_tol=1e-12)
    w = torch.tensor([1.0, 1.0, 2.0], dtype=D)
    assert math.isclose(pairwise_loss("hinge", m, None, w).item(), (0.75 + 4.0) / 4, rel_tol=1e-12)
    # away from the kink the hinge is smooth, so the numeric gradient is defined
    assert gradcheck(lambda x: pairwise_loss("hinge", x, None, None), (m.clone().requires_grad_(),))


def test_soft_bce_and_bt_gradcheck():
    m = torch.tensor([0.3, -1.2, 2.0], dtype=D, requires_grad=True)
    p = torch.tensor([0.9, 0.6, 0.55], dtype=D)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    assert gradcheck(lambda x: pairwise_loss("soft_bce", x, p, w), (m,))
    assert gradcheck(lambda x: pairwise_loss("bradley_terry", x, None, w), (m,))


def test_plackett_luce_hand_value_and_gradcheck():
    # test A: arms with CTR 0.03 > 0.02 > 0.01 and scores 1, 0, 2 (given in scrambled order);
    # test B: two arms, CTR 0.5 > 0.1, scores 0, 1; test C has one arm (no order: skipped).
    scores = torch.tensor([0.0, 2.0, 1.0, 1.0, 0.0, 5.0], dtype=D)
    group = torch.tensor([0, 0, 0, 1, 1, 2])
    ctr = torch.tensor([0.02, 0.01, 0.03, 0.1, 0.5, 0.2], dtype=D)
    e = math.exp
    nll_a = -(math.log(e(1) / (e(1) + e(0) + e(2))) + math.log(e(0) / (e(0) + e(2))))
    nll_b = -math.log(e(0) / (e(0) + e(1)))
    got = plackett_luce(scores, group, ctr).item()
    assert math.isclose(got, (nll_a / 2 + nll_b / 1) / 2, rel_tol=1e-12)
    assert gradcheck(lambda s: plackett_luce(s, group, ctr), (scores.clone().requires_grad_(),))
    # the loss falls when scores follow the CTR order
    assert plackett_luce(ctr * 100, group, ctr) < plackett_luce(-ctr * 100, group, ctr)


def test_binomial_hand_value_gradcheck_and_shift_invariance():
    scores = torch.tensor([0.4, -0.2, 1.0, 3.0], dtype=D)
    group = torch.tensor([7, 7, 9, 9])
    clicks = torch.tensor([30.0, 10.0, 5.0, 20.0], dtype=D)
    imps = torch.tensor([1000.0, 1000.0, 500.0, 500.0], dtype=D)
    got = binomial(scores, group, clicks, imps).item()
    hand = 0.0
    for s, mean_s, c, n, tc, tn in [(0.4, 0.1, 30, 1000, 20, 1000), (-0.2, 0.1, 10, 1000, 20, 1000),
                                    (1.0, 2.0, 5, 500, 12.5, 500), (3.0, 2.0, 20, 500, 12.5, 500)]:
        offset = math.log((tc + 0.5) / (tn - tc + 0.5))   # tc, tn: the test's mean clicks/impressions
        p = 1 / (1 + math.exp(-(offset + s - mean_s)))
        hand += -(c / n * math.log(p) + (1 - c / n) * math.log(1 - p))
    assert math.isclose(got, hand / 4, rel_tol=1e-12)
    assert gradcheck(lambda s: binomial(s, group, clicks, imps), (scores.clone().requires_grad_(),))
    shifted = scores + torch.tensor([5.0, 5.0, -3.0, -3.0], dtype=D)   # a constant per test
    assert math.isclose(binomial(shifted, group, clicks, imps).item(), got, rel_tol=1e-12)


def test_centering_term_and_registry_checks():
    batch = {"chosen_idx": torch.tensor([0]), "rejected_idx": torch.tensor([1]), "weight": None}
    scores = torch.tensor([3.0, 1.0], dtype=D)
    plain = reward_loss({"name": "bradley_terry"}, scores, batch).item()
    centred = reward_loss({"name": "bradley_terry", "center_weight": 0.1}, scores, batch).item()
    assert math.isclose(plain, _sp(-2.0), rel_tol=1e-12)
    assert math.isclose(centred - plain, 0.1 * (9 + 1) / 2, rel_tol=1e-12)
    with pytest.raises(ValueError, match="loss.name must be one of"):
        get_loss({"name": "listnet2"})
    with pytest.raises(ValueError, match="use_weights=false"):
        get_loss({"name": "plackett_luce", "use_weights": True})
    with pytest.raises(ValueError, match="margin_from"):
        get_loss({"name": "bt_margin", "margin_from": "p"})
    assert {s.needs for s in LOSSES.values()} == {"pairs", "arms"}


def _pairs_and_arms():
    arms = pd.DataFrame({"test_id": ["a", "a", "a", "b", "b", "c", "c"],
                         "clicks": [10, 20, 30, 5, 6, 1, 2], "impressions": [1000] * 7})
    pairs = pd.DataFrame({"test_id": ["a", "a", "a", "b", "c"], "chosen": [1, 2, 2, 4, 6], "rejected": [0, 0, 1, 3, 5]})
    for f in ("soft_label", "weight", "p_value", "ctr_diff", "z"):
        pairs[f] = 0.5
    return pairs, arms


def test_whole_test_batches_never_cut_a_test_and_carry_arm_counts():
    pairs, arms = _pairs_and_arms()
    codes = pd.factorize(pairs["test_id"])[0]
    sampler = TestGroupedBatchSampler(codes, batch_size=2, seed=0, whole_tests=True)
    for _ in range(3):
        expected = len(sampler)   # the coming pass's count (packing depends on the shuffled order)
        batches = list(sampler)
        assert len(batches) == expected
        assert sorted(i for b in batches for i in b) == list(range(5))
        for b in batches:   # every test of a batch has all its pairs in it
            for t in set(codes[b]):
                assert set(np.flatnonzero(codes == t)) <= set(b)
        assert len(batches) in (2, 3)   # a (3 pairs) alone; b, c (1 each) together unless a comes between
    collate = PairCollator([[i + 1] for i in range(7)], pad_id=0, arms=arms)
    ds = PairDataset(pairs)
    batch = collate([ds[i] for i in range(3)])  # test a
    assert batch["text_clicks"].tolist() == [10, 20, 30] and batch["text_group"].tolist() == [0, 0, 0]
    loss = reward_loss({"name": "plackett_luce"}, torch.tensor([0.0, 1.0, 2.0]), batch)
    hand = -(math.log(math.exp(2) / (1 + math.e + math.exp(2))) + math.log(math.e / (1 + math.e))) / 2
    assert math.isclose(loss.item(), hand, rel_tol=1e-6)


def test_every_loss_has_a_config_that_composes_and_validates():
    from conftest import REPO
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    names = sorted(p.stem for p in (REPO / "conf" / "loss").glob("*.yaml"))
    assert names == sorted(LOSSES)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for name in names:
            cfg = OmegaConf.to_container(compose(config_name="train", overrides=[f"loss={name}"]).loss)
            assert get_loss(cfg) is LOSSES[name] and cfg["name"] == name
