"""Checkpoints that survive preemption: written whole (temporary name, then rename), saved every N
steps and on SIGTERM, loaded without pickle code, and checked against the config before resuming."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pushgen.utils.run import atomic_path

log = logging.getLogger(__name__)

# Config blocks that decide the model's shape and meaning: a checkpoint only fits the same ones.
MODEL_KEYS = ("backbone", "reward")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's own save writes a temporary file in the system temp folder and moves it; across
    file systems that move is a copy, and a crash mid-copy leaves a truncated `.ckpt`. Here the
    temporary file sits beside the target and is renamed in one step, after an fsync. Loading never
    runs pickled code (``weights_only=True``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return super().load_checkpoint(path, map_location=map_location or "cpu", weights_only=True)


class ResumeCheckpoint(Checkpoint):
    """Keeps `last.ckpt` fresh for resuming: after every validation and training epoch, every
    ``every_n_train_steps`` optimiser steps (what a SIGKILL falls back to), and when the run is
    preempted (SIGTERM: Lightning's signal connector sets a flag, stops after the current batch and
    calls ``on_exception``; Ctrl-C likewise). The sole writer of `last.ckpt` (ModelCheckpoint keeps
    the best one only; two writers of one name make Lightning version it as `last-v1.ckpt`). A
    ``Checkpoint`` subclass, so Lightning runs it after the other callbacks and the checkpoint holds
    their latest state (e.g. the best score so far)."""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = 50, filename: str = "last.ckpt"):
        super().__init__()
        self.path = Path(dirpath) / filename
        self.every = int(every_n_train_steps or 0)
        self._saved_at = -1

    def _save(self, trainer: L.Trainer, why: str) -> None:
        if trainer.sanity_checking:
            return
        trainer.save_checkpoint(str(self.path), weights_only=False)  # the full state: resumable (and no Lightning notice)
        self._saved_at = trainer.global_step
        log.info("saved %s at step %d (%s)", self.path, trainer.global_step, why)

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        step = trainer.global_step
        if self.every and step > 0 and step % self.every == 0 and step != self._saved_at:
            self._save(trainer, f"every {self.every} steps")

    def on_validation_end(self, trainer: L.Trainer, *_: Any) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.global_step != self._saved_at:
            self._save(trainer, "validation")

    def on_train_epoch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if trainer.global_step != self._saved_at:
            self._save(trainer, "epoch end")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn == "fit" and isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            self._save(trainer, "preempted")


class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit the configured model."""


class NotACheckpoint(ValueError):
    """A file that is not a checkpoint pushgen wrote (another format, truncated, or pickled objects)."""


def load_checkpoint_file(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` without pickled code, with a short error for a file that is not a checkpoint.
    PyTorch's own message for such a file suggests ``weights_only=False``, which would run the file's
    code; that advice is wrong for a file of unknown origin, so it is not passed on."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):   # torch.save writes a zip archive
        raise NotACheckpoint(f"{path} is not a pushgen checkpoint (not a file torch.save wrote); "
                             "give a .ckpt from a run folder's checkpoints/")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            first = "it holds pickled objects other than tensors, which are never loaded"
        raise NotACheckpoint(f"{path} is not a pushgen checkpoint ({type(exc).__name__}: {first[:160]}); "
                             "give a .ckpt from a run folder's checkpoints/") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise NotACheckpoint(f"{path} is not a pushgen checkpoint (no state_dict in it); "
                             "give a .ckpt from a run folder's checkpoints/")
    return ckpt


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_compatible(ckpt_path: str | Path, module: L.LightningModule) -> None:
    """Refuse, with the keys that differ, a checkpoint whose model config or weight shapes do not
    match ``module`` (instead of a size-mismatch traceback from deep inside load_state_dict)."""
    ckpt = load_checkpoint_file(ckpt_path, mmap=True)
    saved_hp, own_hp = ckpt.get("hyper_parameters") or {}, dict(module.hparams)
    config_diffs = []
    for block in MODEL_KEYS:
        a, b = _flatten(saved_hp.get(block) or {}), _flatten(own_hp.get(block) or {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                config_diffs.append(f"{block}.{key}: checkpoint {a.get(key)!r}, config {b.get(key)!r}")
    saved, own = ckpt.get("state_dict") or {}, module.state_dict()
    weight_diffs = [f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(own[k].shape)}"
                    for k in saved if k in own and tuple(saved[k].shape) != tuple(own[k].shape)]
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if not (config_diffs or weight_diffs or missing or unexpected):
        return
    lines = [f"checkpoint {ckpt_path} was trained with another model configuration:"]
    lines += [f"  {d}" for d in config_diffs[:20]]
    lines += [f"  weight {d}" for d in weight_diffs[:5]]
    if missing:
        lines.append(f"  weights missing from the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        lines.append(f"  weights the model does not have: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    lines.append("  -> resume with the run's own backbone/reward settings (see its config_resolved.yaml), "
                 "or start a new run without ckpt_path")
    raise CheckpointMismatch("\n".join(lines))
