"""Out-of-core data preparation: the flow of :func:`pushgen.data.pipeline.prepare` for A/B logs that
do not fit in memory (``data.out_of_core.enabled=true``). The arms and pairs stay on disk; memory
holds one bucket of whole tests and a few numbers per text.

1. spill: the log is read in batches (mapped columns only) and its rows are dealt into buckets by a
   hash of the test id, so all arms of a test share a bucket. The number of buckets grows with the
   file (``bucket_rows`` rows each, on average), so a bucket's size does not;
2. per bucket: validation, the time window, the sample-ratio check and pooling, the very functions
   ``prepare`` runs, on whole tests; the pooled texts go to disk; memory keeps, per text, the row
   of its test and two 64-bit hashes (of its text key and of its evidence key);
3. split: the leakage graph on those hashes gives the same groups, hence the same sides and train
   shards, as ``prepare`` for the same seed (tests are ordered by their first surviving row in the
   file, which is the order ``prepare`` meets them in);
4. per bucket again: pairs, their split and the pair filters (a Benjamini-Hochberg cut-off, when
   ``data.pairs.fdr_q`` is set, from the p-values of all candidate pairs of a split), written to
   ``pairs.parquet``; ``chosen`` and ``rejected`` are row positions in ``pooled.parquet``.

The result is the same set of texts and pairs as ``prepare`` (tested), in bucket order.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pushgen.data.arms import drop_sample_ratio_mismatch, exclude_time_window, pool_arms
from pushgen.data.errors import DataError
from pushgen.data.loading import DropLog, available_columns, check_columns, iter_table, resolve_format, validate
from pushgen.data.pairs import benjamini_hochberg_cutoff, build_pairs, filter_pairs
from pushgen.data.splits import SPLITS, check_fractions, components, shards_of_groups, sides_of_groups
from pushgen.data.text import normalise_key

log = logging.getLogger(__name__)

ROW = "__pushgen_file_row"
DONE = "prepared.json"  # written last: a folder without it is unfinished


def _get(cfg: Mapping, key: str, default=None):
    value = cfg.get(key, default) if cfg is not None else default
    return default if value is None else value


def count_rows(path: Path, fmt: str) -> int:
    """Data rows of the file, from Parquet's metadata or by counting line ends (an upper bound for a
    CSV with line breaks inside quotes, which only sizes the buckets)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq
        return int(pq.ParquetFile(path).metadata.num_rows)
    lines = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            lines += block.count(b"\n")
    return max(lines - (fmt == "csv"), 1)


def _hash(values) -> np.ndarray:
    return pd.util.hash_array(np.asarray(values, dtype=object)).astype(np.uint64)


def spill(path: Path, fmt: str, columns: Mapping[str, str | None], n_buckets: int, batch_rows: int,
          tmp: Path) -> tuple[list[Path], int]:
    """Deal the file's rows (with their file row number) into bucket files by test id; returns the
    bucket files and the rows read."""
    wanted = [c for c in columns.values() if c is not None]
    files = [tmp / f"arms{b:05d}.pkl" for b in range(n_buckets)]
    start = 0
    for batch in iter_table(path, fmt, wanted, batch_rows):
        batch = batch.reset_index(drop=True)
        batch[ROW] = np.arange(start, start + len(batch))
        start += len(batch)
        ids = batch[columns["test_id"]].astype(str).str.strip().to_numpy(dtype=object)
        bucket = _hash(ids) % np.uint64(n_buckets)
        for b, idx in pd.Series(np.arange(len(batch))).groupby(bucket).indices.items():
            with open(files[int(b)], "ab") as fh:  # our own temporary frames, read back below
                pickle.dump(batch.iloc[idx], fh, protocol=pickle.HIGHEST_PROTOCOL)
    return files, start


def _read_frames(file: Path) -> pd.DataFrame | None:
    if not file.exists():
        return None
    frames = []
    with open(file, "rb") as fh:
        while True:
            try:
                frames.append(pickle.load(fh))
            except EOFError:
                break
    return pd.concat(frames, ignore_index=True)


