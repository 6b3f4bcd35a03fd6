"""The A/B data layer: validation errors, cleaning, pooling, pair statistics, splits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import COLUMNS, ab_table, data_cfg
from scipy import stats

from pushgen.data.arms import drop_sample_ratio_mismatch, exclude_time_window, pool_arms
from pushgen.data.errors import DataError
from pushgen.data.loading import DropLog, read_table, validate
from pushgen.data.pairs import benjamini_hochberg, build_pairs, filter_pairs, soft_label, two_proportion_z
from pushgen.data.pipeline import prepare
from pushgen.data.splits import assign_splits, leakage_groups
from pushgen.data.text import clean_text, normalise_key


# --- validation -----------------------------------------------------------------------------

def test_missing_column_names_file_column_and_setting(tmp_path):
    df = ab_table().drop(columns=["clicks"])
    with pytest.raises(DataError) as err:
        validate(df, COLUMNS, path="x.parquet")
    msg = str(err.value)
    assert "x.parquet" in msg and "'clicks'" in msg and "data.columns.clicks" in msg


def test_clicks_above_impressions_names_row():
    df = ab_table()
    df.loc[5, "clicks"] = df.loc[5, "imps"] + 1
    with pytest.raises(DataError, match=r"row 5.*clicks.*exceed impressions"):
        validate(df, COLUMNS, path="f.csv")


@pytest.mark.parametrize("bad", [-1, 2.5, None, "many", 1e20])
def test_counts_must_be_non_negative_integers(bad):
    df = ab_table().astype({"imps": object})
    df.loc[3, "imps"] = bad
    with pytest.raises(DataError, match=r"row 3, column 'imps': impressions must be a non-negative integer"):
        validate(df, COLUMNS, path="f")


def test_empty_text_after_cleaning_is_an_error():
    df = ab_table()
    df.loc[2, "headline"] = " <br> \u200b "
    with pytest.raises(DataError, match=r"row 2, column 'headline': empty text"):
        validate(df, COLUMNS, path="f")


def test_drop_mode_counts_each_rule():
    df = ab_table()
    df.loc[0, "clicks"] = 10**6
    df.loc[1, "headline"] = ""
    df.loc[2, "imps"] = -3
    drops = DropLog()
    out = validate(df, COLUMNS, path="f", on_invalid="drop", drops=drops)
    assert len(out) == len(df) - 3
    counts = drops.as_dict()
    assert counts["clicks above impressions (rows)"] == 1
    assert counts["empty text (rows)"] == 1
    assert counts["impressions not a non-negative integer below 2**53 (rows)"] == 1
    assert sorted(out["source_row"])[:2] == [3, 4]


def test_missing_file_says_where_data_comes_from(tmp_path):
    with pytest.raises(DataError, match="OSF"):
        read_table(tmp_path / "nope.parquet", missing_hint="see OSF project jd64p; set data.path=FILE")


def test_truncated_parquet_and_bad_encoding_give_clear_errors(tmp_path, ab_file):
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(ab_file.read_bytes()[:200])
    with pytest.raises(DataError, match="could not be read as parquet"):
        read_table(cut)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("test,headline\nt1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        read_table(latin)


def test_non_utf8_error_gives_the_real_byte_and_line(tmp_path):
    path = tmp_path / "late.csv"
    head = "test,headline\n" + "".join(f"t{i},plain text {i}\n" for i in range(5000))
    path.write_bytes(head.encode() + "t9,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"at byte {len(head.encode()) + 6}, line 5002"):
        read_table(path)


def test_text_time_column_with_numeric_window_is_a_clear_error():
    arms = validate(ab_table().assign(week=lambda d: "2014-W" + d["week"].astype(str)), COLUMNS)
    with pytest.raises(DataError, match="data.exclude_time=null"):
        exclude_time_window(arms, 201326, 201402, DropLog())


def test_texts_nobody_saw_are_dropped_and_counted(tmp_path):
    df = ab_table()
    df.loc[df["headline"].str.contains("Story 0 headline version 2"), ["imps", "clicks"]] = 0
    path = tmp_path / "zero.parquet"
    df.to_parquet(path)
    prepared = prepare(data_cfg(path), seed=0)
    assert prepared.drops.as_dict()["text with 0 impressions (no CTR) (texts)"] == 1
    assert prepared.pairs[["chosen_ctr", "rejected_ctr", "p_value", "soft_label"]].notna().all().all()


def test_csv_and_jsonl_load_like_parquet(tmp_path):
    df = ab_table()
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    a = validate(read_table(tmp_path / "a.csv"), COLUMNS)
    b = validate(read_table(tmp_path / "a.jsonl"), COLUMNS)
    pd.testing.assert_frame_equal(a, b)


def test_evidence_is_borrowed_from_the_same_test():
    df = ab_table()
    first = df.index[df["test"] == "t1"][0]
    df.loc[first, "lede"] = None
    out = validate(df, COLUMNS)
    assert out.loc[first, "evidence"] == "Lede of story 1 & more"


# --- text ------------------------------------------------------------------------------------

def test_clean_text_strips_html_entities_and_invisible_characters():
    assert clean_text("<p>Hi&nbsp;there &amp;amp; \u200bfriends</p>  ") == "Hi there & friends"
    assert clean_text(None) == "" and clean_text(float("nan")) == ""


def test_normalised_key_ignores_case_quotes_and_punctuation():
    assert normalise_key(clean_text("You Won\u2019t Believe It!")) == normalise_key("you won't believe it")


# --- pooling, filters -----------------------------------------------------------------------

def test_pooling_sums_image_variants():
    arms = validate(ab_table(), COLUMNS)
    pooled = pool_arms(arms)
    assert len(pooled) == 3 * 12
    raw = ab_table()
    v0 = raw[(raw["test"] == "t0") & raw["headline"].str.contains("version 0")]
    row = pooled[(pooled["test_id"] == "t0") & pooled["text"].str.contains("version 0")].iloc[0]
    assert row["impressions"] == v0["imps"].sum() and row["clicks"] == v0["clicks"].sum()
    assert row["n_arms"] == 2
    assert math.isclose(row["ctr"], v0["clicks"].sum() / v0["imps"].sum())


def test_time_window_and_srm_filters_drop_whole_tests():
    arms = validate(ab_table(), COLUMNS)
    drops = DropLog()
    kept = exclude_time_window(arms, 201450, 201450, drops)
    assert not (kept["time"] == 201450).any() and drops.as_dict()["test in excluded time window [201450, 201450] (tests)"] == 4
    skewed = arms.copy()
    skewed.loc[skewed["test_id"] == "t0", "impressions"] = [100, 5000, 5000, 5000]
    skewed["clicks"] = np.minimum(skewed["clicks"], skewed["impressions"])
    kept = drop_sample_ratio_mismatch(skewed, 0.001, drops)
    assert "t0" not in set(kept["test_id"]) and kept["test_id"].nunique() == 11


# --- pairs -----------------------------------------------------------------------------------

def test_two_proportion_z_matches_hand_computation():
    z, p = two_proportion_z(60, 3000, 30, 3000)
    pooled = 90 / 6000
    z_hand = (0.02 - 0.01) / math.sqrt(pooled * (1 - pooled) * (2 / 3000))
    assert math.isclose(float(z), z_hand, rel_tol=1e-12)
    assert math.isclose(float(p), 2 * stats.norm.sf(z_hand), rel_tol=1e-12)
    z0, p0 = two_proportion_z(0, 100, 0, 100)
    assert float(z0) == 0.0 and float(p0) == 1.0


def test_pair_labels_follow_the_clicks():
    pooled = pd.DataFrame({"test_id": ["a", "a", "a", "b", "b"], "key": list("xyzuv"),
                           "text": ["X", "Y", "Z", "U", "V"], "evidence": [""] * 5,
                           "impressions": [1000, 1000, 2000, 500, 500], "clicks": [10, 30, 40, 5, 5]})
    pooled["ctr"] = pooled["clicks"] / pooled["impressions"]
    drops = DropLog()
    pairs = build_pairs(pooled, drops=drops)
    got = {(r.chosen_text, r.rejected_text) for r in pairs.itertuples()}
    # Y (3%) > Z (2%) > X (1%); U and V tie and make no pair.
    assert got == {("Y", "X"), ("Z", "X"), ("Y", "Z")}
    assert drops.as_dict()["equal CTR (no preference) (pairs)"] == 1
    assert (pairs["chosen_ctr"] > pairs["rejected_ctr"]).all() and (pairs["ctr_diff"] > 0).all()
    assert (pairs["soft_label"] > 0.5).all() and (pairs["soft_label"] < 1).all()
    yx = pairs[(pairs.chosen_text == "Y") & (pairs.rejected_text == "X")].iloc[0]
    assert math.isclose(yx["z"], float(two_proportion_z(30, 1000, 10, 1000)[0]))


def test_soft_label_is_half_for_equal_rates_and_monotone():
    assert math.isclose(float(soft_label(10, 1000, 10, 1000)), 0.5)
    assert float(soft_label(40, 1000, 10, 1000)) > float(soft_label(20, 1000, 10, 1000)) > 0.5


def test_filters_and_benjamini_hochberg():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # Hand-computed: thresholds 0.005, 0.010, 0.015, ...; largest k with p_(k) <= k*q/m is 2.
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    pairs = pd.DataFrame({"p_value": [0.01, 0.2, 0.03], "chosen_impressions": [50, 500, 500],
                          "rejected_impressions": [500, 500, 500]})
    drops = DropLog()
    kept = filter_pairs(pairs, min_impressions=100, max_pvalue=0.05, drops=drops)
    assert kept["p_value"].tolist() == [0.03]
    assert sum(drops.as_dict().values()) == 2


# --- splits ----------------------------------------------------------------------------------

def test_split_keeps_tests_sharing_text_or_evidence_together():
    rows = []
    for t in range(30):
        rows += [{"test_id": f"t{t}", "key": f"k{t}a", "evidence": f"ev {t}"},
                 {"test_id": f"t{t}", "key": f"k{t}b", "evidence": f"ev {t}"}]
    rows.append({"test_id": "t1", "key": "k2a", "evidence": "ev 1"})       # t1 and t2 share a text
    rows.append({"test_id": "t3", "key": "k3c", "evidence": "ev 4"})       # t3 and t4 share a lede
    pooled = pd.DataFrame(rows)
    groups = leakage_groups(pooled)
    assert groups["t1"] == groups["t2"] and groups["t3"] == groups["t4"] and groups["t5"] != groups["t6"]
    for seed in range(5):
        side = assign_splits(pooled, 0.2, 0.2, seed)
        assert side["t1"] == side["t2"] and side["t3"] == side["t4"]
        assert set(side.unique()) == {"train", "val", "test"}
    assert assign_splits(pooled, 0.2, 0.2, 0).equals(assign_splits(pooled, 0.2, 0.2, 0))
    assert not assign_splits(pooled, 0.2, 0.2, 0).equals(assign_splits(pooled, 0.2, 0.2, 1))


def test_prepare_end_to_end_no_text_crosses_splits(ab_file):
    prepared = prepare(data_cfg(ab_file), seed=0)
    pairs = prepared.pairs
    assert set(pairs["split"]) == {"train", "val", "test"}
    for a in ("train", "val", "test"):
        for b in ("train", "val", "test"):
            if a < b:
                ta = set(pairs.loc[pairs.split == a, "chosen_text"]) | set(pairs.loc[pairs.split == a, "rejected_text"])
                tb = set(pairs.loc[pairs.split == b, "chosen_text"]) | set(pairs.loc[pairs.split == b, "rejected_text"])
                assert not ta & tb
                assert not set(pairs.loc[pairs.split == a, "evidence"]) & set(pairs.loc[pairs.split == b, "evidence"])
    # 12 tests x 3 texts = 3 pairs per test, none tied (hand check on the fixture)
    assert len(pairs) + sum(v for k, v in prepared.drops.as_dict().items() if "equal CTR" in k) == 36


def test_prepare_on_real_upworthy_excludes_the_broken_window():
    from conftest import UPWORTHY
    if not UPWORTHY.exists():
        pytest.skip(f"real data not found at {UPWORTHY}")
    cols = {"test_id": "clickability_test_id", "text": "headline", "evidence": "lede", "impressions": "impressions",
            "clicks": "clicks", "time": "test_week", "image": "eyecatcher_id", "first_place": "first_place"}
    prepared = prepare({"path": str(UPWORTHY), "columns": cols, "exclude_time": {"start": 201326, "end": 201402},
                        "srm": {"enabled": True, "alpha": 0.001}, "split": {"val": 0.1, "test": 0.1}}, seed=0)
    assert not prepared.pooled["time"].between(201326, 201402).any()
    # Image variants were pooled: no two texts of one test share a key.
    assert not prepared.pooled.duplicated(["test_id", "key"]).any()
    assert prepared.stats["pairs_test_sig"] > 200
