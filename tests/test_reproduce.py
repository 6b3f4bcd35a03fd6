"""Studies from run folders: the loss-ablation table against hand-computed seed means, provenance,
the CLI's study list and its refusal when a study's entry point is missing, the Optuna trial table
with a failed trial, and the sweep objective's NaN rule."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, ab_table

from pushgen.reproduce import STUDIES, find_runs
from pushgen.reproduce.__main__ import main
from pushgen.tasks.entry import sweep_objective

PAIRS = pd.DataFrame({"test_id": ["a", "a", "b", "c"], "chosen": [0, 0, 3, 5], "rejected": [1, 2, 4, 6],
                      "p_value": [0.01, 0.5, 0.02, 0.03]})


def _fake_run(folder, loss, seed, margins, val=0.6):
    folder.mkdir(parents=True)
    pairs = PAIRS.assign(score_chosen=np.asarray(margins, float), score_rejected=0.0,
                         chosen_ctr=0.02, rejected_ctr=0.01, ctr_diff=0.01)
    pairs.to_csv(folder / "test_pair_scores.csv", index=False)
    cfg = {"loss": {"name": loss}, "seed": seed, "paths": {"output_dir": str(folder)}}
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"loss={loss}", f"seed={seed}"]))
    (folder / "metrics.json").write_text(json.dumps({"val": {"pair_acc_sig": val}, "test": {}}))


def test_loss_ablation_table_from_run_folders(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0", "bradley_terry", 0, [1, -1, 1, -1])      # sig pairs: 0, 2, 3 -> 2/3 right
    _fake_run(sweep / "1", "bradley_terry", 1, [1, 1, 1, 1])        # 3/3
    _fake_run(sweep / "2", "hinge", 0, [-1, 1, -1, -1])             # 0/3
    _fake_run(sweep / "3", "hinge", 1, [1, 1, -1, 1])               # 2/3
    out = tmp_path / "report"
    assert main(["loss_ablation", "--from-runs", str(sweep), "--out", str(out), "--n-boot", "50"]) == 0
    table = pd.read_csv(out / "loss_ablation.csv").set_index("loss")
    assert math.isclose(table.loc["bradley_terry", "pair_acc_sig"], (2 / 3 + 1) / 2)
    assert math.isclose(table.loc["hinge", "pair_acc_sig"], (0 + 2 / 3) / 2)
    assert math.isclose(table.loc["hinge", "pair_acc"], (1 / 4 + 3 / 4) / 2)
    assert math.isclose(table.loc["hinge", "diff_vs_bt_sig"], 1 / 3 - 5 / 6)
    assert table.loc["hinge", "pair_acc_sig_seeds"] == "0.0000;0.6667"
    prov = pd.read_csv(out / "provenance.csv")
    assert len(prov) == 4 and prov["config_hash"].nunique() == 4
    assert "python train.py loss=hinge seed=1" in set(prov["command"])
    assert "--from-runs" in (out / "commands.md").read_text()
    assert (out / "loss_ablation_acc_sig.png").stat().st_size > 5000


def test_ablation_refuses_runs_on_different_pairs(tmp_path):
    _fake_run(tmp_path / "s" / "0", "bradley_terry", 0, [1, -1, 1, -1])
    _fake_run(tmp_path / "s" / "1", "hinge", 0, [1, -1, 1, -1])
    pd.read_csv(tmp_path / "s" / "1" / "test_pair_scores.csv").iloc[:3].to_csv(tmp_path / "s" / "1" / "test_pair_scores.csv", index=False)
    with pytest.raises(ValueError, match="share a test split"):
        main(["loss_ablation", "--from-runs", str(tmp_path / "s"), "--out", str(tmp_path / "r")])


def test_help_lists_every_study_and_a_missing_entry_point_is_named(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in STUDIES:
        assert name in text
    assert "loss_ablation" in text and "ready" in text
    import pushgen.reproduce.common as common
    monkeypatch.setattr(common, "REPO_ROOT", REPO / "no-such-checkout")
    assert main(["loss_ablation"]) == 2
    assert "lacks train.py" in capsys.readouterr().err


def test_sweep_objective_turns_nan_into_a_failed_trial():
    assert sweep_objective({"val": {"pair_acc_sig": 0.7}}) == 0.7
    assert sweep_objective({"val": {"pair_acc_sig": float("nan")}}) is None
    assert sweep_objective({}) is None


@pytest.mark.slow
def test_optuna_sweep_survives_a_failing_trial_and_tables_every_trial(tmp_path):
    """The real hparams_search config with a tiny search space: lr -1 fails the config check."""
    cfg = yaml.safe_load((REPO / "conf" / "hparams_search" / "reward_optuna.yaml").read_text())
    cfg["hydra"]["sweeper"].update(n_trials=2, params={"optim.lr": "choice(0.003, -1.0)", "data.batch_size": "choice(8)",
                                                        "loss": "choice(bt_margin)", "++loss.margin_scale": "choice(0.25)"})
    (tmp_path / "conf" / "hparams_search").mkdir(parents=True)
    (tmp_path / "conf" / "hparams_search" / "tiny.yaml").write_text("# @package _global_\n" + yaml.safe_dump(cfg))
    ab_table(n_tests=30).rename(columns={"test": "test_id", "headline": "text", "imps": "impressions"}).to_parquet(tmp_path / "ab.parquet")
    sweep = tmp_path / "sweep"
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "--config-dir", str(tmp_path / "conf"),
                           "hparams_search=tiny", "backbone=tiny_llama", "data=ab_log", f"data.path={tmp_path / 'ab.parquet'}",
                           "data.split.val=0.2", "data.split.test=0.2", "data.pairs.min_impressions=0", "logger=csv",
                           "threads=1", "trainer.limit_train_batches=2", f"hydra.sweep.dir={sweep}",
                           f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (sweep / "optimization_results.yaml").exists()
    assert main(["reward_optuna", "--from-runs", str(sweep), "--out", str(tmp_path / "rep")]) == 0
    trials = pd.read_csv(tmp_path / "rep" / "trials.csv")
    assert len(trials) == 2 and len(find_runs([sweep], include_failed=True)) == 2
    assert set(trials["state"]) == {"complete", "failed"}          # seeded sampler: both lr values drawn
    failed = trials[trials["state"] == "failed"]
    assert (failed["optim.lr"] == -1.0).all() and failed["error"].str.contains("optim.lr").all()
    assert trials.loc[trials["state"] == "complete", "objective_val_pair_acc_sig"].between(0, 1).all()


def test_generator_studies_read_run_folders(tmp_path):
    """fig3_backbones draws each run's training loss; best_of_n tabulates metrics.json's selection."""
    for name, losses in (("small", [4.0, 3.0, 2.0]), ("big", [3.0, 2.0, 1.0])):
        run = tmp_path / "runs" / name
        _fake_run(run, "bradley_terry", 0, [1, 1, 1, 1])
        (run / "config_resolved.yaml").write_text(yaml.safe_dump({"backbone": {"name": name}, "seed": 0}))
        (run / "metrics.json").write_text(json.dumps({"selection": {"replacement_rate": 0.5 if name == "big" else 0.25,
                                                                    "curve": [1, 2]}}))
        (run / "csv" / "version_0").mkdir(parents=True)
        pd.DataFrame({"step": [0, 1, 2], "train/loss_step": losses}).to_csv(run / "csv" / "version_0" / "metrics.csv", index=False)
    assert main(["fig3_backbones", "--from-runs", str(tmp_path / "runs"), "--out", str(tmp_path / "fig3")]) == 0
    table = pd.read_csv(tmp_path / "fig3" / "loss_curves.csv").set_index("backbone")
    assert table.loc["small", "final_train_loss_mean10"] == 3.0 and table.loc["big", "steps"] == 2
    assert (tmp_path / "fig3" / "loss_curves.png").stat().st_size > 5000
    assert main(["best_of_n", "--from-runs", str(tmp_path / "runs"), "--out", str(tmp_path / "bon")]) == 0
    sel = pd.read_csv(tmp_path / "bon" / "selection.csv").set_index("run")
    assert sel.loc["big", "replacement_rate"] == 0.5 and "curve" not in sel      # scalars only
