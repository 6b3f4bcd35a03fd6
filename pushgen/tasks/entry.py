"""The wrapper every entry point goes through: print and save the config tree, run the task, and
always close the loggers (so multirun jobs never share a W&B run)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lightning.pytorch.utilities.exceptions import SIGTERMException

from pushgen.utils.config import print_config_tree
from pushgen.utils.guard import check_run_dir
from pushgen.utils.run import closing_loggers
from pushgen.utils.schema import ConfigError, validate_config

log = logging.getLogger(__name__)


def run_task(cfg: DictConfig, which: str) -> dict[str, Any]:
    from pushgen.tasks import reward

    if which not in ("train", "eval"):
        raise ValueError(f"unknown task '{which}'")
    # Every key, type and required value is checked before anything is read or written.
    try:
        validate_config(cfg, which)
    except ConfigError as err:
        log.error("%s", err)  # in a sweep, the job's own log then says why the trial failed
        raise
    out = Path(cfg.paths.output_dir)
    # Two runs in one folder would mix checkpoints and logs: refuse instead of overwriting.
    check_run_dir(out, resuming=which == "train" and bool(cfg.get("ckpt_path")))
    out.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg, save_to=out / "config_tree.txt")
    log.info("run folder: %s", out)
    with closing_loggers():
        try:
            return reward.train(cfg) if which == "train" else reward.evaluate(cfg)
        except SIGTERMException:
            # Preempted: the checkpoint was saved; exit like a process killed by SIGTERM (128 + 15),
            # not with status 0 as if the run had finished.
            log.warning("stopped by SIGTERM; resume with: python train.py hydra.run.dir=%s ckpt_path=last", out)
            raise SystemExit(143) from None
        except Exception:
            # The cause goes into the run folder's log too, not only to the terminal.
            log.exception("%s failed", which)
            raise


def sweep_objective(metrics: dict[str, Any], key: str = "pair_acc_sig") -> float | None:
    """The value a sweeper maximises: validation ``key``. NaN or missing becomes None, which the Optuna
    sweeper records as a failed trial; a NaN itself would make it raise and end the whole search."""
    value = (metrics.get("val") or {}).get(key)
    if value is None or value != value:
        log.warning("objective val/%s is %s: this trial counts as failed", key, value)
        return None
    return float(value)
