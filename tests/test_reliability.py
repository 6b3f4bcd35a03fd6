"""Reliability: preempted runs resume to the same numbers, runs are deterministic, bad configs fail
before the data is read, files are written whole, checkpoints load safely, flaky trackers and
failed sweep jobs lose nothing, long inputs are cut by an explicit policy and counted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _runs import REPO, train_cfg
from conftest import ab_table

from pushgen.tasks.entry import run_task
from pushgen.utils.schema import ConfigError

# A run small enough for a busy 2-core box: ~8 training batches per epoch, two epochs.
COMMON = ["backbone=tiny_llama", "logger=csv", "baselines=false", "trainer.val_check_interval=1.0",
          "trainer.max_epochs=2", "data.batch_size=4", "optim.lr=3e-3", "threads=1", "seed=0",
          "callbacks.resume_checkpoint.every_n_train_steps=3", "task.export_model=false",
          "trainer.enable_progress_bar=false"]
# Metrics of the resumed run equal the uninterrupted run's to this absolute tolerance (on this CPU
# they are bit-identical; the tolerance only allows for float summation order elsewhere).
TOL = 1e-6
# Keys of metrics.json that name files in the run's own folder, so differ between two folders.
PATH_KEYS = ("best_ckpt", "plots", "reward_model")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "ab.parquet"
    ab_table(n_tests=15).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """An uninterrupted run: what every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    return out, run_task(train_cfg(out, data, COMMON), "train")


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in PATH_KEYS}


SIGNAL = ["+callbacks.signal._target_=_runs.SignalAtStep"]


