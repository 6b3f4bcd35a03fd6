"""Preference pairs from pooled arms: within each test, every two different texts; the chosen one has
the higher pooled CTR. Each pair carries the statistics that label-aware losses need."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pushgen.data.loading import DropLog

WEIGHTINGS = ("uniform", "inverse_variance", "confidence")


def two_proportion_z(c1, n1, c2, n2):
    """Pooled two-proportion z statistic and two-sided p-value for CTR1 - CTR2 (vectorised).
    A pooled rate of 0 or 1 has no variance: z = 0, p = 1."""
    c1, n1, c2, n2 = (np.asarray(x, dtype=float) for x in (c1, n1, c2, n2))
    p = (c1 + c2) / (n1 + n2)
    se = np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (c1 / n1 - c2 / n2) / se, 0.0)
    return z, 2 * stats.norm.sf(np.abs(z))


def soft_label(c1, n1, c2, n2):
    """P(true CTR1 > true CTR2) under a normal approximation with unpooled variances (0.5 when unknown)."""
    c1, n1, c2, n2 = (np.asarray(x, dtype=float) for x in (c1, n1, c2, n2))
    p1, p2 = c1 / n1, c2 / n2
    # Half a click of prior mass keeps the variance positive when a rate is 0 or 1.
    q1, q2 = (c1 + 0.5) / (n1 + 1), (c2 + 0.5) / (n2 + 1)
    se = np.sqrt(q1 * (1 - q1) / n1 + q2 * (1 - q2) / n2)
    return stats.norm.cdf((p1 - p2) / se)


def benjamini_hochberg(pvalues, q: float) -> np.ndarray:
    """Boolean mask of discoveries at false-discovery rate q."""
    p = np.asarray(pvalues, dtype=float)
    return p <= benjamini_hochberg_cutoff(p, q)


def benjamini_hochberg_cutoff(pvalues, q: float) -> float:
    """The largest p-value that is a discovery at rate q (-inf: none). Every p-value at or below it is
    one, ties included, so the cut-off alone applies the procedure to pairs read in parts."""
    p = np.sort(np.asarray(pvalues, dtype=float))
    m = len(p)
    passed = np.flatnonzero(p <= q * np.arange(1, m + 1) / m) if m else np.zeros(0, dtype=int)
    return float(p[passed.max()]) if len(passed) else float("-inf")


def build_pairs(pooled: pd.DataFrame, *, weighting: str = "uniform", drops: DropLog | None = None,
                normalise: bool = True) -> pd.DataFrame:
    """Every within-test pair of pooled texts. Columns: test_id, chosen, rejected (row positions in
    ``pooled``), their texts, CTRs and counts, ctr_diff >= 0, z, p_value, soft_label, weight.
    Pairs whose CTRs are exactly equal have no preference and are dropped (counted). Weights are
    divided by their mean over these pairs (``normalise=False``: raw, for a caller that sees the
    pairs in parts and divides by the mean of all of them)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"data.pairs.weighting must be one of {WEIGHTINGS}, got '{weighting}'")
    drops = drops if drops is not None else DropLog()
    pooled = pooled.reset_index(drop=True)
    left, right = [], []
    for idx in pooled.groupby("test_id", sort=False).indices.values():
        if len(idx) < 2:
            continue
        i, j = np.triu_indices(len(idx), k=1)
        left.append(idx[i])
        right.append(idx[j])
    if not left:
        return _empty_pairs()
    a, b = np.concatenate(left), np.concatenate(right)
    ctr = pooled["ctr"].to_numpy()
    tie = ctr[a] == ctr[b]
    drops.add("equal CTR (no preference)", int(tie.sum()), unit="pairs")
    a, b = a[~tie], b[~tie]
    a_wins = ctr[a] > ctr[b]
    chosen, rejected = np.where(a_wins, a, b), np.where(a_wins, b, a)

    clk, imp = pooled["clicks"].to_numpy(), pooled["impressions"].to_numpy()
    z, p = two_proportion_z(clk[chosen], imp[chosen], clk[rejected], imp[rejected])
    soft = soft_label(clk[chosen], imp[chosen], clk[rejected], imp[rejected])
    pairs = pd.DataFrame({
        "test_id": pooled["test_id"].to_numpy()[chosen],
        "chosen": chosen, "rejected": rejected,
        "chosen_text": pooled["text"].to_numpy()[chosen], "rejected_text": pooled["text"].to_numpy()[rejected],
        "evidence": pooled["evidence"].to_numpy()[chosen],
        "chosen_ctr": ctr[chosen], "rejected_ctr": ctr[rejected],
        "chosen_impressions": imp[chosen], "rejected_impressions": imp[rejected],
        "chosen_clicks": clk[chosen], "rejected_clicks": clk[rejected],
        "ctr_diff": ctr[chosen] - ctr[rejected], "z": z, "p_value": p, "soft_label": soft,
    })
    pairs["weight"] = _weights(pairs, weighting, normalise)
    return pairs


def _weights(pairs: pd.DataFrame, weighting: str, normalise: bool = True) -> np.ndarray:
    if weighting == "uniform" or len(pairs) == 0:
        return np.ones(len(pairs))
    if weighting == "confidence":
        w = 2 * pairs["soft_label"].to_numpy() - 1  # 0 for a coin flip, 1 for certainty
    else:  # inverse variance of the CTR difference: more impressions, more trust
        q1 = (pairs["chosen_clicks"] + 0.5) / (pairs["chosen_impressions"] + 1)
        q2 = (pairs["rejected_clicks"] + 0.5) / (pairs["rejected_impressions"] + 1)
        var = q1 * (1 - q1) / pairs["chosen_impressions"] + q2 * (1 - q2) / pairs["rejected_impressions"]
        w = (1 / var).to_numpy()
    if not normalise:
        return w
    mean = w.mean()
    return w / mean if mean > 0 else np.ones(len(pairs))


def _empty_pairs() -> pd.DataFrame:
    cols = ["test_id", "chosen", "rejected", "chosen_text", "rejected_text", "evidence", "chosen_ctr",
            "rejected_ctr", "chosen_impressions", "rejected_impressions", "chosen_clicks", "rejected_clicks",
            "ctr_diff", "z", "p_value", "soft_label", "weight"]
    return pd.DataFrame({c: [] for c in cols})


def filter_pairs(pairs: pd.DataFrame, *, min_impressions: int = 0, max_pvalue: float = 1.0,
                 fdr_q: float | None = None, drops: DropLog | None = None, label: str = "") -> pd.DataFrame:
    """Keep pairs whose arms both have enough impressions, with p <= max_pvalue, and (optionally)
    that are Benjamini-Hochberg discoveries at rate fdr_q. Each rule's losses are counted."""
    drops = drops if drops is not None else DropLog()
    suffix = f" [{label}]" if label else ""
    few = np.minimum(pairs["chosen_impressions"], pairs["rejected_impressions"]) < min_impressions
    drops.add(f"an arm below {min_impressions} impressions{suffix}", int(few.sum()), unit="pairs")
    pairs = pairs[~few]
    weak = pairs["p_value"] > max_pvalue
    drops.add(f"p-value above {max_pvalue}{suffix}", int(weak.sum()), unit="pairs")
    pairs = pairs[~weak]
    if fdr_q is not None:
        keep = benjamini_hochberg(pairs["p_value"].to_numpy(), fdr_q)
        drops.add(f"not a Benjamini-Hochberg discovery at q={fdr_q}{suffix}", int((~keep).sum()), unit="pairs")
        pairs = pairs[keep]
    return pairs.reset_index(drop=True)