def pooled_bucket(raw: pd.DataFrame, cfg: Mapping, path: str, drops: DropLog) -> tuple[pd.DataFrame, int]:
    """(validated, filtered, pooled texts of one bucket's whole tests, arms left after the filters).
    Zero-impression texts are counted and dropped; ``first_row`` is the file row of a text's first arm."""
    columns = dict(cfg["columns"])
    arms = validate(raw.drop(columns=ROW), columns, path=path, on_invalid=_get(cfg, "on_invalid", "raise"),
                    require_evidence=bool(_get(cfg, "require_evidence", False)), drops=drops,
                    source_rows=raw[ROW].to_numpy(), allow_empty=True)
    window = _get(cfg, "exclude_time")
    if len(arms) and window is not None and window.get("start") is not None:
        arms = exclude_time_window(arms, window["start"], window["end"], drops)
    srm = _get(cfg, "srm")
    if len(arms) and srm is not None and srm.get("enabled", False):
        arms = drop_sample_ratio_mismatch(arms, float(srm["alpha"]), drops)
    if len(arms) == 0:
        return pd.DataFrame(), 0
    pooled = pool_arms(arms)
    unseen = pooled["impressions"] == 0
    drops.add("text with 0 impressions (no CTR)", int(unseen.sum()), unit="texts")
    pooled = pooled[~unseen].reset_index(drop=True)
    # Arms keep file order inside a bucket, so a text's first listed source row is its first arm.
    pooled["first_row"] = [int(s.split(",", 1)[0]) for s in pooled["source_rows"]]
    return pooled, len(arms)


def _codes(hashes: np.ndarray, none: np.uint64 | None = None) -> np.ndarray:
    codes, _ = pd.factorize(hashes)
    if none is not None:
        codes = np.where(hashes == none, -1, codes)
    return codes


