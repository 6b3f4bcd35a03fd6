"""The reward model's classification study (the paper's Fig. 4, and more), with uncertainty.

Input: the held-out pairs with their two scores (``test_pair_scores.csv`` of a run) and, optionally,
the pooled texts of the data (for the ``first_place`` flag). Every number comes with a 95% bootstrap
interval over *tests*: tests are resampled with replacement (seeded), since pairs of one test share
texts and are not independent.

What is measured:
- pairwise accuracy, overall, by CTR-difference bucket and by significance level of the A/B pair;
- ROC AUC of P(A beats B) = sigmoid(r_A - r_B) with every pair shown in both orders (ROC curve);
- calibration of that probability against the observed winner: reliability diagram and ECE;
- within each test: does the top-scored text have the highest CTR (top-1), against picking at
  random and against the data's ``first_place`` arm; the CTR lift of the pick over the test's mean;
  Kendall's tau between scores and CTRs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata
from sklearn.metrics import roc_curve

CTR_EDGES = (0.0, 0.0025, 0.005, 0.01, 0.02, np.inf)
P_EDGES = (0.0, 0.01, 0.05, 0.2, 1.0 + 1e-12)
N_CAL_BINS = 10


# --- bootstrap over tests ------------------------------------------------------------------------

def bootstrap_over_tests(test_id: np.ndarray, arrays: Mapping[str, np.ndarray],
                         stat: Callable[[Mapping[str, np.ndarray]], float], n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high): ``stat`` on all rows, and the percentile interval of ``stat`` over
    ``n_boot`` resamples of whole tests (rows of a drawn test come along together)."""
    value = float(stat(arrays))
    codes, _ = pd.factorize(pd.Series(test_id))
    order = np.argsort(codes, kind="stable")
    rows = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []
    if n_boot <= 0 or len(rows) < 2:
        return value, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        draws[b] = stat({k: v[idx] for k, v in arrays.items()})
    if np.isnan(draws).all():
        return value, float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return value, float(lo), float(hi)


# --- statistics on arrays (each takes the resampled dict) ----------------------------------------

def _acc(a) -> float:
    return float((a["margin"] > 0).mean()) if len(a["margin"]) else float("nan")


def _both_orders(margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(first beats second) and the label, every pair shown as (chosen, rejected) and reversed."""
    p = 1 / (1 + np.exp(-margin))
    return np.r_[p, 1 - p], np.r_[np.ones(len(p)), np.zeros(len(p))]


def auc_both_orders(a) -> float:
    """ROC AUC with both orders: positives are the margins, negatives their negatives (Mann-Whitney
    U from ranks, ties count one half; the same number as sklearn's roc_auc_score, faster)."""
    m = a["margin"]
    n = len(m)
    if n == 0:
        return float("nan")
    ranks = rankdata(np.r_[m, -m])
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * n))


