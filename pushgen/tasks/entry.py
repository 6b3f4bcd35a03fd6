"""The wrapper every entry point goes through: print and save the config tree, run the task, and
always close the loggers (so multirun jobs never share a W&B run)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pushgen.utils.config import print_config_tree
from pushgen.utils.guard import check_run_dir
from pushgen.utils.run import closing_loggers

log = logging.getLogger(__name__)


TASKS = {
    # which -> (module under pushgen.tasks, function); imported on use so each entry point loads only its own.
    "train": ("reward", "train"),
    "eval": ("reward", "evaluate"),
    "sft": ("sft", "train"),
    "generate": ("generate", "generate"),
    "pipeline": ("pipeline", "run_pipeline"),
}


def run_task(cfg: DictConfig, which: str) -> dict[str, Any]:
    if which not in TASKS:
        raise ValueError(f"unknown task '{which}' (known: {sorted(TASKS)})")
    module_name, func_name = TASKS[which]
    task = getattr(importlib.import_module(f"pushgen.tasks.{module_name}"), func_name)
    out = Path(cfg.paths.output_dir)
    # Two runs in one folder would mix checkpoints and logs: refuse instead of overwriting.
    check_run_dir(out, resuming=which in ("train", "sft") and bool(cfg.get("ckpt_path")))
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
