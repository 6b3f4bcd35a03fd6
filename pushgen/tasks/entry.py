"""The wrapper every entry point goes through: print and save the config tree, run the task, and
always close the loggers (so multirun jobs never share a W&B run)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from pushgen.utils.config import print_config_tree
from pushgen.utils.guard import check_run_dir
from pushgen.utils.run import closing_loggers

log = logging.getLogger(__name__)


def _task_function(which: str) -> Callable[[DictConfig], dict[str, Any]]:
    # Imported on demand: each entry point pays only for its own task's imports.
    if which in ("train", "eval"):
        from pushgen.tasks import reward
        return reward.train if which == "train" else reward.evaluate
    if which == "generate":
        from pushgen.tasks.generate import generate
        return generate
    if which == "pipeline":
        from pushgen.tasks.pipeline import run_pipeline
        return run_pipeline
    raise ValueError(f"unknown task '{which}'")


def run_task(cfg: DictConfig, which: str) -> dict[str, Any]:
    task = _task_function(which)
    out = Path(cfg.paths.output_dir)
    # Two runs in one folder would mix checkpoints and logs: refuse instead of overwriting.
    check_run_dir(out, resuming=which == "train" and bool(cfg.get("ckpt_path")))
    out.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg, save_to=out / "config_tree.txt")
    log.info("run folder: %s", out)
    with closing_loggers():
        try:
            return task(cfg)
        except Exception:
            # The cause goes into the run folder's log too, not only to the terminal.
            log.exception("%s failed", which)
            raise
