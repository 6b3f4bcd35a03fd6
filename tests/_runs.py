"""Helpers for the reliability tests: compose a real train config around a small A/B file, and a
callback that signals its own process at a given step (a preemption at a known point)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import lightning as L
from conftest import COLUMNS

REPO = Path(__file__).resolve().parents[1]


def train_cfg(out: Path, data: Path, overrides: list[str], name: str = "train"):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from pushgen.utils.config import register_resolvers
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.cache_dir = str(out.parent / "cache")
        cfg.data.path = str(data)
        cfg.data.columns = OmegaConf.create(COLUMNS)
        cfg.data.exclude_time = None
        cfg.data.split = {"val": 0.2, "test": 0.2}
        cfg.data.pairs.min_impressions = 0
    return cfg


class SignalAtStep(L.Callback):
    """Sends ``sig`` to this very process after optimiser step ``step`` (SIGTERM: preemption;
    SIGKILL: the process dies on the spot, nothing runs after)."""

    def __init__(self, step: int, sig: int):
        self.step, self.sig = int(step), int(sig)

    def on_train_batch_end(self, trainer, *_):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


if __name__ == "__main__":
    # python tests/_runs.py OUT DATA '["override", ...]'  -> a train run in a fresh process
    import torch
    torch.set_num_threads(1)
    from pushgen.tasks.entry import run_task
    out, data, overrides = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    run_task(train_cfg(out, data, overrides), "train")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
