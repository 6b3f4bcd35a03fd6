"""The wrapper every entry point goes through: print and save the config tree, run the task, and
always close the loggers (so multirun jobs never share a W&B run)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pushgen.utils.config import print_config_tree
from pushgen.utils.run import closing_loggers

log = logging.getLogger(__name__)


def run_task(cfg: DictConfig, which: str) -> dict[str, Any]:
    from pushgen.tasks import reward

    out = Path(cfg.paths.output_dir)
    if (out / "metrics.json").exists() and not cfg.get("ckpt_path"):
        # Two runs in one folder would mix checkpoints and logs: refuse instead of overwriting.
        raise FileExistsError(f"{out} already holds a finished run (metrics.json); choose another "
                              "hydra.run.dir, or resume it with ckpt_path=last")
    out.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg, save_to=out / "config_tree.txt")
    log.info("run folder: %s", out)
    with closing_loggers():
        if which == "train":
            return reward.train(cfg)
        if which == "eval":
            return reward.evaluate(cfg)
        raise ValueError(f"unknown task '{which}'")
