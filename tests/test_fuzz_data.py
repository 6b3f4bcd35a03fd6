"""Property-based tests of the data layer: whatever A/B table comes in (random counts, empty and huge
texts, any unicode, duplicate arms, one-arm tests, clicks above impressions, negative counts), the
loader returns a valid table or raises the project's DataError, and no pair's label contradicts
its clicks. Malformed files give a DataError too. Derandomised: the same examples on every run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import data_cfg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushgen.data.errors import DataError
from pushgen.data.pipeline import prepare
from pushgen.data.splits import SPLITS

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# Texts: any printable unicode (no lone surrogates: no file format can hold them), HTML-ish noise,
# blanks, a few shared values (so arms collide), and now and then a very long one.
texts = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.sampled_from(["", "   ", "Same headline", "same headline!", "<b>Same</b> headline", "&amp;", "\u200b",
                     "Ünïcödé 🚀 标题", "line\nbreak", "quote \" and , comma"]),
    st.builds(lambda n, c: c * n, st.integers(10_000, 60_000), st.sampled_from(["a", "é", "字 "])),
)
counts = st.one_of(st.integers(0, 5_000), st.integers(-3, 3), st.integers(10**6, 10**7))


@st.composite
def ab_tables(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 30))
    n_tests = draw(st.integers(1, 8))
    rows = []
    for _ in range(n):
        imps = draw(counts)
        # Mostly plausible clicks, sometimes more clicks than impressions.
        clicks = draw(st.one_of(st.integers(0, max(imps, 0)), counts))
        rows.append({"test": f"t{draw(st.integers(0, n_tests - 1))}", "headline": draw(texts),
                     "lede": draw(st.one_of(st.just(""), texts)), "imps": imps, "clicks": clicks,
                     "week": 201450, "image": f"img{draw(st.integers(0, 2))}"})
    return pd.DataFrame(rows)


def _check_prepared(prepared) -> None:
    pooled, pairs = prepared.pooled, prepared.pairs
    assert (pooled["impressions"] > 0).all()
    assert ((pooled["clicks"] >= 0) & (pooled["clicks"] <= pooled["impressions"])).all()
    assert pooled["text"].str.len().gt(0).all()
    assert len(pairs) > 0 and set(pairs["split"]) <= set(SPLITS)
    ch, rj = pairs["chosen"].to_numpy(), pairs["rejected"].to_numpy()
    # A pair joins two different pooled texts of one test, on one side of the split.
    assert (ch != rj).all()
    assert (pooled["test_id"].to_numpy()[ch] == pairs["test_id"].to_numpy()).all()
    assert (pooled["test_id"].to_numpy()[rj] == pairs["test_id"].to_numpy()).all()
    assert (pooled["split"].to_numpy()[ch] == pooled["split"].to_numpy()[rj]).all()
    # The label follows the clicks: chosen has the strictly higher CTR, computed from its own counts.
    c_ctr = pairs["chosen_clicks"] / pairs["chosen_impressions"]
    r_ctr = pairs["rejected_clicks"] / pairs["rejected_impressions"]
    assert (c_ctr > r_ctr).all()
    assert np.allclose(c_ctr, pairs["chosen_ctr"]) and np.allclose(r_ctr, pairs["rejected_ctr"])
    assert (pairs["chosen_clicks"].to_numpy() == pooled["clicks"].to_numpy()[ch]).all()
    assert (pairs["rejected_impressions"].to_numpy() == pooled["impressions"].to_numpy()[rj]).all()
    assert ((pairs["soft_label"] >= 0.5) & (pairs["soft_label"] <= 1)).all()
    assert ((pairs["p_value"] >= 0) & (pairs["p_value"] <= 1)).all() and np.isfinite(pairs["weight"]).all()


@FUZZ
@given(table=ab_tables(), fmt=st.sampled_from(["parquet", "csv", "jsonl"]), on_invalid=st.sampled_from(["raise", "drop"]),
       srm=st.booleans())
def test_any_table_gives_valid_pairs_or_a_data_error(tmp_path, table, fmt, on_invalid, srm):
    path = tmp_path / f"ab.{fmt}"
    {"parquet": lambda: table.to_parquet(path), "csv": lambda: table.to_csv(path, index=False),
     "jsonl": lambda: table.to_json(path, orient="records", lines=True, force_ascii=False)}[fmt]()
    cfg = data_cfg(path, on_invalid=on_invalid, srm={"enabled": srm, "alpha": 0.001})
    try:
        prepared = prepare(cfg, seed=0)
    except DataError as err:
        assert str(path) in str(err) or "data." in str(err)        # it says where, or which setting
        return
    _check_prepared(prepared)
    # Nothing vanished without a count: every data row is an arm, or counted as dropped.
    dropped_rows = sum(v for k, v in prepared.stats["dropped"].items() if k.endswith("(rows)"))
    assert prepared.stats["rows_read"] == len(table)
    assert prepared.stats["arms"] + dropped_rows == len(table) or srm   # SRM drops whole tests (counted as tests)


@FUZZ
@given(table=ab_tables())
def test_strict_mode_never_accepts_impossible_counts(tmp_path, table):
    path = tmp_path / "ab.parquet"
    table.to_parquet(path)
    impossible = ((table["imps"] < 0) | (table["clicks"] < 0) | (table["clicks"] > table["imps"])).any()
    try:
        prepare(data_cfg(path), seed=0)
    except DataError as err:
        assert "row " in str(err) or not impossible                 # a bad row is named by its number
        return
    assert not impossible


def test_malformed_files_give_clear_errors(tmp_path, ab_file):
    from conftest import ab_table
    cases = {}
    data = ab_file.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 3])
    cases["cut.parquet"] = "could not be read as parquet"
    (tmp_path / "quote.csv").write_text('test,headline,lede,imps,clicks,week,image\nt0,"never closed,x,10,1,1,i\n')
    cases["quote.csv"] = "could not be read as csv"
    ab_table(n_tests=2).to_csv(tmp_path / "latin1.csv", index=False, encoding="latin-1")
    with open(tmp_path / "latin1.csv", "ab") as fh:
        fh.write("t9,Caf\u00e9 cr\u00e8me,l,10,1,201450,i\n".encode("latin-1"))
    cases["latin1.csv"] = "is not valid UTF-8"
    (tmp_path / "broken.jsonl").write_text('{"test": "t0", "headline": "a", "imps": 1, "clicks": 0}\n{"test": \n')
    cases["broken.jsonl"] = "could not be read as jsonl"
    (tmp_path / "empty.csv").write_text("")
    cases["empty.csv"] = "could not be read as csv"
    for name, expected in cases.items():
        with pytest.raises(DataError) as err:
            prepare(data_cfg(tmp_path / name), seed=0)
        assert expected in str(err.value) and name in str(err.value), (name, str(err.value))
