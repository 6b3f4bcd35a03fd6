"""pipeline.py: stages run in one folder, later stages find earlier outputs, a resumed pipeline reuses
finished stages instead of training again."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from pushgen.tasks.entry import run_task
from tests.conftest import COLUMNS, REPO, STORIES, ab_table

DATA_OVERRIDES = ["data.exclude_time=null", "data.srm.enabled=false", "data.split.val=0.2", "data.split.test=0.3",
                  "data.pairs.min_impressions=0"]


@pytest.mark.skipif(not STORIES.is_dir(), reason="../shared/models/stories260K is not there")
def test_pipeline_links_stages_and_reuses_finished_ones(tmp_path):
    data = tmp_path / "ab.parquet"
    ab_table(n_tests=20).to_parquet(data)
    columns = ",".join(f"{k}:{v if v is not None else 'null'}" for k, v in COLUMNS.items())
    common = [f"data.path={data}", f"data.columns={{{columns}}}", *DATA_OVERRIDES, "logger=csv",
              f"paths.cache_dir={tmp_path / 'cache'}"]
    tiny_reward = ["backbone=tiny_llama", "debug=fast", "baselines=false", "trainer.enable_progress_bar=false"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=["pipeline.order=[reward,gold,generate]", "threads=1"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "top")
        cfg.pipeline.common = list(cfg.pipeline.common) + common
        cfg.stages.reward.overrides = tiny_reward
        cfg.stages.gold.overrides = tiny_reward + ["backbone.tiny.seed=9"]
        cfg.stages.generate.overrides = [
            f"generator.path={STORIES}", "held_out.limit=3", "generation.n_per_category=2",
            "generation.categories=[question,plain_news]", "generation.sampling.max_new_tokens=8",
            "generation.constraints.min_chars=2"]
    summary = run_task(cfg, "pipeline")

    top = tmp_path / "top"
    gen = json.loads((top / "generate" / "metrics.json").read_text())
    # The generate stage used the reward and gold models the earlier stages exported.
    assert gen["run"]["reward_model"] == str(top / "reward" / "reward_model")
    assert gen["run"]["gold_reward_model"] == str(top / "gold" / "reward_model")
    assert gen["selection"]["n_candidates"] == 3 * 2 * 2
    assert set(summary["stages"]) == {"reward", "gold", "generate"} and "replacement_rate" in summary["generate"]
    assert "generate/report.md" in (top / "report.md").read_text()

    # Resume: the pipeline's own metrics.json is removed (an interrupted run has none); finished
    # stages are reused, not run again.
    stamps = {s: (top / s / "metrics.json").stat().st_mtime_ns for s in ("reward", "gold", "generate")}
    (top / "metrics.json").unlink()
    again = run_task(cfg, "pipeline")
    assert {s: (top / s / "metrics.json").stat().st_mtime_ns for s in stamps} == stamps
    assert again["generate"] == summary["generate"]

    # A stage that stopped before its first checkpoint (here: generate, which has none) starts again;
    # what it left is kept beside it, not overwritten.
    (top / "metrics.json").unlink()
    (top / "generate" / "metrics.json").unlink()
    third = run_task(cfg, "pipeline")
    aside = top / "generate.unfinished-1"
    assert (aside / "candidates.csv").exists() and not (aside / "metrics.json").exists()
    assert (top / "generate" / "metrics.json").exists()
    assert third["generate"] == summary["generate"]  # same seed, same stage inputs


def test_train_shards_are_disjoint_and_leave_val_and_test_alone(tmp_path):
    from pushgen.data.pipeline import prepare
    from tests.conftest import data_cfg

    table = ab_table(n_tests=24)
    # Two tests share a headline: they must land in the same shard.
    t4_first = table.loc[table["test"] == "t4", "headline"].iloc[0]
    table.loc[table.index[table["test"] == "t5"][0], "headline"] = t4_first
    path = tmp_path / "ab.parquet"
    table.to_parquet(path)
    full = prepare(data_cfg(path), seed=0)
    parts = [prepare(data_cfg(path, split={"val": 0.2, "test": 0.2, "train_shard": {"index": i, "count": 2}}), seed=0)
             for i in (0, 1)]
    tests = [set(p.split("train")["test_id"]) for p in parts]
    assert tests[0] and tests[1] and not tests[0] & tests[1]
    assert tests[0] | tests[1] == set(full.split("train")["test_id"])
    keys = [set(p.pooled.loc[p.pooled["split"] == "train", "key"]) for p in parts]
    assert not keys[0] & keys[1]
    linked = [{"t4", "t5"} & t for t in tests]
    assert sorted(map(len, linked)) in ([0, 0], [0, 2])  # together in one shard, or both outside train
    for split in ("val", "test"):
        assert parts[0].split(split).equals(full.split(split)) and parts[1].split(split).equals(full.split(split))
    dropped = parts[0].stats["dropped"]["training test outside train_shard 0/2 (tests)"]
    assert dropped == len(tests[1])


@pytest.mark.parametrize("experiment", [None, "pushgen_paper_scale"])
def test_every_stage_of_the_pipeline_composes(experiment):
    """The overrides each stage gets (CPU default and paper scale) name real keys and options."""
    from pushgen.tasks.pipeline import LINKS, compose_stage

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=[f"experiment={experiment}"] if experiment else [])
        for name in cfg.pipeline.order:
            spec = cfg.stages[name]
            links = [f"{key}=/x/{name}" for key in LINKS.get(name, {})]
            stage = compose_stage(spec.config, [str(o) for o in cfg.pipeline.common] + list(spec.overrides) + links)
            assert stage.seed == cfg.seed and stage.threads == cfg.threads
    if experiment:
        assert cfg.stages.generate.overrides[-1].startswith("scoring.")


def test_a_bad_stage_override_is_named_before_any_stage_runs(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="pipeline")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "top")
            cfg.stages.generate.overrides = ["held_out.limit=3", "generation.n_per_categry=2"]
        with pytest.raises(ValueError, match=r"stage generate \(config generate\).*n_per_categry"):
            run_task(cfg, "pipeline")
        with open_dict(cfg):
            cfg.stages.generate.overrides = ["held_out.limit=-3"]
        with pytest.raises(Exception, match=r"stage generate: held_out.limit: -3 is outside"):
            run_task(cfg, "pipeline")
    assert not (tmp_path / "top" / "reward").exists()   # nothing trained before the check