def calibration_bins(margin: np.ndarray, n_bins: int = N_CAL_BINS) -> pd.DataFrame:
    """Reliability table: per bin of predicted P(A beats B), its count, mean prediction and hit rate."""
    prob, label = _both_orders(margin)
    bins = np.clip((prob * n_bins).astype(int), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = bins == b
        rows.append({"bin_lo": b / n_bins, "bin_hi": (b + 1) / n_bins, "n": int(m.sum()),
                     "confidence": float(prob[m].mean()) if m.any() else np.nan,
                     "observed": float(label[m].mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


def _ece(a, n_bins: int = N_CAL_BINS) -> float:
    """Expected calibration error: sum over bins of (share of predictions) x |hit rate - mean prediction|."""
    if len(a["margin"]) == 0:
        return float("nan")
    prob, label = _both_orders(a["margin"])
    bins = np.clip((prob * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, weights=label - prob, minlength=n_bins)   # sum of (hit - prediction) per bin
    return float(np.abs(gap).sum() / count.sum())


def _mean(key: str) -> Callable:
    return lambda a: float(np.nanmean(a[key])) if len(a[key]) and not np.isnan(a[key]).all() else float("nan")


def _masked(stat: Callable, key: str, lo: float, hi: float) -> Callable:
    def fn(a):
        m = (a[key] >= lo) & (a[key] < hi)
        return stat({k: v[m] for k, v in a.items()})
    return fn


# --- per-test quantities -------------------------------------------------------------------------

def arm_scores(pairs: pd.DataFrame, pooled: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per scored text: test_id, text (pooled row index), ctr, score, and ``first_place`` when
    the pooled table has it. Texts come from the pairs, each with the score the model gave it."""
    sides = []
    for side in ("chosen", "rejected"):
        sides.append(pd.DataFrame({"test_id": pairs["test_id"].to_numpy(), "text": pairs[side].to_numpy(),
                                   "ctr": pairs[f"{side}_ctr"].to_numpy(), "score": pairs[f"score_{side}"].to_numpy()}))
    arms = pd.concat(sides, ignore_index=True).drop_duplicates("text").reset_index(drop=True)
    if pooled is not None and "first_place" in pooled:
        arms["first_place"] = pooled["first_place"].to_numpy()[arms["text"].to_numpy()].astype(bool)
    return arms


def per_test(arms: pd.DataFrame) -> pd.DataFrame:
    """Per test with >= 2 scored texts: whether the top-scored text has the top CTR (top1), the chance
    of that for a random pick, the CTR lift of the pick over the test's mean CTR, Kendall's tau
    (nan when CTRs or scores are all equal), and the same for the ``first_place`` arm if known."""
    rows = []
    for test_id, g in arms.groupby("test_id", sort=False):
        if len(g) < 2:
            continue
        ctr, score = g["ctr"].to_numpy(), g["score"].to_numpy()
        best = ctr == ctr.max()
        pick = int(np.argmax(score))
        row = {"test_id": test_id, "n_arms": len(g), "top1": float(best[pick]), "random": float(best.mean()),
               "lift": float(ctr[pick] / ctr.mean() - 1) if ctr.mean() > 0 else np.nan,
               "tau": float(kendalltau(score, ctr).statistic) if len(set(ctr)) > 1 and len(set(score)) > 1 else np.nan}
        if "first_place" in g and g["first_place"].sum() == 1:
            fp = int(np.flatnonzero(g["first_place"].to_numpy())[0])
            row.update({"first_place_top1": float(best[fp]), "agree_first_place": float(pick == fp),
                        "first_place_lift": float(ctr[fp] / ctr.mean() - 1) if ctr.mean() > 0 else np.nan})
        rows.append(row)
    return pd.DataFrame(rows)


# --- the study -----------------------------------------------------------------------------------

def _bucket_label(lo: float, hi: float, fmt: str) -> str:
    return f"[{lo:{fmt}}, {hi:{fmt}})" if np.isfinite(hi) and hi <= 1 else f">= {lo:{fmt}}"


def classification_table(pairs: pd.DataFrame, pooled: pd.DataFrame | None = None, n_boot: int = 1000,
                         seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's numbers as (table, per_test): table rows are metric, subset, n, n_tests, value,
    ci_low, ci_high."""
    margin = (pairs["score_chosen"] - pairs["score_rejected"]).to_numpy(dtype=np.float64)
    a = {"margin": margin, "ctr_diff": pairs["ctr_diff"].to_numpy(dtype=np.float64),
         "p_value": pairs["p_value"].to_numpy(dtype=np.float64)}
    tid = pairs["test_id"].to_numpy()
    rows = []

    def add(metric, subset, stat, mask=None):
        sub = a if mask is None else {k: v[mask] for k, v in a.items()}
        t = tid if mask is None else tid[mask]
        v, lo, hi = bootstrap_over_tests(t, sub, stat, n_boot, seed)
        rows.append({"metric": metric, "subset": subset, "n": int(len(t)), "n_tests": int(pd.Series(t).nunique()),
                     "value": v, "ci_low": lo, "ci_high": hi})

    add("pair_acc", "all pairs", _acc)
    add("pair_acc", "p < 0.05", _acc, a["p_value"] < 0.05)
    add("auc", "all pairs", auc_both_orders)
    add("auc", "p < 0.05", auc_both_orders, a["p_value"] < 0.05)
    add("ece", "all pairs", _ece)
    for lo, hi in zip(CTR_EDGES[:-1], CTR_EDGES[1:]):
        add("pair_acc_by_ctr_diff", _bucket_label(lo, hi, ".4f"), _acc, (a["ctr_diff"] >= lo) & (a["ctr_diff"] < hi))
    for lo, hi in zip(P_EDGES[:-1], P_EDGES[1:]):
        add("pair_acc_by_p_value", _bucket_label(lo, min(hi, 1.0), ".2f"), _acc, (a["p_value"] >= lo) & (a["p_value"] < hi))

    tests = per_test(arm_scores(pairs, pooled))
    if len(tests):
        ta = {c: tests[c].to_numpy(dtype=np.float64) for c in tests.columns if c not in ("test_id",)}
        for metric, key in (("top1_model", "top1"), ("top1_random", "random"), ("ctr_lift_model", "lift"),
                            ("kendall_tau", "tau"), ("top1_first_place", "first_place_top1"),
                            ("agree_model_first_place", "agree_first_place"), ("ctr_lift_first_place", "first_place_lift")):
            if key not in ta:
                continue
            keep = ~np.isnan(ta[key])
            v, lo, hi = bootstrap_over_tests(tests["test_id"].to_numpy()[keep], {key: ta[key][keep]}, _mean(key), n_boot, seed)
            rows.append({"metric": metric, "subset": "tests with >= 2 scored texts", "n": int(keep.sum()),
                         "n_tests": int(keep.sum()), "value": v, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows), tests


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A markdown table: value [low, high] per row."""
    lines = ["| metric | subset | n | tests | value [95% CI over tests] |", "| --- | --- | --- | --- | --- |"]
    for r in table.itertuples():
        ci = f" [{r.ci_low:.{digits}f}, {r.ci_high:.{digits}f}]" if np.isfinite(r.ci_low) else ""
        lines.append(f"| {r.metric} | {r.subset} | {r.n} | {r.n_tests} | {r.value:.{digits}f}{ci} |")
    return "\n".join(lines) + "\n"


def write_study(pairs: pd.DataFrame, out_dir: str | Path, pooled: pd.DataFrame | None = None,
                n_boot: int = 1000, seed: int = 0, prefix: str = "", score_hist: bool = True) -> dict[str, Path]:
    """Compute the study and write its table (CSV, markdown) and figures (PNG) into ``out_dir``;
    returns the written paths by name."""
    from pushgen.evaluation import plots
    from pushgen.utils.run import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, tests = classification_table(pairs, pooled, n_boot, seed)
    margin = (pairs["score_chosen"] - pairs["score_rejected"]).to_numpy(dtype=np.float64)
    paths = {"table_csv": write_atomic(out / f"{prefix}classification.csv", table.to_csv(index=False)),
             "table_md": write_atomic(out / f"{prefix}classification.md", to_markdown(table)),
             "per_test_csv": write_atomic(out / f"{prefix}per_test.csv", tests.to_csv(index=False))}
    prob, label = _both_orders(margin)
    fpr, tpr, _ = roc_curve(label, prob)
    auc = table.query("metric == 'auc' and subset == 'all pairs'").iloc[0]
    paths["roc"] = plots.roc(fpr, tpr, auc["value"], (auc["ci_low"], auc["ci_high"]), out / f"{prefix}roc.png")
    ece = table.query("metric == 'ece'").iloc[0]
    paths["reliability"] = plots.reliability(calibration_bins(margin), ece["value"], (ece["ci_low"], ece["ci_high"]),
                                             out / f"{prefix}reliability.png")
    paths["acc_by_ctr_diff_ci"] = plots.metric_bars(table[table["metric"] == "pair_acc_by_ctr_diff"],
                                                    "CTR difference (chosen - rejected)", "pairwise accuracy",
                                                    out / f"{prefix}acc_by_ctr_diff_ci.png", chance=0.5)
    paths["acc_by_p_value"] = plots.metric_bars(table[table["metric"] == "pair_acc_by_p_value"],
                                                "p-value of the A/B pair", "pairwise accuracy",
                                                out / f"{prefix}acc_by_p_value.png", chance=0.5)
    if score_hist:  # a training run draws its own
        paths["score_hist"] = plots.score_histogram(pairs["score_chosen"].to_numpy(), pairs["score_rejected"].to_numpy(),
                                                    out / f"{prefix}score_hist.png")
    top = table[table["metric"].isin(["top1_model", "top1_random", "top1_first_place"])]
    if len(top):
        who = top["metric"].map({"top1_model": "model", "top1_random": "random pick",
                                 "top1_first_place": "first_place arm\n(an outcome flag)"})
        paths["top1"] = plots.metric_bars(top.assign(subset=who), "who picks", "share of tests whose pick has the top CTR",
                                          out / f"{prefix}top1.png")
    return paths
