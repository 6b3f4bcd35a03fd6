"""The data flow in one place: file -> validated arms -> filtered tests -> pooled texts -> split ->
pairs. Each step is a small function elsewhere in this package; this module only orders them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pushgen.data.arms import drop_sample_ratio_mismatch, exclude_time_window, pool_arms, repeated_arms
from pushgen.data.errors import DataError
from pushgen.data.loading import DropLog, read_table, text_columns, validate
from pushgen.data.pairs import build_pairs, filter_pairs
from pushgen.data.splits import SPLITS, assign_splits, train_shards

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    pooled: pd.DataFrame            # one row per (test, text), with its split
    pairs: pd.DataFrame             # one row per preference pair, with its split
    drops: DropLog
    stats: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> pd.DataFrame:
        return self.pairs[self.pairs["split"] == name].reset_index(drop=True)


def _get(cfg: Mapping, key: str, default=None):
    value = cfg.get(key, default) if cfg is not None else default
    return default if value is None else value


def load_arms(cfg: Mapping, drops: DropLog) -> tuple[pd.DataFrame, int]:
    """Read, validate and filter the arms named by a data config; also says how many rows were read."""
    path = str(cfg["path"])
    # Only the mapped columns are read: a wide log's other columns would only cost memory.
    wanted = [c for c in dict(cfg["columns"]).values() if c is not None]
    raw = read_table(path, _get(cfg, "format", "auto"), missing_hint=_get(cfg, "missing_hint"), columns=wanted,
                     text_columns=text_columns(cfg["columns"]))
    arms = validate(raw, dict(cfg["columns"]), path=path, on_invalid=_get(cfg, "on_invalid", "raise"),
                    require_evidence=bool(_get(cfg, "require_evidence", False)), drops=drops)
    arms = repeated_arms(arms, _get(cfg, "duplicates", "keep"), drops, path)
    window = _get(cfg, "exclude_time")
    if window is not None and window.get("start") is not None:
        arms = exclude_time_window(arms, window["start"], window["end"], drops)
    srm = _get(cfg, "srm")
    if srm is not None and srm.get("enabled", False):
        arms = drop_sample_ratio_mismatch(arms, float(srm["alpha"]), drops)
    if len(arms) == 0:
        raise DataError("no arms are left after the filters", path=path,
                        hint=f"dropped per rule: {drops.as_dict()}; relax data.exclude_time / data.srm")
    return arms, len(raw)


def _keep_train_shard(pooled: pd.DataFrame, shard: Mapping, seed: int, drops: DropLog) -> pd.DataFrame:
    """Only one shard of the training tests trains (`data.split.train_shard: {index, count}`); val and
    test are untouched, so models trained on different shards are compared on the same pairs."""
    index, count = int(shard["index"]), int(shard["count"])
    if not 0 <= index < count:
        raise ValueError(f"data.split.train_shard.index must be in [0, {count}), got {index}")
    shard_of = train_shards(pooled, count, seed)
    other = (pooled["split"] == "train") & (pooled["test_id"].map(shard_of) != index)
    drops.add(f"training test outside train_shard {index}/{count}", int(pooled.loc[other, "test_id"].nunique()),
              unit="tests")
    # Marked rather than removed, so row numbers (which pairs point at) stay those of the full data.
    return pooled.assign(split=pooled["split"].where(~other, "unused"))


def prepare(cfg: Mapping, seed: int, whole_file_split: str | None = None) -> PreparedData:
    """Run the data flow. ``whole_file_split='test'`` puts every test in that split (for eval.py).
    With ``data.out_of_core.enabled`` the same flow runs bucket by bucket on disk (pushgen.data.stream)."""
    ooc = _get(cfg, "out_of_core")
    if ooc is not None and ooc.get("enabled", False):
        return _prepare_out_of_core(cfg, seed, whole_file_split, ooc)
    drops = DropLog()
    arms, rows_read = load_arms(cfg, drops)
    pooled = pool_arms(arms)
    unseen = pooled["impressions"] == 0
    drops.add("text with 0 impressions (no CTR)", int(unseen.sum()), unit="texts")
    pooled = pooled[~unseen].reset_index(drop=True)
    if len(pooled) == 0:
        raise DataError("no text has any impressions, so no CTR can be computed", path=str(cfg["path"]),
                        hint=f"check the impressions column (data.columns.impressions); dropped: {drops.as_dict()}")
    split_cfg = _get(cfg, "split", {})
    if whole_file_split is not None:
        pooled["split"] = whole_file_split
    else:
        split_seed = int(_get(split_cfg, "seed", seed))  # fix it to compare model seeds on one test set
        side = assign_splits(pooled, float(_get(split_cfg, "val", 0.1)), float(_get(split_cfg, "test", 0.1)), split_seed)
        pooled["split"] = pooled["test_id"].map(side).to_numpy()
        shard = _get(split_cfg, "train_shard")
        if shard is not None:
            pooled = _keep_train_shard(pooled, shard, split_seed, drops)

    pair_cfg = _get(cfg, "pairs", {})
    pairs = build_pairs(pooled, weighting=_get(pair_cfg, "weighting", "uniform"), drops=drops)
    pairs["split"] = pooled["split"].to_numpy()[pairs["chosen"].to_numpy()] if len(pairs) else []
    min_imp = int(_get(pair_cfg, "min_impressions", 0))
    # Label filters shape what the model learns from; evaluation keeps every pair (and reports the
    # significant ones separately) unless filter_eval is set.
    parts = []
    for name in SPLITS:
        part = pairs[pairs["split"] == name]
        train_like = name == "train" or bool(_get(pair_cfg, "filter_eval", False))
        parts.append(filter_pairs(part, min_impressions=min_imp,
                                  max_pvalue=float(_get(pair_cfg, "max_pvalue", 1.0)) if train_like else 1.0,
                                  fdr_q=_get(pair_cfg, "fdr_q") if train_like else None,
                                  drops=drops, label=name))
    pairs = pd.concat(parts, ignore_index=True)
    if len(pairs) == 0:
        raise DataError("no preference pairs could be built", path=str(cfg["path"]),
                        hint=f"every test needs two different texts with different CTRs; dropped: {drops.as_dict()}")
    stats = {
        "rows_read": int(rows_read), "arms": int(len(arms)), "texts": int(len(pooled)), "tests": int(pooled["test_id"].nunique()),
        **{f"pairs_{s}": int((pairs["split"] == s).sum()) for s in SPLITS},
        **{f"pairs_{s}_sig": int(((pairs["split"] == s) & (pairs["p_value"] < 0.05)).sum()) for s in SPLITS},
        "dropped": drops.as_dict(), "flagged": dict(drops.flags),
    }
    log.info("data: %s", stats)
    return PreparedData(pooled=pooled, pairs=pairs, drops=drops, stats=stats)


def _prepare_out_of_core(cfg: Mapping, seed: int, whole_file_split: str | None, ooc: Mapping) -> PreparedData:
    import tempfile

    from pushgen.data.stream import load_prepared, prepare_out_of_core

    if ooc.get("dir"):
        prepare_out_of_core(cfg, seed, ooc["dir"], whole_file_split)
        return load_prepared(ooc["dir"])
    with tempfile.TemporaryDirectory(prefix="pushgen-prepare-") as tmp:
        prepare_out_of_core(cfg, seed, tmp, whole_file_split)
        return load_prepared(tmp)
