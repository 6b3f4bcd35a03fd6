"""The wrapper every entry point goes through: print and save the config tree, run the task, and
always close the loggers (so multirun jobs never share a W&B run)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lightning.pytorch.utilities.exceptions import SIGTERMException

from pushgen.utils.config import print_config_tree
from pushgen.utils.guard import check_run_dir, is_resuming
from pushgen.utils.run import closing_loggers
from pushgen.utils.schema import BackboneUnavailable, ConfigError, validate_config

log = logging.getLogger(__name__)


TASKS = {
    # which -> (module under pushgen.tasks, function); imported on use so each entry point loads only its own.
    "train": ("reward", "train"),
    "eval": ("reward", "evaluate"),
    "sft": ("sft", "train"),
    "generate": ("generate", "generate"),
    "pipeline": ("pipeline", "run_pipeline"),
}


# Errors in what the user gave (config, data, paths, checkpoints): their message says what to do, so
# it is logged once without a traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, BackboneUnavailable)
_depth = 0  # run_task calls run_task for pipeline stages; only the outermost call ends the process


def _single_hydra_run() -> bool:
    """True inside a `python X.py ...` run (not a multirun, where a failed job is recorded and the sweep goes on)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def run_task(cfg: DictConfig, which: str) -> dict[str, Any]:
    """Run one task; in a single command-line run a user error ends the process with status 1 and its
    message printed once (no traceback). Called from Python, it raises as usual."""
    global _depth
    _depth += 1
    try:
        return _run_task(cfg, which)
    except USER_ERRORS:
        if _depth == 1 and _single_hydra_run():
            raise SystemExit(1) from None
        raise
    finally:
        _depth -= 1


def _run_task(cfg: DictConfig, which: str) -> dict[str, Any]:
    if which not in TASKS:
        raise ValueError(f"unknown task '{which}' (known: {sorted(TASKS)})")
    # Every key, type and required value is checked before anything is read or written.
    try:
        validate_config(cfg, which)
    except ConfigError as err:
        _log_user_error(err)  # in a sweep, the job's own log then says why the trial failed
        raise
    module_name, func_name = TASKS[which]
    task = getattr(importlib.import_module(f"pushgen.tasks.{module_name}"), func_name)
    out = Path(cfg.paths.output_dir)
    # Two runs in one folder would mix checkpoints and logs: refuse instead of overwriting.
    check_run_dir(out, resuming=is_resuming(cfg, which))
    out.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg, save_to=out / "config_tree.txt")
    log.info("run folder: %s", out)
    with closing_loggers():
        try:
            return task(cfg)
        except SIGTERMException:
            # Preempted: the checkpoint was saved; exit like a process killed by SIGTERM (128 + 15),
            # not with status 0 as if the run had finished.
            log.warning("stopped by SIGTERM; resume with the same command and hydra.run.dir=%s%s", out,
                        " ckpt_path=last" if which in ("train", "sft") else "")
            raise SystemExit(143) from None
        except USER_ERRORS as err:
            _log_user_error(err)
            raise
        except Exception:
            # The cause goes into the run folder's log too, not only to the terminal.
            log.exception("%s failed", which)
            raise


def _log_user_error(err: BaseException) -> None:
    if not getattr(err, "_pushgen_logged", False):  # a pipeline stage's error is logged by the stage
        log.error("%s: %s", type(err).__name__, err)
        err._pushgen_logged = True  # type: ignore[attr-defined]


def sweep_objective(metrics: dict[str, Any], key: str = "pair_acc_sig") -> float | None:
    """The value a sweeper maximises: validation ``key``. NaN or missing becomes None, which the Optuna
    sweeper records as a failed trial; a NaN itself would make it raise and end the whole search."""
    value = (metrics.get("val") or {}).get(key)
    if value is None or value != value:
        log.warning("objective val/%s is %s: this trial counts as failed", key, value)
        return None
    return float(value)
