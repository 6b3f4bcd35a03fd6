"""Never write a run into a folder that already holds another run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


# What a folder may already hold when a new run starts in it: Hydra writes .hydra/ and the job's log
# into the run folder before the task starts (and a pipeline stage's log is opened first, too).
STARTUP_ENTRIES = (".hydra",)


def check_run_dir(out: str | Path, resuming: bool) -> None:
    """Refuse a folder with a finished run (metrics.json); unless resuming, also one with checkpoints,
    one left by a run that failed before its first checkpoint, or one holding anything else."""
    out = Path(out)
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds a finished run (metrics.json); choose another hydra.run.dir "
                              "(or leave it unset for a new timestamped folder)")
    if resuming or not out.is_dir():
        return
    ckpts = list((out / "checkpoints").glob("*.ckpt")) if (out / "checkpoints").is_dir() else []
    if ckpts:
        raise FileExistsError(f"{out} holds checkpoints of an unfinished run; resume it with ckpt_path=last, "
                              "or choose another hydra.run.dir")
    if (out / "config_tree.txt").exists():  # written by every run right after this check
        raise FileExistsError(f"{out} holds a run that stopped before its first checkpoint (its log says why); "
                              "delete the folder to start again in it, or choose another hydra.run.dir")
    other = sorted(p.name for p in out.iterdir() if p.name not in STARTUP_ENTRIES and p.suffix != ".log")
    if other:
        raise FileExistsError(f"{out} is not empty ({', '.join(other[:5])}{' ...' if len(other) > 5 else ''}); "
                              "a run writes into a folder of its own: choose another hydra.run.dir")


def is_resuming(config: Any, which: str) -> bool:
    """Training runs resume with ckpt_path=...; a pipeline always resumes (each stage checks its own folder)."""
    return which == "pipeline" or (which in ("train", "sft") and bool(config.get("ckpt_path")))


class StopRun(SystemExit):
    """Hydra turns an exception raised in a callback into a warning and goes on (and would then write
    .hydra/ into the folder); a SystemExit is not caught, so the run stops here. The message is
    printed and the exit status is 1."""

    def __init__(self, exc: BaseException):
        super().__init__(f"{type(exc).__name__}: {exc}")


class RefuseUsedRunDir(Callback):
    """Runs before Hydra writes .hydra/ into the run folder, so a refused run changes nothing there."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        try:
            check_run_dir(config.hydra.run.dir, is_resuming(config, config.hydra.job.name))
        except FileExistsError as exc:
            raise StopRun(exc) from exc
