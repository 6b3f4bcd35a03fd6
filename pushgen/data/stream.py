"""Out-of-core data preparation: the flow of :func:`pushgen.data.pipeline.prepare` for A/B logs that
do not fit in memory (``data.out_of_core.enabled=true``). The arms, texts, keys and pairs stay on
disk; memory holds one bucket of whole tests and a few integers per test, nothing per text or pair.

1. spill: the log is read in batches (mapped columns only) and its rows are dealt into buckets by a
   hash of the test id, so all arms of a test share a bucket. The number of buckets grows with the
   file (``bucket_rows`` rows each, on average), so a bucket's size does not;
2. per bucket: validation, the time window, the sample-ratio check and pooling, the very functions
   ``prepare`` runs, on whole tests; the pooled texts go to disk, and so does each text's (key hash,
   test) and (evidence hash, test), dealt into partition files by the hash; memory keeps the first
   file row of each test;
3. split: each partition holds every test of its keys, so it alone yields the links between tests
   that share a key; the tests and those links give the same leakage groups, hence the same sides
   and train shards, as ``prepare`` for the same seed (tests are ranked by their first surviving
   row in the file, which is the order ``prepare`` meets them in);
4. per bucket again: pairs, their split and the pair filters, written to ``pairs.parquet``;
   ``chosen`` and ``rejected`` are row positions in ``pooled.parquet``. A Benjamini-Hochberg cut-off
   (``data.pairs.fdr_q``) needs the p-values of all candidate pairs of a split: they are written
   sorted per bucket and the cut-off is found from a histogram of them (:func:`_bh_cutoff_on_disk`).

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
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pushgen.data.arms import drop_sample_ratio_mismatch, exclude_time_window, pool_arms, repeated_arms
from pushgen.data.errors import DataError
from pushgen.data.loading import (DropLog, available_columns, check_columns, iter_table, resolve_format, text_columns,
                                  validate)
from pushgen.data.pairs import build_pairs, filter_pairs
from pushgen.data.splits import SPLITS, check_fractions, shard_codes, side_codes
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
    for batch in iter_table(path, fmt, wanted, batch_rows, text_columns(columns)):
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
    arms = repeated_arms(arms, _get(cfg, "duplicates", "keep"), drops, path)
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


SIDES = (*SPLITS, "unused")  # side codes: an index into this tuple
LINK = np.dtype([("key", np.uint64), ("test", np.int64)])


def _test_positions(pooled: pd.DataFrame) -> np.ndarray:
    """Each text's test as 0..n-1 within its bucket (sorted test ids: the same on every read)."""
    return np.unique(pooled["test_id"].to_numpy(dtype=object), return_inverse=True)[1].reshape(-1)


def _deal_links(kind: str, hashes: np.ndarray, tests: np.ndarray, n_parts: int, tmp: Path) -> None:
    """Append (key hash, test) records to partition files by key hash, so that every test holding a
    key meets in one partition, which alone is read when the links are made."""
    records = np.empty(len(hashes), dtype=LINK)
    records["key"], records["test"] = hashes, tests
    part = hashes % np.uint64(n_parts)
    for p, idx in pd.Series(np.arange(len(part))).groupby(part).indices.items():
        with open(tmp / f"{kind}{int(p):05d}.bin", "ab") as fh:
            fh.write(records[idx].tobytes())