def _groups(test_ids: np.ndarray, text_test: np.ndarray, key_hash: np.ndarray, ev_hash: np.ndarray,
            first_row: np.ndarray) -> pd.Series:
    """Leakage group per test from the compact arrays, tests in the order of their first row."""
    order = np.argsort(first_row, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return components(pd.Index(test_ids[order]), rank[text_test], _codes(key_hash), _codes(ev_hash, np.uint64(0)))


def prepare_out_of_core(cfg: Mapping, seed: int, out_dir: str | Path, whole_file_split: str | None = None,
                        bucket_rows: int | None = None, batch_rows: int | None = None) -> dict:
    """Write ``pooled.parquet``, ``pairs.parquet`` and ``prepared.json`` (stats, drops) into out_dir."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ooc = _get(cfg, "out_of_core", {})
    bucket_rows = int(bucket_rows or _get(ooc, "bucket_rows", 200_000))
    batch_rows = int(batch_rows or _get(ooc, "batch_rows", 65_536))
    path = Path(str(cfg["path"]))
    fmt = resolve_format(path, _get(cfg, "format", "auto"), _get(cfg, "missing_hint"))
    columns = dict(cfg["columns"])
    check_columns(available_columns(path, fmt), columns, str(path))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / DONE).unlink(missing_ok=True)
    drops = DropLog(quiet=True)  # the totals are logged at the end, not once per bucket
    n_buckets = max(1, math.ceil(count_rows(path, fmt) / bucket_rows))

    with tempfile.TemporaryDirectory(dir=out, prefix=".spill-") as tmp_name:
        tmp = Path(tmp_name)
        files, rows_read = spill(path, fmt, columns, n_buckets, batch_rows, tmp)
        if rows_read == 0:
            raise DataError("the table has no rows", path=str(path))
        # 2. pool each bucket; keep a few numbers per text for the split.
        tests, text_test, key_hash, ev_hash, test_first, n_arms = [], [], [], [], [], 0
        for b, file in enumerate(files):
            raw = _read_frames(file)
            if raw is None:
                continue
            part = DropLog(quiet=True)
            pooled, arms = pooled_bucket(raw, cfg, str(path), part)
            drops.merge(part)
            del raw
            file.unlink()
            n_arms += arms
            if pooled.empty:
                continue
            ids, pos = np.unique(pooled["test_id"].to_numpy(dtype=object), return_inverse=True)
            text_test.append(pos + sum(len(t) for t in tests))
            tests.append(ids)
            test_first.append(pooled.groupby(pos)["first_row"].min().to_numpy())
            key_hash.append(_hash(pooled["key"]))
            ev_keys = [normalise_key(e) for e in pooled["evidence"]]
            ev_hash.append(np.where(np.array(ev_keys, dtype=object) == "", np.uint64(0), _hash(ev_keys)))
            pooled.drop(columns="first_row").to_pickle(tmp / f"pooled{b:05d}.pkl")
        if not tests:
            raise DataError("no arms are left after the filters", path=str(path),
                            hint=f"dropped per rule: {drops.as_dict()}; relax data.exclude_time / data.srm")
        test_ids, first_row = np.concatenate(tests), np.concatenate(test_first)
        text_test, key_hash, ev_hash = np.concatenate(text_test), np.concatenate(key_hash), np.concatenate(ev_hash)
        del tests, test_first

        # 3. split (and train shard) per test, from the compact arrays.
        split_cfg = _get(cfg, "split", {})
        if whole_file_split is not None:
            side = pd.Series(whole_file_split, index=test_ids)
        else:
            val, test = float(_get(split_cfg, "val", 0.1)), float(_get(split_cfg, "test", 0.1))
            check_fractions(val, test)
            split_seed = int(_get(split_cfg, "seed", seed))
            side = sides_of_groups(_groups(test_ids, text_test, key_hash, ev_hash, first_row), val, test, split_seed)
            shard = _get(split_cfg, "train_shard")
            if shard is not None:
                index, count = int(shard["index"]), int(shard["count"])
                if not 0 <= index < count:
                    raise ValueError(f"data.split.train_shard.index must be in [0, {count}), got {index}")
                if count < 2:
                    raise ValueError(f"data.split.train_shard.count must be >= 2, got {count}")
                is_train = (side.reindex(test_ids).to_numpy() == "train")
                keep_text = is_train[text_test]
                # Train tests renumbered 0..n-1 in their own order, as prepare sees the train subset.
                new_pos = np.cumsum(is_train) - 1
                groups = _groups(test_ids[is_train], new_pos[text_test[keep_text]], key_hash[keep_text],
                                 ev_hash[keep_text], first_row[is_train])
                shard_of = shards_of_groups(groups, count, split_seed)
                other = shard_of.index[shard_of.to_numpy() != index]
                drops.add(f"training test outside train_shard {index}/{count}", len(other), unit="tests")
                side = side.copy()
                side.loc[other] = "unused"
        del text_test, key_hash, ev_hash

        # 4. pairs per bucket, then the filters (a BH cut-off needs every candidate of its split first).
        pair_cfg = _get(cfg, "pairs", {})
        min_imp, max_p = int(_get(pair_cfg, "min_impressions", 0)), float(_get(pair_cfg, "max_pvalue", 1.0))
        fdr_q, filter_eval = _get(pair_cfg, "fdr_q"), bool(_get(pair_cfg, "filter_eval", False))
        bh_splits = [s for s in SPLITS if fdr_q is not None and (s == "train" or filter_eval)]
        pvalues: dict[str, list[np.ndarray]] = {s: [] for s in bh_splits}
        pooled_writer, offset, n_texts, pair_files = None, 0, 0, []
        weight_sum, weight_n = 0.0, 0
        for file in sorted(tmp.glob("pooled*.pkl")):
            pooled = pd.read_pickle(file)
            file.unlink()
            pooled["split"] = pooled["test_id"].map(side).to_numpy()
            part = DropLog(quiet=True)
            pairs = build_pairs(pooled, weighting=_get(pair_cfg, "weighting", "uniform"), drops=part, normalise=False)
            # prepare divides the weights by their mean over every pair built (all splits), before any filter.
            weight_sum += float(pairs["weight"].sum())
            weight_n += len(pairs)
            pairs["split"] = pooled["split"].to_numpy()[pairs["chosen"].to_numpy()] if len(pairs) else []
            pairs["chosen"] += offset
            pairs["rejected"] += offset
            kept = []
            for name in SPLITS:
                train_like = name == "train" or filter_eval
                sub = filter_pairs(pairs[pairs["split"] == name], min_impressions=min_imp,
                                   max_pvalue=max_p if train_like else 1.0, drops=part, label=name)
                if name in pvalues:
                    pvalues[name].append(sub["p_value"].to_numpy())
                kept.append(sub)
            drops.merge(part)
            pairs = pd.concat(kept, ignore_index=True)
            table = pa.Table.from_pandas(pooled, preserve_index=False)
            if pooled_writer is None:
                pooled_writer = pq.ParquetWriter(out / "pooled.parquet", table.schema)
            pooled_writer.write_table(_conform(table, pooled_writer.schema, "pooled texts"))
            offset += len(pooled)
            n_texts += len(pooled)
            if len(pairs):
                pair_file = tmp / f"pairs{len(pair_files):05d}.parquet"
                pairs.to_parquet(pair_file, index=False)
                pair_files.append(pair_file)
        pooled_writer.close()

        cutoff = {s: benjamini_hochberg_cutoff(np.concatenate(v) if v else np.zeros(0), float(fdr_q))
                  for s, v in pvalues.items()}
        counts = {f"pairs_{s}": 0 for s in SPLITS} | {f"pairs_{s}_sig": 0 for s in SPLITS}
        removed = {s: 0 for s in bh_splits}
        mean_weight = weight_sum / weight_n if weight_n else 1.0
        pair_writer = None
        for pair_file in pair_files:
            pairs = pd.read_parquet(pair_file)
            if mean_weight > 0:
                pairs["weight"] = pairs["weight"] / mean_weight
            else:
                pairs["weight"] = 1.0
            for s, cut in cutoff.items():
                lose = (pairs["split"] == s) & ~(pairs["p_value"] <= cut)
                removed[s] += int(lose.sum())
                pairs = pairs[~lose]
            for s in SPLITS:
                counts[f"pairs_{s}"] += int((pairs["split"] == s).sum())
                counts[f"pairs_{s}_sig"] += int(((pairs["split"] == s) & (pairs["p_value"] < 0.05)).sum())
            table = pa.Table.from_pandas(pairs.reset_index(drop=True), preserve_index=False)
            if pair_writer is None:
                pair_writer = pq.ParquetWriter(out / "pairs.parquet", table.schema)
            pair_writer.write_table(_conform(table, pair_writer.schema, "pairs"))
        for s, n in removed.items():
            drops.add(f"not a Benjamini-Hochberg discovery at q={fdr_q} [{s}]", n, unit="pairs")
        if pair_writer is None:
            raise DataError("no preference pairs could be built", path=str(path),
                            hint=f"every test needs two different texts with different CTRs; dropped: {drops.as_dict()}")
        pair_writer.close()

    stats = {"rows_read": int(rows_read), "arms": n_arms, "texts": n_texts, "tests": int(len(test_ids)), **counts,
             "dropped": drops.as_dict(), "out_of_core": {"buckets": n_buckets, "bucket_rows": bucket_rows}}
    for rule, n in drops.as_dict().items():
        if n:
            log.info("dropped %d: %s", n, rule)
    tmp_done = out / (DONE + ".tmp")
    tmp_done.write_text(json.dumps(stats, indent=2))
    tmp_done.replace(out / DONE)
    log.info("data (out of core, %d buckets): %s", n_buckets, {k: v for k, v in stats.items() if k != "dropped"})
    return stats


def _conform(table, schema, what: str):
    """A later bucket's table in the first one's schema (a CSV read in chunks can infer other types)."""
    if table.schema.equals(schema):
        return table
    try:
        return table.select(schema.names).cast(schema)
    except Exception as exc:
        raise DataError(f"the {what} of one part of the file have other column types than the first part ({exc})",
                        hint="give each column one type throughout the file") from exc


def load_prepared(out_dir: str | Path):
    """The :class:`PreparedData` written by :func:`prepare_out_of_core`."""
    from pushgen.data.pipeline import PreparedData

    out = Path(out_dir)
    if not (out / DONE).exists():
        raise DataError(f"{out} holds no finished out-of-core preparation (no {DONE})",
                        hint="run it again; an interrupted one leaves no prepared.json")
    stats = json.loads((out / DONE).read_text())
    drops = DropLog(quiet=True)
    drops.counts.update(stats["dropped"])
    return PreparedData(pooled=pd.read_parquet(out / "pooled.parquet"), pairs=pd.read_parquet(out / "pairs.parquet"),
                        drops=drops, stats=stats)
