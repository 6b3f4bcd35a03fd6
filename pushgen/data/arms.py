"""From validated arms to honest comparable texts: run-time filters on whole tests, then pooling of
arms that show the same text (image variants) within a test."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from pushgen.data.errors import DataError
from pushgen.data.loading import DropLog
from pushgen.data.text import normalise_key

log = logging.getLogger(__name__)


REPEATED = "arm equal to another arm of its test in every mapped column"


def repeated_arms(arms: pd.DataFrame, mode: str, drops: DropLog, path: str = "<table>") -> pd.DataFrame:
    """Arms that repeat an earlier arm of their test in every mapped column (after cleaning).

    A log that wrote a record twice would count its impressions and clicks twice, but equal columns
    do not prove it: the Upworthy archive has two distinct arms (their significance differs) that
    agree in every column pushgen reads. So by default (``keep``) they stay and are counted under
    ``data.flagged``; ``drop`` removes them (counted), ``raise`` stops at the first one."""
    if mode not in ("keep", "drop", "raise"):
        raise DataError(f"data.duplicates must be keep, drop or raise, got {mode!r}")
    body = arms.drop(columns="source_row")
    repeat = body.duplicated().to_numpy()
    if not repeat.any():
        return arms
    if mode == "raise":
        at = int(np.flatnonzero(repeat)[0])
        rows = pd.util.hash_pandas_object(body, index=False).to_numpy()   # equal rows, NaNs included
        earlier = int(np.flatnonzero(rows == rows[at])[0])
        raise DataError(f"repeats row {int(arms['source_row'].iloc[earlier])} (same test {arms['test_id'].iloc[at]!r}) "
                        "in every mapped column", path=path,
                        row=int(arms["source_row"].iloc[at]),
                        hint="deduplicate the log, or set data.duplicates=drop (or keep, if the arms are distinct)")
    if mode == "drop":
        drops.add(REPEATED, int(repeat.sum()))
        return arms[~repeat].reset_index(drop=True)
    drops.flag(REPEATED, int(repeat.sum()),
               hint="kept: pooled with their twin, so their impressions and clicks count twice; "
                    "set data.duplicates=drop if the log wrote records twice")
    return arms


def exclude_time_window(arms: pd.DataFrame, start, end, drops: DropLog) -> pd.DataFrame:
    """Drop every test that has an arm with time in [start, end] (e.g. a period when randomisation failed)."""
    if "time" not in arms:
        raise DataError("data.exclude_time is set but no column is mapped to the role 'time'",
                        hint="map it with data.columns.time=COLUMN, or turn the filter off with data.exclude_time=null")
    try:
        inside = arms["time"].between(start, end)
    except TypeError as exc:
        raise DataError(f"the time column cannot be compared with data.exclude_time [{start!r}, {end!r}] ({exc})",
                        column="time", hint="give start/end of the same type as the column (e.g. 201326), "
                                            "or set data.exclude_time=null") from exc
    bad_tests = set(arms.loc[inside, "test_id"])
    drop = arms["test_id"].isin(bad_tests)
    drops.add(f"test in excluded time window [{start}, {end}]", len(bad_tests), unit="tests")
    return arms[~drop].reset_index(drop=True)


def sample_ratio_pvalues(arms: pd.DataFrame) -> pd.Series:
    """Chi-square test per test that impressions were split evenly over its arms (sample-ratio mismatch)."""
    def one(imps: pd.Series) -> float:
        counts = imps.to_numpy(dtype=float)
        if len(counts) < 2 or counts.sum() == 0:
            return 1.0
        return float(stats.chisquare(counts).pvalue)
    return arms.groupby("test_id", sort=False)["impressions"].apply(one)


def drop_sample_ratio_mismatch(arms: pd.DataFrame, alpha: float, drops: DropLog) -> pd.DataFrame:
    pvals = sample_ratio_pvalues(arms)
    bad = set(pvals.index[pvals < alpha])
    drops.add(f"sample-ratio mismatch (chi-square p < {alpha})", len(bad), unit="tests")
    return arms[~arms["test_id"].isin(bad)].reset_index(drop=True)


def pool_arms(arms: pd.DataFrame) -> pd.DataFrame:
    """One row per (test, normalised text): impressions and clicks summed over its arms.

    The shown text is the most frequent cleaned spelling; ``n_arms`` says how many arms were pooled.
    """
    arms = arms.assign(key=[normalise_key(t) for t in arms["text"]])
    agg = {
        "evidence": ("evidence", "first"),
        "impressions": ("impressions", "sum"),
        "clicks": ("clicks", "sum"),
        "n_arms": ("text", "size"),
        "source_rows": ("source_row", lambda s: ",".join(map(str, s))),
    }
    for role, how in (("time", "min"), ("category", "first"), ("first_place", "max")):
        if role in arms:
            agg[role] = (role, how)
    pooled = arms.groupby(["test_id", "key"], sort=False).agg(**agg).reset_index()
    # The most frequent spelling per text (first seen on a tie), without a Python call per group.
    spelling = (arms.groupby(["test_id", "key", "text"], sort=False).size().rename("n").reset_index()
                .sort_values("n", ascending=False, kind="stable").drop_duplicates(["test_id", "key"]))
    pooled = pooled.merge(spelling[["test_id", "key", "text"]], on=["test_id", "key"], how="left", validate="1:1")
    pooled["ctr"] = pooled["clicks"] / pooled["impressions"].where(pooled["impressions"] > 0, np.nan)
    log.info("pooled %d arms into %d texts in %d tests", len(arms), len(pooled), pooled["test_id"].nunique())
    return pooled
