"""Real configs, real entry functions: a tiny reward run trains, tests, evaluates, and closes W&B."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _runs import train_cfg
from conftest import REPO, ab_table
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from pushgen.tasks.entry import run_task
from pushgen.utils.config import register_resolvers

register_resolvers()
CONF = str(REPO / "conf")


def _cfg(name: str, out: Path, data: Path, overrides: list[str]):
    return train_cfg(out, data, overrides, name=name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = root / "ab.parquet"
    ab_table(n_tests=30).to_parquet(data)
    cfg = _cfg("train", root / "train", data,
               ["backbone=tiny_llama", "logger=wandb", "trainer.max_epochs=3", "trainer.val_check_interval=1.0",
                "optim.lr=3e-3", "data.batch_size=8", "seed=0"])
    metrics = run_task(cfg, "train")
    return root, data, cfg, metrics


def test_train_writes_metrics_checkpoint_plots_and_closes_wandb(trained):
    root, _, cfg, metrics = trained
    out = root / "train"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_ckpt"] and Path(saved["best_ckpt"]).exists()
    assert saved["test"]["n_pairs"] == metrics["test"]["n_pairs"] > 0
    for name in ("loss_curves", "score_hist", "acc_by_ctr_diff"):
        assert Path(saved["plots"][name]).stat().st_size > 1000
    assert (out / "config_tree.txt").read_text().count("backbone") >= 1
    assert set(saved["baselines"]) == {"longer_wins", "tfidf_logreg"}
    import wandb
    assert wandb.run is None                                   # closed, so a multirun job starts fresh
    assert list((out / "wandb").glob("offline-run-*"))


def test_training_lowers_the_loss(trained):
    import pandas as pd
    root, *_ = trained
    log = pd.read_csv(root / "train" / "csv" / "version_0" / "metrics.csv")
    epochs = log["train/loss_epoch"].dropna().to_numpy()
    assert len(epochs) == 3 and epochs[-1] < epochs[0]


def test_eval_scores_every_pair_of_a_file_with_the_checkpoint(trained):
    root, data, _, metrics = trained
    cfg = _cfg("eval", root / "eval", data, [f"ckpt_path={metrics['best_ckpt']}"])
    out = run_task(cfg, "eval")
    for key in ("pair_acc", "pair_acc_sig", "auc", "n_pairs", "n_pairs_sig"):
        assert key in out
    assert out["n_pairs"] == 30 * 3 - sum(v for k, v in out["data"]["dropped"].items() if "equal CTR" in k)
    assert json.loads((root / "eval" / "metrics.json").read_text())["n_pairs"] == out["n_pairs"]


def test_exported_reward_model_reloads_with_the_same_scores(trained):
    import pandas as pd
    import torch
    from pushgen.models import RewardModel
    root, *_ = trained
    model = RewardModel.from_pretrained(root / "train" / "reward_model")
    scored = pd.read_csv(root / "train" / "test_pair_scores.csv").head(5)
    enc = model.tokenizer(scored["chosen_text"].tolist(), padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        got = model(enc["input_ids"], enc["attention_mask"]).numpy()
    assert got == pytest.approx(scored["score_chosen"].to_numpy(), abs=1e-4)


# Values a user must give on the command line, per top-level config and per group option.
REQUIRED = {"eval": ["ckpt_path=x.ckpt"], "generate": ["generator.path=x", "reward_model=x"]}
NEED = {"data=ab_log": ["data.path=x.csv"], "backbone=hf": ["backbone.name_or_path=org/model"]}
TOP_CONFIGS = sorted(p.stem for p in (REPO / "conf").glob("*.yaml"))


def _compose_valid(config_name: str, overrides: list[str]):
    from pushgen.utils.schema import validate_config
    cfg = compose(config_name=config_name, overrides=REQUIRED.get(config_name, []) + overrides)
    validate_config(cfg, config_name)
    return cfg


@pytest.mark.parametrize("config_name", TOP_CONFIGS)
def test_every_group_option_of_a_config_composes_and_validates(config_name):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        choices = compose(config_name=config_name, overrides=REQUIRED.get(config_name, []),
                          return_hydra_config=True).hydra.runtime.choices
        for group in sorted(g for g in choices if not g.startswith("hydra") and "/" not in g and g != "experiment"):
            for option in sorted(f.stem for f in (REPO / "conf" / group).glob("*.yaml")):
                choice = f"{group}={option}"
                _compose_valid(config_name, [choice] + NEED.get(choice, []))


def test_every_experiment_composes_and_validates_with_a_top_level_config():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
            errors = {}
            for config_name in TOP_CONFIGS:
                try:
                    _compose_valid(config_name, [f"experiment={path.stem}"])
                    break
                except Exception as exc:  # noqa: BLE001 - collected to explain the failure below
                    errors[config_name] = f"{type(exc).__name__}: {exc}"
            else:
                pytest.fail(f"experiment={path.stem} composes with no top-level config: {errors}")


def test_missing_data_says_where_the_archive_comes_from(tmp_path):
    from pushgen.data.errors import DataError
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data.path={tmp_path}/absent.parquet"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    with pytest.raises(DataError) as err:
        run_task(cfg, "train")
    msg = str(err.value)
    assert "absent.parquet" in msg and "jd64p" in msg and "Matias" in msg and "data.path" in msg


def test_a_finished_run_folder_is_never_overwritten(trained):
    root, data, cfg, metrics = trained
    before = (root / "train" / "metrics.json").read_text()
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        run_task(cfg, "train")
    # eval.py pointed at a training folder is refused too, before it writes anything
    ev = _cfg("eval", root / "train", data, [f"ckpt_path={metrics['best_ckpt']}"])
    with pytest.raises(FileExistsError):
        run_task(ev, "eval")
    assert (root / "train" / "metrics.json").read_text() == before


def test_hydra_callback_refuses_a_used_folder_before_hydra_writes_to_it(tmp_path):
    from pushgen.utils.guard import RefuseUsedRunDir, StopRun
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    cfg = lambda job, ckpt: OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path)}, "job": {"name": job}},
                                             "ckpt_path": ckpt})
    # A SystemExit: Hydra would turn any other exception from a callback into a mere warning.
    with pytest.raises(StopRun, match="FileExistsError: .*unfinished run"):
        RefuseUsedRunDir().on_run_start(cfg("train", None))
    RefuseUsedRunDir().on_run_start(cfg("train", "last"))          # resuming is allowed
    with pytest.raises(StopRun):
        RefuseUsedRunDir().on_run_start(cfg("eval", "x.ckpt"))


def test_guard_refuses_leftovers_of_a_failed_run_and_foreign_files(tmp_path):
    from pushgen.utils.guard import check_run_dir
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("")
    check_run_dir(tmp_path, resuming=False)                        # what Hydra writes first is fine
    (tmp_path / "config_tree.txt").write_text("x")                  # a run started here and failed early
    with pytest.raises(FileExistsError, match="stopped before its first checkpoint"):
        check_run_dir(tmp_path, resuming=False)
    (tmp_path / "config_tree.txt").unlink()
    (tmp_path / "thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match="not empty .*thesis.tex"):
        check_run_dir(tmp_path, resuming=False)
    check_run_dir(tmp_path, resuming=True)                         # a pipeline resumes into its folder


def test_eval_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    data = tmp_path / "ab.csv"
    ab_table(n_tests=4).to_csv(data, index=False)
    with pytest.raises(ValueError, match="not a pushgen checkpoint"):
        run_task(_cfg("eval", tmp_path / "eval", data, [f"ckpt_path={data}"]), "eval")


class _Pickled:
    """An object torch.save can pickle but weights-only loading refuses."""


def test_a_pickled_file_is_refused_without_advising_unsafe_loading(tmp_path):
    import torch
    from pushgen.utils.checkpoint import NotACheckpoint, load_checkpoint_file
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "extra": _Pickled()}, path)
    with pytest.raises(NotACheckpoint, match="pickled objects") as err:
        load_checkpoint_file(path)
    # PyTorch's own message suggests weights_only=False, which would run the file's code.
    assert "weights_only" not in str(err.value) and str(path) in str(err.value)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(NotACheckpoint, match="no state_dict"):
        load_checkpoint_file(path)


def test_unknown_config_key_is_refused():
    from hydra.errors import ConfigCompositionException
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="optim.lrr"):
            compose(config_name="train", overrides=["optim.lrr=0.1"])


def test_a_debug_run_on_part_of_the_test_split_scores_only_what_it_tested(tmp_path):
    import pandas as pd
    data = tmp_path / "ab.parquet"
    ab_table(n_tests=30).to_parquet(data)
    cfg = _cfg("train", tmp_path / "train", data, ["backbone=tiny_llama", "debug=fast", "logger=csv",
                                                   "trainer.limit_test_batches=1", "data.eval_batch_size=4"])
    metrics = run_task(cfg, "train")
    scored = pd.read_csv(tmp_path / "train" / "test_pair_scores.csv")
    assert len(scored) == metrics["test"]["n_pairs"] == 4 and scored["score_chosen"].notna().all()
    # The baselines are judged on the same 4 pairs, not the whole split.
    assert {b["n_pairs"] for b in metrics["baselines"].values()} == {4}


def test_lora_reward_run_checkpoint_evaluates(tmp_path):
    data = tmp_path / "ab.parquet"
    ab_table(n_tests=15).to_parquet(data)
    cfg = _cfg("train", tmp_path / "train", data,
               ["backbone=tiny_qwen2", "reward.lora.enabled=true", "debug=fast", "logger=none", "test=false"])
    metrics = run_task(cfg, "train")
    ev = run_task(_cfg("eval", tmp_path / "eval", data, [f"ckpt_path={metrics['best_ckpt']}"]), "eval")
    assert ev["n_pairs"] > 0 and 0.0 <= ev["pair_acc"] <= 1.0
    import torch
    state = torch.load(metrics["best_ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    assert any("lora_A" in k for k in state) and "model.head.weight" in state


def test_a_failing_run_still_closes_its_wandb_run(tmp_path, monkeypatch):
    import wandb
    from pushgen.modules.reward_module import RewardModule
    data = tmp_path / "ab.parquet"
    ab_table(n_tests=15).to_parquet(data)
    cfg = _cfg("train", tmp_path / "train", data, ["backbone=tiny_llama", "debug=fast", "logger=wandb"])

    def boom(self, batch, _):
        assert wandb.run is not None            # the run was open when training failed
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(RewardModule, "training_step", boom)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_task(cfg, "train")
    assert wandb.run is None


def test_an_interrupted_run_resumes_from_last_and_keeps_its_history(tmp_path):
    import pandas as pd
    import torch
    data = tmp_path / "ab.parquet"
    ab_table(n_tests=15).to_parquet(data)
    common = ["backbone=tiny_llama", "logger=csv", "baselines=false", "test=false", "trainer.val_check_interval=1.0",
              "data.batch_size=4", "trainer.log_every_n_steps=1"]
    run_task(_cfg("train", tmp_path / "run", data, common + ["trainer.max_epochs=1"]), "train")
    (tmp_path / "run" / "metrics.json").unlink()          # as if it had died before finishing
    first_steps = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    run_task(_cfg("train", tmp_path / "run", data, common + ["trainer.max_epochs=2", "ckpt_path=last"]), "train")
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert first_steps > 1 and final["global_step"] == 2 * first_steps          # it continued, not restarted
    old = pd.read_csv(tmp_path / "run" / "csv" / "version_0" / "metrics.csv")
    new = pd.read_csv(tmp_path / "run" / "csv" / "version_1" / "metrics.csv")
    # the first part's history is still there, and the second part carries on from its last step
    assert old["step"].min() == 0 and old["step"].max() < first_steps <= new["step"].min() + 1


@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=abc", "trainer.max_epochs: 'abc' has the wrong type; expected int or None"),
    ("trainer.precision=bogus", "trainer.precision: 'bogus' has the wrong type"),
    ("callbacks.resume_checkpoint.every_n_train_steps=abc", "every_n_train_steps: 'abc' has the wrong type"),
])
def test_wrong_types_of_engine_arguments_fail_before_any_data_is_read(override, message):
    from pushgen.utils.schema import ConfigError, validate_config
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[override])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, "train")


@pytest.mark.parametrize("config_name", TOP_CONFIGS)
def test_every_top_level_config_has_a_default_run_folder(config_name):
    from hydra.core.hydra_config import HydraConfig
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=REQUIRED.get(config_name, []), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent.name == "runs" and run_dir.name.endswith(f"_{cfg.name}")
