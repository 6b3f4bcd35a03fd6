"""The classification study against hand counts; the bootstrap resamples tests, not pairs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau
from sklearn.metrics import roc_auc_score

from pushgen.evaluation.classification import (arm_scores, bootstrap_over_tests, calibration_bins,
                                               classification_table, per_test, write_study)


def _pairs():
    # test a: texts 0,1,2 with CTR .03 > .02 > .01, scores 2 > 0 > 1 ; test b: texts 3,4, CTR .05 > .04,
    # scores 0 < 1 (the model prefers the worse one).
    rows = [("a", 0, 1, 0.03, 0.02, 2.0, 0.0, 0.001), ("a", 0, 2, 0.03, 0.01, 2.0, 1.0, 0.03),
            ("a", 1, 2, 0.02, 0.01, 0.0, 1.0, 0.2), ("b", 3, 4, 0.05, 0.04, 0.0, 1.0, 0.5)]
    df = pd.DataFrame(rows, columns=["test_id", "chosen", "rejected", "chosen_ctr", "rejected_ctr",
                                     "score_chosen", "score_rejected", "p_value"])
    df["ctr_diff"] = df["chosen_ctr"] - df["rejected_ctr"]
    return df


def test_bootstrap_resamples_whole_tests():
    # 10 right answers in test x, 10 wrong in test y: resampling tests gives 0, 0.5 or 1, so the
    # interval spans [0, 1]; resampling pairs would give a narrow interval around 0.5.
    tid = np.array(["x"] * 10 + ["y"] * 10)
    a = {"margin": np.r_[np.ones(10), -np.ones(10)]}
    stat = lambda d: float((d["margin"] > 0).mean())  # noqa: E731
    value, lo, hi = bootstrap_over_tests(tid, a, stat, n_boot=400, seed=1)
    assert value == 0.5 and lo == 0.0 and hi == 1.0
    assert bootstrap_over_tests(tid, a, stat, n_boot=400, seed=1) == (value, lo, hi)   # seeded


def test_table_matches_hand_counts():
    pairs = _pairs()
    table, tests = classification_table(pairs, n_boot=50)
    get = lambda m, s="all pairs": table.query("metric == @m and subset == @s")["value"].iloc[0]  # noqa: E731
    assert get("pair_acc") == 0.5                     # pairs 1 and 2 right, 3 and 4 wrong
    assert get("pair_acc", "p < 0.05") == 1.0         # the first two pairs
    margin = np.array([2.0, 1.0, -1.0, -1.0])
    prob = 1 / (1 + np.exp(-margin))
    assert math.isclose(get("auc"), roc_auc_score(np.r_[np.ones(4), np.zeros(4)], np.r_[prob, 1 - prob]))
    # ECE by hand: bins of width 0.1 over the 8 predictions (pairs in both orders)
    p8, y8 = np.r_[prob, 1 - prob], np.r_[np.ones(4), np.zeros(4)]
    b = np.minimum((p8 * 10).astype(int), 9)
    ece = sum(abs(y8[b == k].sum() - p8[b == k].sum()) for k in set(b)) / 8
    assert math.isclose(get("ece"), ece, rel_tol=1e-12)
    cal = calibration_bins(margin)
    assert cal["n"].sum() == 8
    # top-1: test a's top score (text 0) has the top CTR; test b's (text 4) does not
    assert get("top1_model", "tests with >= 2 scored texts") == 0.5
    assert math.isclose(get("top1_random", "tests with >= 2 scored texts"), (1 / 3 + 1 / 2) / 2)
    tau_a = kendalltau([2.0, 0.0, 1.0], [0.03, 0.02, 0.01]).statistic
    assert math.isclose(get("kendall_tau", "tests with >= 2 scored texts"), (tau_a - 1.0) / 2)
    lift_a = 0.03 / 0.02 - 1
    lift_b = 0.04 / 0.045 - 1
    assert math.isclose(tests["lift"].mean(), (lift_a + lift_b) / 2)


def test_first_place_comparison_and_files(tmp_path):
    pairs = _pairs()
    pooled = pd.DataFrame({"first_place": [False, True, False, True, False]})
    arms = arm_scores(pairs, pooled)
    assert sorted(arms["text"]) == [0, 1, 2, 3, 4] and arms.set_index("text").loc[2, "score"] == 1.0
    tests = per_test(arms).set_index("test_id")
    assert tests.loc["a", "first_place_top1"] == 0.0 and tests.loc["b", "first_place_top1"] == 1.0
    assert tests.loc["a", "agree_first_place"] == 0.0 and tests.loc["b", "agree_first_place"] == 0.0
    paths = write_study(pairs, tmp_path, pooled=pooled, n_boot=20)
    for name in ("roc", "reliability", "acc_by_ctr_diff_ci", "acc_by_p_value", "score_hist", "top1"):
        assert paths[name].stat().st_size > 5000
    md = (tmp_path / "classification.md").read_text()
    assert "| pair_acc | all pairs | 4 | 2 | 0.500" in md and "top1_first_place" in md
