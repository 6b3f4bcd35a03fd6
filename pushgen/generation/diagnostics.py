"""Reward-hacking diagnostics: the best-of-N curve under the proxy reward model (the one that
selects) and under a second, "gold" reward model that never took part in the selection.

For an item with M kept candidates, best-of-N draws N of them at random (without replacement; all M
if M < N) and sends the one the proxy scores highest. The curve is the expectation of that over all
draws, computed exactly rather than by resampling: after sorting by proxy score, the candidate of
rank i (1 = lowest) is the pick with probability C(i-1, N-1) / C(M, N). The same probabilities give
the expected gold score of the proxy's pick. If the proxy is being gamed, its expected score keeps
rising with N while the gold score flattens or falls: the gap between the two gains grows.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd

from pushgen.generation.constraints import KEPT


def pick_probabilities(m: int, n: int) -> np.ndarray:
    """P(rank i is the max of a uniform n-subset of m), ranks ascending; n is capped at m."""
    n = min(n, m)
    total = comb(m, n)
    return np.array([comb(i, n - 1) / total for i in range(m)], dtype=float)


def expected_best_of_n(proxy: np.ndarray, others: dict[str, np.ndarray], n: int) -> dict[str, float]:
    """Expected proxy score of the best-of-n pick and the expected value of each other column at it.

    Ties in the proxy go to the earlier candidate, as in select.select_best."""
    m = len(proxy)
    # lexsort: last key first; -index makes the earlier of equal scores rank higher.
    order = np.lexsort((-np.arange(m), proxy))
    p = pick_probabilities(m, n)
    out = {"proxy": float(p @ proxy[order])}
    out.update({k: float(p @ np.asarray(v, dtype=float)[order]) for k, v in others.items()})
    return out


def default_ns(max_m: int) -> list[int]:
    ns = [1]
    while ns[-1] * 2 < max_m:
        ns.append(ns[-1] * 2)
    return ns + ([max_m] if max_m > 1 else [])


def best_of_n_curve(candidates: pd.DataFrame, humans: pd.DataFrame, ns: list[int] | None = None,
                    proxy: str = "score", gold: str | None = "gold_score") -> pd.DataFrame:
    """One row per N: expected proxy (and gold) score of the pick, averaged over items; gains over
    N=1 in units of each model's standard deviation over all kept candidates; the proxy-gold gap;
    and the replacement rate (pick >= item's best human text) under each model."""
    kept = candidates[candidates["fate"] == KEPT]
    use_gold = gold is not None and gold in kept and kept[gold].notna().all()
    groups = [g for _, g in kept.groupby("item_id", sort=True)]
    if not groups:
        return pd.DataFrame()
    ns = ns or default_ns(max(len(g) for g in groups))
    best_h = humans.groupby("item_id")[proxy].max()
    best_h_gold = humans.groupby("item_id")[gold].max() if use_gold else None
    rows = []
    for n in ns:
        per_item = []
        for g in groups:
            item = g["item_id"].iloc[0]
            s = g[proxy].to_numpy(dtype=float)
            others = {"beats_human": (s >= best_h[item]).astype(float)}
            if use_gold:
                gs = g[gold].to_numpy(dtype=float)
                others.update(gold=gs, beats_human_gold=(gs >= best_h_gold[item]).astype(float))
            per_item.append(expected_best_of_n(s, others, n))
        rows.append({"n": n, **pd.DataFrame(per_item).mean().to_dict()})
    curve = pd.DataFrame(rows)
    curve["proxy_gain_sd"] = (curve["proxy"] - curve["proxy"].iloc[0]) / kept[proxy].std(ddof=0)
    if use_gold:
        curve["gold_gain_sd"] = (curve["gold"] - curve["gold"].iloc[0]) / kept[gold].std(ddof=0)
        curve["gap_sd"] = curve["proxy_gain_sd"] - curve["gold_gain_sd"]
    return curve