def _interrupted_run(out: Path, data: Path, step: int, sig: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    overrides = COMMON + list(extra) + SIGNAL + [f"+callbacks.signal.step={step}", f"+callbacks.signal.sig={int(sig)}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "tests" / "_runs.py"), str(out), str(data), json.dumps(overrides)],
                          env=env, capture_output=True, text=True, timeout=300)


def _assert_same_metrics(got: dict, want: dict) -> None:
    for split in ("val", "test"):
        assert set(got[split]) == set(want[split])
        for key, value in want[split].items():
            assert got[split][key] == pytest.approx(value, abs=TOL), (split, key)
    assert Path(got["best_ckpt"]).name == Path(want["best_ckpt"]).name   # the same step was best


# --------------------------------------------------------------------------------- 1. resume
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_run_resumes_to_the_same_metrics_and_wandb_run(tmp_path, data, reference, sig):
    ref_out, ref = reference
    out = tmp_path / "run"
    wandb = ["logger=wandb"] if sig == signal.SIGTERM else []
    # SIGTERM in the first epoch, sent to this process (Lightning's handler takes it; pytest sees the
    # exit); SIGKILL in a subprocess, in the second epoch after a validation picked a best checkpoint.
    handler = signal.getsignal(signal.SIGTERM)
    if sig == signal.SIGTERM:
        with pytest.raises(SystemExit) as stopped:
            run_task(train_cfg(out, data, COMMON + wandb + SIGNAL + ["+callbacks.signal.step=5",
                                                                     f"+callbacks.signal.sig={int(sig)}"]), "train")
        returncode = stopped.value.code
    else:
        returncode = _interrupted_run(out, data, step=11, sig=sig).returncode
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    steps_per_epoch = -(-ref["data"]["pairs_train"] // 4)
    if sig == signal.SIGTERM:
        # Preemption: a checkpoint of the very step it stopped at, then exit status 128 + 15.
        assert returncode == 143 and last["global_step"] == 5
        assert signal.getsignal(signal.SIGTERM) == handler          # Lightning put the old handler back
    else:
        # Killed outright: the newest periodic checkpoint (every 3 steps) is what is left.
        assert returncode == -signal.SIGKILL
        assert last["global_step"] == 9
    assert steps_per_epoch == 7 and last["global_step"] % steps_per_epoch != 0          # mid-epoch
    # A dead run leaves nothing that looks finished, and no half-written file under a real name.
    assert not (out / "metrics.json").exists() and not list(out.glob("*test_pair_scores.csv"))
    assert not list((out / "checkpoints").glob(".*.tmp*"))

    resumed = run_task(train_cfg(out, data, COMMON + wandb + ["ckpt_path=last"]), "train")
    _assert_same_metrics(resumed, ref)
    assert json.loads((out / "metrics.json").read_text())["test"] == resumed["test"]
    if sig == signal.SIGTERM:
        run_id = (out / "wandb_id.txt").read_text().strip()
        runs = sorted((out / "wandb").glob("offline-run-*"))
        assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)   # one W&B run, continued


def test_mid_epoch_resume_neither_repeats_nor_skips_batches():
    from pushgen.data.collate import PairDataset, ResumableDataLoader, TestGroupedBatchSampler
    pairs = pd.DataFrame({"chosen": np.arange(50), "rejected": np.arange(50) + 50, "soft_label": 0.7,
                          "weight": 1.0, "p_value": 0.5, "ctr_diff": 0.01, "z": 1.0})
    codes = np.repeat(np.arange(17), 3)[:50]

    def loader(grouped: bool, whole: bool):
        sampler = TestGroupedBatchSampler(codes if grouped else None, 4, seed=0, n=50, whole_tests=whole)
        return ResumableDataLoader(PairDataset(pairs), batch_sampler=sampler, collate_fn=lambda b: [x["index"] for x in b])

    # whole_tests: batches of whole tests (listwise/pointwise losses) resume on the same boundaries
    for grouped, whole in ((True, False), (False, False), (True, True)):
        full = loader(grouped, whole)
        full.batch_sampler.sampler.set_epoch(3)
        want = list(full)
        first = loader(grouped, whole)
        first.batch_sampler.sampler.set_epoch(3)
        it = iter(first)
        seen = [next(it) for _ in range(5)]
        state = first.state_dict()
        again = loader(grouped, whole)
        again.load_state_dict(state)
        again.batch_sampler.sampler.set_epoch(3)
        assert seen + list(again) == want and state == {"epoch": 3, "batches": 5}
        assert sorted(i for b in want for i in b) == list(range(50))
        if whole:
            # tests of 3 (one of 2) pairs and batches of 4: each batch is exactly one whole test
            assert all(len(set(codes[b])) == 1 and len(b) == (codes == codes[b[0]]).sum() for b in want)
        # The order depends on the epoch, not on how many passes a sampler object made before.
        other = loader(grouped, whole)
        other.batch_sampler.sampler.set_epoch(4)
        assert list(other) != want


# ---------------------------------------------------------------------------- 2. determinism
def test_the_same_seed_gives_identical_metrics_json(tmp_path, data, reference):
    ref_out, _ = reference
    out = tmp_path / "again"
    run_task(train_cfg(out, data, COMMON), "train")               # COMMON sets seed=0: a real seed
    a = json.loads((ref_out / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert _comparable(a) == _comparable(b)
    assert pd.read_csv(ref_out / "pairs.csv.gz").equals(pd.read_csv(out / "pairs.csv.gz"))
    assert (ref_out / "test_pair_scores.csv").read_text() == (out / "test_pair_scores.csv").read_text()


def test_splits_follow_the_seed(tmp_path):
    from conftest import data_cfg

    from pushgen.data.pipeline import prepare
    path = tmp_path / "ab.parquet"
    ab_table(n_tests=40).to_parquet(path)
    cfg = data_cfg(path)
    a, b, c = (prepare(cfg, seed=s).pairs for s in (0, 0, 1))
    held_out = lambda pairs: set(pairs.loc[pairs["split"] == "test", "test_id"])  # noqa: E731
    assert a.equals(b) and held_out(a) != held_out(c)


# ------------------------------------------------------------------------ 3. config validation
def test_a_bad_config_fails_before_any_data_is_read(tmp_path, data, monkeypatch):
    import pushgen.data.pipeline as pipeline

    def never(*a, **k):
        raise AssertionError("the data was read before the config was checked")

    monkeypatch.setattr(pipeline, "read_table", never)
    cfg = train_cfg(tmp_path / "run", data, ["backbone=tiny_llama", "reward.max_length=long", "backbone.kind=encode",
                                             "+reward.max_lenght=3", "+trainer.max_epoch=3", "optim.lr=-1"])
    with pytest.raises(ConfigError) as err:
        run_task(cfg, "train")
    msg = str(err.value)
    assert "5 problems" in msg
    assert "reward.max_length: expected int, got 'long'" in msg
    assert "backbone.kind: 'encode' is not allowed; allowed: 'auto', 'encoder', 'decoder'" in msg
    assert re.search(r"reward\.max_lenght: unknown key; allowed: .*max_length.*truncation", msg)
    assert re.search(r"trainer\.max_epoch: not an argument of lightning\.Trainer; allowed: .*max_epochs", msg)
    assert "optim.lr: -1 is outside the allowed range" in msg
    assert not (tmp_path / "run").exists()                       # nothing was written either


def test_missing_required_values_are_named(tmp_path, data):
    from hydra import compose, initialize_config_dir

    from pushgen.utils.schema import validate_config
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        ev = compose(config_name="eval")
        own = compose(config_name="train", overrides=["data=ab_log"])
        hf = compose(config_name="train", overrides=["backbone=hf", "loss.name=listnet2"])
    with pytest.raises(ConfigError, match=r"ckpt_path: a value is required \(it is \?\?\? in the config\)"):
        validate_config(ev, "eval")
    with pytest.raises(ConfigError, match=r"data\.path: a value is required"):
        validate_config(own, "train")
    with pytest.raises(ConfigError) as err:
        validate_config(hf, "train")
    assert "backbone.name_or_path: a value is required" in str(err.value)
    assert ("loss.name: 'listnet2' is not allowed; allowed: 'binomial', 'bradley_terry', 'bt_margin', 'hinge', "
            "'plackett_luce', 'soft_bce'") in str(err.value)


def test_prompt_placeholders_are_checked_with_the_config():
    from hydra import compose, initialize_config_dir

    from pushgen.utils.schema import validate_config
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        bad = compose(config_name="sft", overrides=["prompt.style_line='Style: {nam}'",
                                                    "prompt.evidence_line='The story'"])
        ok = compose(config_name="sft", overrides=["prompt.style_line='Write it as {name}: {{not a field}}'"])
    with pytest.raises(ConfigError) as err:
        validate_config(bad, "sft")
    assert "prompt.style_line: unknown placeholder(s) {nam} in 'Style: {nam}'; allowed: {description}, {name}" in str(err.value)
    assert "prompt.evidence_line: 'The story' lacks {evidence}" in str(err.value)
    validate_config(ok, "sft")


def test_another_task_registers_its_group_and_loss_with_one_dataclass(monkeypatch):
    from dataclasses import dataclass

    from omegaconf import OmegaConf

    from pushgen.utils import schema
    monkeypatch.setattr(schema, "GROUPS", dict(schema.GROUPS))
    monkeypatch.setattr(schema, "LOSSES", dict(schema.LOSSES))

    @schema.register_group("generate")
    @dataclass(kw_only=True)
    class Generate:
        num_candidates: int = schema.bounded(1, default=4)

    @schema.register_loss("margin")
    @dataclass(kw_only=True)
    class Margin(schema.LossConfig):
        margin_scale: float = 1.0

    base = {"seed": 0, "name": "x", "threads": None}
    schema.validate_config(OmegaConf.create({**base, "generate": {"num_candidates": 8},
                                             "loss": {"name": "margin", "use_weights": True, "margin_scale": 2.0}}), "gen")
    with pytest.raises(ConfigError) as err:
        schema.validate_config(OmegaConf.create({**base, "generate": {"num_candidate": 0},
                                                 "loss": {"name": "margin", "margin_scal": 1}}), "gen")
    assert "generate.num_candidate: unknown key; allowed: num_candidates" in str(err.value)
    assert "loss.margin_scal: unknown key; allowed: center_weight, margin_scale, name, use_weights" in str(err.value)


# ------------------------------------------------------------------------------ 5. atomic writes
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from pushgen.utils.checkpoint import AtomicCheckpointIO
    from pushgen.utils.run import atomic_dir, write_json
    write_json(tmp_path / "metrics.json", {"a": 1})
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.ones(3)}, tmp_path / "last.ckpt")

    def half_then_die(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_die)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"w": torch.zeros(3)}, tmp_path / "last.ckpt")
    monkeypatch.undo()

    def no_sync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", no_sync)     # the new text is written, then the disk fails
    with pytest.raises(OSError, match="I/O error"):
        write_json(tmp_path / "metrics.json", {"a": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1}
    assert torch.equal(io.load_checkpoint(tmp_path / "last.ckpt")["w"], torch.ones(3))
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "reward_model") as d:
            (d / "head.safetensors").write_bytes(b"x")
            raise RuntimeError("died while exporting")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "metrics.json"]


