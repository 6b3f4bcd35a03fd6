"""Out-of-core preparation (data.out_of_core): the same texts, pairs, splits and counts as prepare()."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushgen.data.errors import DataError
from pushgen.data.pipeline import prepare
from pushgen.data.splits import leakage_groups
from pushgen.data.stream import load_prepared, prepare_out_of_core
from pushgen.data.synthetic import synthetic_ab_log

UPWORTHY = {"test_id": "clickability_test_id", "text": "headline", "evidence": "lede", "impressions": "impressions",
            "clicks": "clicks", "category": None, "time": "test_week", "image": "eyecatcher_id",
            "first_place": "first_place"}


def _log(n_tests=240, seed=3) -> pd.DataFrame:
    """A synthetic log with every kind of work for the flow: rows shuffled (a test's arms are spread
    over the file), tests linked by a shared headline or lede (leakage groups of 2-4 tests), an
    invalid row, a zero-impression text, an unbalanced test for the SRM check."""
    df = synthetic_ab_log(n_tests, seed=seed)
    ids = df["clickability_test_id"].unique()
    for i in range(0, min(len(ids) - 3, 60), 4):
        a, b, c, d = (df.index[df["clickability_test_id"] == t] for t in ids[i:i + 4])
        df.loc[b[0], "headline"] = df.loc[a[0], "headline"].upper()   # the same normalised key
        if i % 8 == 0:
            df.loc[c, "lede"] = df.loc[b[0], "lede"]                   # a chain a - b - c
        df.loc[d, "lede"] = df.loc[d[0], "lede"] + " "                 # same group as itself only
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df.loc[5, "clicks"] = df.loc[5, "impressions"] + 1           # invalid: dropped with on_invalid=drop
    unseen = df["clickability_test_id"] == df.loc[9, "clickability_test_id"]
    df.loc[unseen, ["impressions", "clicks"]] = 0                # a test nobody saw (it passes SRM: p = 1)
    first = df["clickability_test_id"] == df.loc[20, "clickability_test_id"]
    df.loc[first, "impressions"] = np.arange(first.sum()) * 5000 + 100   # fails the SRM check
    df.loc[first, "clicks"] = np.minimum(df.loc[first, "clicks"], df.loc[first, "impressions"])   # and nothing else
    return df


def _cfg(path, **over) -> dict:
    cfg = {"path": str(path), "format": "auto", "columns": dict(UPWORTHY), "on_invalid": "drop",
           "require_evidence": False, "exclude_time": {"start": 201420, "end": 201424},
           "srm": {"enabled": True, "alpha": 0.001},
           "pairs": {"min_impressions": 100, "max_pvalue": 0.9, "fdr_q": 0.6, "filter_eval": True,
                     "weighting": "confidence"},
           "split": {"val": 0.1, "test": 0.1, "seed": 0, "train_shard": {"index": 1, "count": 2}}}
    cfg.update(over)
    return cfg


def _pairs_by_key(prep) -> pd.DataFrame:
    key = prep.pooled["test_id"] + "|" + prep.pooled["key"]
    p = prep.pairs
    out = pd.DataFrame({"chosen": key.to_numpy()[p["chosen"]], "rejected": key.to_numpy()[p["rejected"]],
                        "split": p["split"], "p_value": p["p_value"], "weight": p["weight"],
                        "chosen_text": p["chosen_text"], "soft_label": p["soft_label"]})
    return out.sort_values(["chosen", "rejected"]).reset_index(drop=True)


def _same(a, b) -> None:
    cols = ["test_id", "key", "text", "evidence", "impressions", "clicks", "n_arms", "source_rows", "split", "ctr", "time"]
    pa_, pb = (x.pooled[cols].sort_values(["test_id", "key"]).reset_index(drop=True) for x in (a, b))
    pd.testing.assert_frame_equal(pa_, pb)
    qa, qb = _pairs_by_key(a), _pairs_by_key(b)
    pd.testing.assert_frame_equal(qa.drop(columns="weight"), qb.drop(columns="weight"))
    np.testing.assert_allclose(qa["weight"], qb["weight"], rtol=1e-12)
    sa, sb = dict(a.stats), dict(b.stats)
    sb.pop("out_of_core")
    assert sa.pop("dropped") == sb.pop("dropped")
    assert sa == sb


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_out_of_core_equals_in_memory(tmp_path, suffix):
    path = tmp_path / f"log{suffix}"
    df = _log()
    df.to_parquet(path) if suffix == ".parquet" else df.to_csv(path, index=False)
    cfg = _cfg(path)
    mem = prepare(cfg, seed=0)
    # Every rule had work to do, so the comparison covers it.
    dropped = mem.stats["dropped"]
    assert dropped["clicks above impressions (rows)"] == 1 and dropped["text with 0 impressions (no CTR) (texts)"] >= 1
    assert dropped["sample-ratio mismatch (chi-square p < 0.001) (tests)"] >= 1
    assert dropped["training test outside train_shard 1/2 (tests)"] > 10
    assert any(k.startswith("not a Benjamini-Hochberg") and v > 0 for k, v in dropped.items())
    assert set(mem.pairs["split"]) == {"train", "val", "test"}
    sizes = leakage_groups(mem.pooled).value_counts()
    assert (sizes == 2).sum() >= 3 and (sizes == 3).sum() >= 3   # the links were there to be found

    stats = prepare_out_of_core(cfg, seed=0, out_dir=tmp_path / "ooc", bucket_rows=97, batch_rows=50)
    assert stats["out_of_core"]["buckets"] >= 9
    ooc = load_prepared(tmp_path / "ooc")
    _same(mem, ooc)
    # What the bucket files held is gone; what is left is the result.
    assert sorted(p.name for p in (tmp_path / "ooc").iterdir()) == ["pairs.parquet", "pooled.parquet", "prepared.json"]


def test_out_of_core_through_prepare_whole_file_and_one_bucket(tmp_path):
    path = tmp_path / "log.parquet"
    _log(80, seed=5).to_parquet(path)
    cfg = _cfg(path, split={"val": 0.2, "test": 0.2})
    for whole in (None, "test"):
        mem = prepare(cfg, seed=1, whole_file_split=whole)
        via = prepare({**cfg, "out_of_core": {"enabled": True, "bucket_rows": 10_000, "dir": None}}, seed=1,
                      whole_file_split=whole)
        _same(mem, via)
    assert set(via.pooled["split"]) == {"test"}


def test_out_of_core_names_the_file_row_of_a_bad_arm(tmp_path):
    path = tmp_path / "log.parquet"
    df = _log(60)
    df.to_parquet(path)
    bad = df.copy()
    bad.loc[37, "clicks"] = bad.loc[37, "impressions"] + 3
    bad.to_parquet(path)
    cfg = _cfg(path, on_invalid="raise")
    cfg_clean = dict(cfg)
    with pytest.raises(DataError, match="row 5"):  # the first bad row of the file (row 5 from _log)
        prepare(cfg_clean, seed=0)
    with pytest.raises(DataError, match=r"row (5|37)\b"):
        prepare_out_of_core(cfg, seed=0, out_dir=tmp_path / "ooc", bucket_rows=20, batch_rows=16)
    with pytest.raises(DataError, match="no finished out-of-core preparation"):
        load_prepared(tmp_path / "ooc")
    with pytest.raises(DataError, match="missing column 'lede'"):
        prepare_out_of_core(_cfg(path, columns={**UPWORTHY, "evidence": "lede"}) | {"path": str(_without(tmp_path, df))},
                            seed=0, out_dir=tmp_path / "ooc2")


def _without(tmp_path, df):
    path = tmp_path / "nolede.parquet"
    df.drop(columns="lede").to_parquet(path)
    return path


@pytest.mark.parametrize("case", ["uniform", "tiny", "ties", "cluster", "nan", "none_pass", "empty"])
def test_bh_cutoff_on_disk_equals_in_memory(tmp_path, case):
    """The cut-off from sorted parts on disk is the in-memory one to the bit, whatever the shape."""
    from pushgen.data.pairs import benjamini_hochberg_cutoff
    from pushgen.data.stream import _bh_cutoff_on_disk

    rng = np.random.default_rng(7)
    p = {"uniform": rng.uniform(size=5000) ** 3,
         "tiny": 10.0 ** -rng.uniform(0, 300, size=3000),                       # many decades
         "ties": rng.choice([1e-4, 0.003, 0.02, 0.02, 0.5, 1.0], size=4000),
         "cluster": np.r_[0.01 + 1e-9 * rng.uniform(size=3000), rng.uniform(size=500)],  # one narrow bin
         "nan": np.r_[rng.uniform(size=2000) ** 4, [np.nan] * 50],
         "none_pass": rng.uniform(0.5, 1.0, size=1000),
         "empty": np.zeros(0)}[case]
    files = []
    for i, chunk in enumerate(np.array_split(rng.permutation(p), 7)):
        files.append(tmp_path / f"p{i}.npy")
        np.save(files[-1], np.sort(chunk))
    for q in (0.01, 0.05, 0.3):
        want = benjamini_hochberg_cutoff(p, q)
        # shift 52: one bin per binade, so whole bins must be read back
        for shift in (48, 52):
            assert _bh_cutoff_on_disk(files, q, shift=shift) == want, (case, q, shift)
    if case == "uniform":
        assert benjamini_hochberg_cutoff(p, 0.05) > 0.01   # a case with many discoveries


def test_out_of_core_peak_memory_does_not_grow_with_the_log(tmp_path):
    """Python-heap peak for a log 8x as long, at the same bucket and batch size. What may grow is a few
    integers per test and per bucket file (~36 B per extra row here, at ~4 arms per test and only 400
    arms per bucket); the flow that held an index of every text and pair grew by ~158 B per row."""
    import gc
    import tracemalloc

    # A first run pays the one-time costs (lazy imports, caches), so neither measured run does.
    warm = tmp_path / "warm.parquet"
    synthetic_ab_log(100, seed=2).to_parquet(warm)
    prepare_out_of_core(_cfg(warm), seed=0, out_dir=tmp_path / "warm", bucket_rows=400, batch_rows=400)
    peaks, rows = {}, {}
    for n_tests in (400, 3200):
        path = tmp_path / f"log{n_tests}.parquet"
        synthetic_ab_log(n_tests, seed=1).to_parquet(path)
        gc.collect()
        tracemalloc.start()
        stats = prepare_out_of_core(_cfg(path), seed=0, out_dir=tmp_path / f"ooc{n_tests}", bucket_rows=400,
                                    batch_rows=400)
        peaks[n_tests] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows[n_tests] = stats["rows_read"]
    assert rows[3200] > 7 * rows[400]
    per_row = (peaks[3200] - peaks[400]) / (rows[3200] - rows[400])
    assert per_row < 80, (peaks, rows, per_row)


def test_csv_ids_are_read_as_strings_in_every_batch(tmp_path):
    """Zero-padded numeric ids plus one textual id: a batch of only numbers must not turn "00005"
    into 5 (that split one test in two out of core and changed the pairs)."""
    df = _log(120)
    names = {t: f"{i:05d}" for i, t in enumerate(df["clickability_test_id"].unique())}
    df["clickability_test_id"] = df["clickability_test_id"].map(names)
    df.loc[df["clickability_test_id"] == "00119", "clickability_test_id"] = "x_last"
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    cfg = _cfg(path)
    mem = prepare(cfg, seed=0)
    assert "00007" in set(mem.pooled["test_id"]) and "7" not in set(mem.pooled["test_id"])
    prepare_out_of_core(cfg, seed=0, out_dir=tmp_path / "ooc", bucket_rows=200, batch_rows=37)
    _same(mem, load_prepared(tmp_path / "ooc"))


def test_repeated_rows_are_flagged_dropped_or_refused_the_same_way_out_of_core(tmp_path):
    df = _log(100).reset_index(drop=True)
    twice = df[df["impressions"] > 0].index[[10, 40, 70]]
    df["eyecatcher_id"] = df["eyecatcher_id"].astype(object)
    df.loc[twice[0], "eyecatcher_id"] = None           # a missing value repeats too
    path = tmp_path / "log.parquet"
    pd.concat([df, df.loc[twice]], ignore_index=True).to_parquet(path)
    kept = prepare(_cfg(path), seed=0)
    assert kept.stats["flagged"] == {"arm equal to another arm of its test in every mapped column (rows)": 3}
    dropped = prepare(_cfg(path, duplicates="drop"), seed=0)
    assert dropped.stats["dropped"]["arm equal to another arm of its test in every mapped column (rows)"] == 3
    assert dropped.stats["flagged"] == {}
    # Dropping them gives exactly the log without the copies.
    df.to_parquet(tmp_path / "clean.parquet")
    clean = prepare(_cfg(tmp_path / "clean.parquet"), seed=0)
    assert clean.pooled["impressions"].sum() == dropped.pooled["impressions"].sum() < kept.pooled["impressions"].sum()
    for name, cfg in (("keep", _cfg(path)), ("drop", _cfg(path, duplicates="drop"))):
        prepare_out_of_core(cfg, seed=0, out_dir=tmp_path / name, bucket_rows=60, batch_rows=50)
        _same(kept if name == "keep" else dropped, load_prepared(tmp_path / name))
    first = int(twice[0])
    with pytest.raises(DataError, match=rf"row {len(df)}\b.*repeats row {first} \(same test '.+'\) in every mapped column"):
        prepare(_cfg(path, duplicates="raise", on_invalid="drop"), seed=0)


def test_bad_bucket_settings_and_a_parquet_file_read_as_csv(tmp_path):
    path = tmp_path / "log.parquet"
    _log(20).to_parquet(path)
    for key in ("bucket_rows", "batch_rows"):
        with pytest.raises(ValueError, match=f"data.out_of_core.{key} must be >= 1, got 0"):
            prepare_out_of_core(_cfg(path), seed=0, out_dir=tmp_path / "ooc", **{key: 0})
    with pytest.raises(DataError, match=r"(?s)is a Parquet file, read as csv.*data.format=parquet"):
        prepare(_cfg(path, format="csv"), seed=0)