def _links(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(test, test) edges that join every test holding a key of one partition to the first such test."""
    rec = np.unique(np.fromfile(file, dtype=LINK))       # sorted by key, then test; duplicates gone
    first = np.r_[True, rec["key"][1:] != rec["key"][:-1]]
    head = np.maximum.accumulate(np.where(first, np.arange(len(rec)), 0))
    return rec["test"][head[~first]], rec["test"][~first]


def _leakage_labels(tmp: Path, rank: np.ndarray) -> np.ndarray:
    """Leakage group per test in rank order, numbered like :func:`components` numbers them (by the
    group's first test), from the links in the partition files; memory holds the tests and the
    links between different tests, never the keys of the whole log."""
    left, right = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for file in sorted(tmp.glob("key*.bin")) + sorted(tmp.glob("evidence*.bin")):
        a, b = _links(file)
        left.append(rank[a])
        right.append(rank[b])
        file.unlink()
    a, b, n = np.concatenate(left), np.concatenate(right), len(rank)
    _, labels = connected_components(coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)), directed=False)
    return labels


def _bh_cutoff_on_disk(files: list[Path], q: float, shift: int = 48) -> float:
    """:func:`pushgen.data.pairs.benjamini_hochberg_cutoff` of the p-values in ``files`` (each a sorted ``.npy``) without
    holding them all: a histogram over the top bits of the values (non-negative floats sort like
    their bits: bins on a log-like scale) finds the bin where the BH line is crossed last; only a bin
    the histogram cannot decide is read back. Exact: the same float comparisons as in memory."""
    parts = [np.load(f, mmap_mode="r") for f in files]
    m = sum(len(p) for p in parts)
    n_finite = [np.searchsorted(p, np.inf, side="right") for p in parts]   # NaNs sort last and never pass
    tops = [p[n - 1] for p, n in zip(parts, n_finite) if n > 0]
    if not tops:
        return float("-inf")
    n_bins = int(np.float64(max(tops)).view(np.uint64) >> np.uint64(shift)) + 1
    count = np.zeros(n_bins, np.int64)
    low, high = np.full(n_bins, np.inf), np.full(n_bins, -np.inf)
    for p in parts:
        for start in range(0, len(p), 1 << 20):
            chunk = np.asarray(p[start:start + (1 << 20)])
            chunk = chunk[~np.isnan(chunk)]
            bins = (chunk.view(np.uint64) >> np.uint64(shift)).astype(np.int64)
            count += np.bincount(bins, minlength=n_bins)
            used, at = np.unique(bins, return_index=True)       # the chunk is sorted: a bin is one run
            last = np.r_[at[1:] - 1, len(chunk) - 1]
            low[used] = np.minimum(low[used], chunk[at])
            high[used] = np.maximum(high[used], chunk[last])
    cum = np.cumsum(count)
    for j in np.flatnonzero(count)[::-1]:
        first_i, last_i = cum[j] - count[j] + 1, cum[j]    # 1-based ranks of the bin's values
        if low[j] > q * float(last_i) / m:
            continue                                       # no value of the bin is a discovery
        if high[j] <= q * float(first_i) / m:
            return float(high[j])                          # every value is: the largest is the cut-off
        lo_edge = np.uint64(j << shift).view(np.float64)
        vals = np.sort(np.concatenate([p[np.searchsorted(p, lo_edge, "left"):np.searchsorted(p, high[j], "right")]
                                       for p in parts]))
        passed = np.flatnonzero(vals <= q * np.arange(first_i, last_i + 1) / m)
        if len(passed):
            return float(vals[passed.max()])
    return float("-inf")


def prepare_out_of_core(cfg: Mapping, seed: int, out_dir: str | Path, whole_file_split: str | None = None,
                        bucket_rows: int | None = None, batch_rows: int | None = None) -> dict:
    """Write ``pooled.parquet``, ``pairs.parquet`` and ``prepared.json`` (stats, drops) into out_dir."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ooc = _get(cfg, "out_of_core", {})
    bucket_rows = int(_get(ooc, "bucket_rows", 200_000) if bucket_rows is None else bucket_rows)
    batch_rows = int(_get(ooc, "batch_rows", 65_536) if batch_rows is None else batch_rows)
    for key, value in (("bucket_rows", bucket_rows), ("batch_rows", batch_rows)):
        if value < 1:
            raise ValueError(f"data.out_of_core.{key} must be >= 1, got {value}")
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
        # 2. pool each bucket; keep the first file row of each test; deal the texts' keys to disk.
        test_first, test_start, n_tests, n_arms = [], {}, 0, 0
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
            pos = _test_positions(pooled)
            test_start[b] = n_tests
            test_first.append(pooled.groupby(pos)["first_row"].min().to_numpy())
            ev_keys = np.array([normalise_key(e) for e in pooled["evidence"]], dtype=object)
            has_ev = ev_keys != ""
            _deal_links("key", _hash(pooled["key"]), pos + n_tests, len(files), tmp)
            _deal_links("evidence", _hash(ev_keys[has_ev]), pos[has_ev] + n_tests, len(files), tmp)
            n_tests += int(pos.max()) + 1
            pooled.drop(columns="first_row").to_pickle(tmp / f"pooled{b:05d}.pkl")
            del pooled  # before the next bucket is read: one bucket in memory at a time
        if not test_first:
            raise DataError("no arms are left after the filters", path=str(path),
                            hint=f"dropped per rule: {drops.as_dict()}; relax data.exclude_time / data.srm")
        # Tests are ranked by their first surviving row in the file, the order prepare meets them in.
        first_row = np.concatenate(test_first)
        rank = np.empty(n_tests, dtype=np.int64)
        rank[np.argsort(first_row, kind="stable")] = np.arange(n_tests)
        del test_first, first_row

        # 3. split (and train shard) per test, in rank order: integers per test, nothing per text.
        split_cfg = _get(cfg, "split", {})
        if whole_file_split is not None:
            side = np.full(n_tests, SIDES.index(whole_file_split), dtype=np.uint8)
        else:
            val, test = float(_get(split_cfg, "val", 0.1)), float(_get(split_cfg, "test", 0.1))
            check_fractions(val, test)
            split_seed = int(_get(split_cfg, "seed", seed))
            labels = _leakage_labels(tmp, rank)
            side = side_codes(labels, val, test, split_seed)[labels]
            shard = _get(split_cfg, "train_shard")
            if shard is not None:
                index, count = int(shard["index"]), int(shard["count"])
                if not 0 <= index < count:
                    raise ValueError(f"data.split.train_shard.index must be in [0, {count}), got {index}")
                if count < 2:
                    raise ValueError(f"data.split.train_shard.count must be >= 2, got {count}")
                train = np.flatnonzero(side == 0)
                # The train tests' groups renumbered 0..n-1 in their own order, as prepare sees the train subset.
                groups = pd.factorize(labels[train])[0]
                other = train[shard_codes(groups, count, split_seed)[groups] != index]
                drops.add(f"training test outside train_shard {index}/{count}", len(other), unit="tests")
                side[other] = SIDES.index("unused")
            del labels

        # 4. pairs per bucket, then the filters (a BH cut-off needs every candidate of its split first:
        # their p-values wait on disk).
        pair_cfg = _get(cfg, "pairs", {})
        min_imp, max_p = int(_get(pair_cfg, "min_impressions", 0)), float(_get(pair_cfg, "max_pvalue", 1.0))
        fdr_q, filter_eval = _get(pair_cfg, "fdr_q"), bool(_get(pair_cfg, "filter_eval", False))
        bh_splits = [s for s in SPLITS if fdr_q is not None and (s == "train" or filter_eval)]
        pvalues: dict[str, list[Path]] = {s: [] for s in bh_splits}
        pooled_writer, offset, n_texts, pair_files = None, 0, 0, []
        weight_sum, weight_n = 0.0, 0
        for b, start in test_start.items():   # the buckets that kept texts, in bucket order
            file = tmp / f"pooled{b:05d}.pkl"
            pooled = pd.read_pickle(file)
            file.unlink()
            tests = rank[_test_positions(pooled) + start]
            pooled["split"] = np.asarray(SIDES, dtype=object)[side[tests]]
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
                if name in pvalues and len(sub):
                    pvalues[name].append(tmp / f"p_{name}{len(pvalues[name]):05d}.npy")
                    np.save(pvalues[name][-1], np.sort(sub["p_value"].to_numpy(dtype=float) + 0.0))  # no -0.0
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
            del pooled, pairs, kept, sub, table  # before the next bucket is read
        pooled_writer.close()

        cutoff = {s: _bh_cutoff_on_disk(v, float(fdr_q)) for s, v in pvalues.items()}
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

    stats = {"rows_read": int(rows_read), "arms": n_arms, "texts": n_texts, "tests": n_tests, **counts,
             "dropped": drops.as_dict(), "flagged": dict(drops.flags), "out_of_core": {"buckets": n_buckets, "bucket_rows": bucket_rows}}
    drops.log_totals()
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