# ------------------------------------------------------------------------------ 6. safe loading
def test_every_torch_load_is_weights_only_and_remote_code_is_off_by_default():
    calls = []
    for path in (REPO / "pushgen").rglob("*.py"):
        for m in re.finditer(r"torch\.load\((.*?)\)\s*(?:\[|$|\n)", path.read_text(), flags=re.S):
            calls.append((path.name, "weights_only=True" in m.group(1)))
    assert calls and all(ok for _, ok in calls), calls
    for yaml in (REPO / "conf" / "backbone").glob("*.yaml"):
        assert "trust_remote_code: false" in yaml.read_text(), yaml.name
    from pushgen.utils.schema import BackboneConfig
    assert BackboneConfig(source="hf").trust_remote_code is False


def test_resuming_with_another_backbone_says_which_keys_differ(tmp_path, data, reference):
    from pushgen.utils.checkpoint import CheckpointMismatch
    ref_out, _ = reference
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes((ref_out / "checkpoints" / "last.ckpt").read_bytes())
    cfg = train_cfg(out, data, COMMON + ["ckpt_path=last", "backbone.tiny.hidden_size=64"])
    with pytest.raises(CheckpointMismatch) as err:
        run_task(cfg, "train")
    msg = str(err.value)
    assert "backbone.tiny.hidden_size: checkpoint 32, config 64" in msg
    assert "weight model.backbone_model.embed_tokens.weight: checkpoint (256, 32), model (256, 64)" in msg


