"""Listwise and pointwise losses train a tiny model end to end (whole-test batches, pairwise metrics,
the classification study after testing); the notebooks execute against that run so they do not rot."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from conftest import REPO, ab_table
from test_reproduce import _fake_run
from test_train_eval import _cfg

from pushgen.tasks.entry import run_task


@pytest.fixture(scope="module")
def arm_loss_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("arm_losses")
    data = root / "ab.parquet"
    ab_table(n_tests=30).to_parquet(data)
    runs = {}
    for loss in ("plackett_luce", "binomial"):
        cfg = _cfg("train", root / loss, data, [f"loss={loss}", "backbone=tiny_llama", "logger=csv",
                                                "trainer.max_epochs=3", "trainer.val_check_interval=1.0", "optim.lr=3e-3",
                                                "data.batch_size=8", "baselines=false", "task.analysis_boot=100"])
        runs[loss] = (root / loss, run_task(cfg, "train"))
    return runs


@pytest.mark.parametrize("loss", ["plackett_luce", "binomial"])
def test_arm_losses_train_and_report_pairwise_metrics(arm_loss_runs, loss):
    out, metrics = arm_loss_runs[loss]
    log = pd.read_csv(out / "csv" / "version_0" / "metrics.csv")
    epochs = log["train/loss_epoch"].dropna().to_numpy()
    assert len(epochs) == 3 and epochs[-1] < epochs[0]
    assert metrics["test"]["n_pairs"] > 0 and 0 <= metrics["test"]["pair_acc"] <= 1
    assert "pair_acc[all pairs]" in metrics["classification"]
    assert (out / "plots" / "reliability.png").stat().st_size > 5000
    assert "kendall_tau" in (out / "plots" / "classification.md").read_text()


def _execute(name: str, env: dict) -> None:
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_reward_analysis_notebook_runs_on_a_finished_run(arm_loss_runs):
    out, _ = arm_loss_runs["plackett_luce"]
    _execute("reward_analysis.ipynb", {"PUSHGEN_RUN": str(out), "PUSHGEN_N_BOOT": "50"})


def test_loss_ablation_notebook_runs_on_a_sweep(tmp_path):
    _fake_run(tmp_path / "s" / "0", "bradley_terry", 0, [1, -1, 1, -1])
    _fake_run(tmp_path / "s" / "1", "hinge", 0, [1, 1, -1, 1])
    _execute("loss_ablation.ipynb", {"PUSHGEN_SWEEP": str(tmp_path / "s"), "PUSHGEN_N_BOOT": "20"})
    assert json.loads((tmp_path / "s" / "0" / "metrics.json").read_text())["val"]["pair_acc_sig"] == 0.6
