"""The synthetic A/B generator, and reading only the mapped columns (same result as the whole file)."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import REPO
from omegaconf import OmegaConf

from pushgen.data import pipeline
from pushgen.data.errors import DataError
from pushgen.data.loading import read_table
from pushgen.data.synthetic import main as synthetic_main
from pushgen.data.synthetic import synthetic_ab_log


def _upworthy_cfg(path):
    cfg = OmegaConf.load(REPO / "conf" / "data" / "upworthy.yaml")
    cfg.path = str(path)
    cfg.split.seed = 0
    return cfg


def test_synthetic_log_has_realistic_shapes_and_is_seeded():
    table = synthetic_ab_log(300, seed=1)
    per_test = table.groupby("clickability_test_id").size()
    assert per_test.min() >= 2 and per_test.max() <= 6 and 3.5 < per_test.mean() < 4.5
    assert len(per_test) == 300
    # Some arms repeat a text of their test with another image (pooling has work to do).
    repeats = table.duplicated(["clickability_test_id", "headline"]).sum()
    assert 0.05 * len(table) < repeats < 0.3 * len(table)
    assert (table["clicks"] <= table["impressions"]).all()
    assert 0.005 < table["clicks"].sum() / table["impressions"].sum() < 0.05
    pd.testing.assert_frame_equal(table, synthetic_ab_log(300, seed=1))
    assert not table.equals(synthetic_ab_log(300, seed=2))
    with pytest.raises(ValueError, match="min_arms"):
        synthetic_ab_log(10, min_arms=1)


def test_synthetic_texts_stay_apart_across_tests_at_scale():
    # Shared texts link tests into leakage groups; a big log must not collapse into one giant group
    # (the held-out splits would be left empty).
    from pushgen.data.splits import leakage_groups
    from pushgen.data.text import normalise_key

    table = synthetic_ab_log(2400, seed=16).rename(columns={"clickability_test_id": "test_id", "headline": "text",
                                                            "lede": "evidence"})
    groups = leakage_groups(table.assign(key=table["text"].map(normalise_key)))
    assert groups.value_counts().max() < 0.01 * 2400


def test_synthetic_log_runs_through_the_upworthy_config(tmp_path):
    path = synthetic_main(["--tests", "200", "--out", str(tmp_path / "syn.parquet")])
    prepared = pipeline.prepare(_upworthy_cfg(path), seed=0)
    # Balanced impressions pass the sample-ratio check; the weeks are outside the excluded window.
    assert prepared.stats["tests"] >= 195
    assert prepared.stats["arms"] > prepared.stats["texts"]            # image variants pooled
    assert prepared.stats["pairs_train"] > 4 * 150


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_reading_only_mapped_columns_gives_the_same_pairs(tmp_path, monkeypatch, suffix):
    table = synthetic_ab_log(120, seed=3).assign(notes="x" * 200, score=1.5)   # unmapped wide columns
    path = tmp_path / f"syn{suffix}"
    table.to_parquet(path) if suffix == ".parquet" else table.to_csv(path, index=False)
    pruned = pipeline.prepare(_upworthy_cfg(path), seed=0)
    assert list(read_table(path, columns=["headline", "clicks"]).columns) == ["headline", "clicks"]

    def whole(path, fmt="auto", missing_hint=None, columns=None, text_columns=()):
        return read_table(path, fmt, missing_hint, text_columns=text_columns)
    monkeypatch.setattr(pipeline, "read_table", whole)
    full = pipeline.prepare(_upworthy_cfg(path), seed=0)
    pd.testing.assert_frame_equal(pruned.pairs, full.pairs)
    pd.testing.assert_frame_equal(pruned.pooled, full.pooled)
    assert pruned.stats == full.stats


def test_a_missing_mapped_column_is_still_named_with_the_file_columns(tmp_path):
    path = tmp_path / "syn.parquet"
    synthetic_ab_log(20).drop(columns=["lede"]).to_parquet(path)
    with pytest.raises(DataError, match=r"missing column 'lede'.*headline"):
        pipeline.prepare(_upworthy_cfg(path), seed=0)