# ---------------------------------------------------------------------- 7. flaky services
def test_wandb_that_cannot_start_leaves_a_csv_run_and_long_texts_are_cut_not_dropped(tmp_path, monkeypatch, caplog):
    import wandb
    table = ab_table(n_tests=12)
    long_rows = [0, 7, 20]
    table.loc[long_rows, "headline"] = [f"{'very ' * 300} long headline number {i}" for i in long_rows]
    path = tmp_path / "ab.parquet"
    table.to_parquet(path)

    def no_service(*a, **k):
        raise RuntimeError("wandb service did not start")

    monkeypatch.setattr(wandb, "init", no_service)
    cfg = train_cfg(tmp_path / "run", path, ["backbone=tiny_llama", "debug=fast", "logger=wandb", "threads=1",
                                             "reward.max_length=24", "task.export_model=false"])
    with caplog.at_level("WARNING"):
        metrics = run_task(cfg, "train")
    assert "logger 'wandb' could not start (RuntimeError: wandb service did not start)" in caplog.text
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").exists() and metrics["test"]["n_pairs"] > 0
    # Three long headlines are cut and counted, and every pair that has one is still there.
    tokens = metrics["tokens"]
    assert tokens["text_truncated"] == 3 and tokens["truncation"] == "right"
    pairs = pd.read_csv(tmp_path / "run" / "pairs.csv.gz")
    long_pairs = pairs["chosen_text"].str.contains("very very") | pairs["rejected_text"].str.contains("very very")
    assert tokens["pairs_truncated"] == int(long_pairs.sum()) >= 3 * 2
    assert len(pairs) == sum(metrics["data"][f"pairs_{s}"] for s in ("train", "val", "test"))
    assert "3 of" in caplog.text and "texts cut on the right" in caplog.text


