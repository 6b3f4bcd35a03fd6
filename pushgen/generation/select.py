"""Best-of-N selection over the candidate table (only candidates whose fate is `kept` compete)."""

from __future__ import annotations

import pandas as pd

from pushgen.generation.constraints import KEPT


def _kept(candidates: pd.DataFrame, score: str) -> pd.DataFrame:
    kept = candidates[candidates["fate"] == KEPT]
    if kept[score].isna().any():
        raise ValueError(f"kept candidates without a '{score}' value: score them before selecting")
    return kept


def select_best(candidates: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """One row per item: its kept candidate with the highest score (the earliest on a tie).
    Items left with no kept candidate have no row."""
    kept = _kept(candidates, score)
    # A stable sort on the score only keeps the original (generation) order among equal scores.
    ranked = kept.sort_values(score, ascending=False, kind="stable")
    return ranked.drop_duplicates("item_id", keep="first").sort_values("item_id", kind="stable").reset_index(drop=True)


def top_k_per_category(candidates: pd.DataFrame, k: int, score: str = "score") -> pd.DataFrame:
    """For each item and requested category, its k best kept candidates, ranked 1..k."""
    if k < 1:
        raise ValueError(f"selection.top_k must be >= 1, got {k}")
    kept = _kept(candidates, score)
    ranked = kept.sort_values(score, ascending=False, kind="stable")
    top = ranked.groupby(["item_id", "category"], sort=False, dropna=False).head(k).copy()
    top["rank"] = top.groupby(["item_id", "category"], sort=False, dropna=False).cumcount() + 1
    return top.sort_values(["item_id", "category", "rank"], kind="stable").reset_index(drop=True)