def test_long_text_policy_error_and_sides():
    from pushgen.data.errors import DataError
    from pushgen.data.tokenize import tokenize_texts
    from pushgen.models import build_tiny_backbone
    tok = build_tiny_backbone(vocab_size=300).tokenizer
    pooled = pd.DataFrame({"text": ["short one", "start " + "middle " * 60 + "finish"], "evidence": ["", ""]})
    right, rs = tokenize_texts(pooled, tok, max_length=16, use_evidence=False, kind="decoder", truncation="right")
    left, ls = tokenize_texts(pooled, tok, max_length=16, use_evidence=False, kind="decoder", truncation="left")
    assert rs["text_truncated"] == ls["text_truncated"] == 1 and right[0] == left[0]
    assert len(right[1]) == len(left[1]) == 16
    assert "start" in tok.decode(right[1]) and "finish" not in tok.decode(right[1])
    assert "finish" in tok.decode(left[1]) and "start" not in tok.decode(left[1])
    with pytest.raises(DataError, match=r"row 1, column 'text': 1 of 2 texts are longer than reward.max_length=16"):
        tokenize_texts(pooled, tok, max_length=16, use_evidence=False, kind="decoder", truncation="error")


def test_an_interrupted_multirun_keeps_and_lists_every_finished_job(tmp_path):
    from pushgen.utils.multirun import read_summary
    path = tmp_path / "ab.parquet"
    ab_table(n_tests=12).to_parquet(path)
    sweep = tmp_path / "sweep"
    args = ["-m", "backbone=tiny_llama", "debug=fast", "logger=csv", "threads=1", "task.export_model=false", "test=false",
            "data=ab_log", f"data.path={path}", "data.columns.test_id=test", "data.columns.text=headline",
            "data.columns.impressions=imps", "data.columns.clicks=clicks", "data.split.val=0.2", "data.split.test=0.2",
            "data.pairs.min_impressions=0", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}",
            "optim.lr=1e-3,-1"]                                  # the second job has a bad learning rate
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    jobs = read_summary(sweep)
    assert [(j["job"], j["status"]) for j in jobs] == [(0, "finished"), (1, "failed")], proc.stderr[-2000:]
    assert jobs[0]["overrides"][-1] == "optim.lr=0.001" and jobs[1]["overrides"][-1] == "optim.lr=-1"
    finished = json.loads(Path(jobs[0]["metrics"]).read_text())
    assert finished["val"]["n_pairs"] > 0 and Path(jobs[0]["dir"]) == sweep / "0"
    assert "optim.lr: -1 is outside the allowed range" in jobs[1]["error"] and jobs[1]["metrics"] is None


def test_an_encoder_text_pair_with_a_too_long_text_is_cut_not_an_exception():
    from transformers import AutoTokenizer

    from pushgen.data.tokenize import tokenize_texts
    from pushgen.models.factory import minilm_path
    tok = AutoTokenizer.from_pretrained(minilm_path())
    pooled = pd.DataFrame({"text": ["short", "start " + "word " * 80 + "finish", "medium text"],
                           "evidence": ["lede " * 100, "its lede", "tiny"]})
    ids, stats = tokenize_texts(pooled, tok, max_length=32, use_evidence=True, kind="encoder", truncation="left")
    assert [len(x) for x in ids][:2] == [32, 32] and tok.decode(ids[2]) == "[CLS] medium text [SEP] tiny [SEP]"
    assert tok.decode(ids[1]).endswith("finish [SEP]") and "its lede" not in tok.decode(ids[1])
    assert stats["truncated"] == 2 and stats["text_truncated"] == 1 and stats["truncated_rows"] == [0, 1]


def test_a_data_error_on_the_command_line_is_printed_once_without_a_traceback(tmp_path):
    path = tmp_path / "ab.csv"
    table = ab_table(n_tests=4)
    table.loc[2, "clicks"] = table.loc[2, "imps"] + 5               # more clicks than impressions
    table.to_csv(path, index=False)
    args = ["backbone=tiny_llama", "logger=csv", "threads=1", "data=ab_log", f"data.path={path}",
            "data.columns.test_id=test", "data.columns.text=headline", "data.columns.impressions=imps",
            "data.columns.clicks=clicks", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert said.count("exceed impressions") == 1 and "Traceback" not in said, said[-3000:]
    assert "exceed impressions" in (tmp_path / "run" / "train.log").read_text()   # and kept in the run's log
