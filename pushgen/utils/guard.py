"""Never write a run into a folder that already holds another run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def check_run_dir(out: str | Path, resuming: bool) -> None:
    """Refuse a folder with a finished run (metrics.json) or, unless resuming, with checkpoints."""
    out = Path(out)
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds a finished run (metrics.json); choose another hydra.run.dir "
                              "(or leave it unset for a new timestamped folder)")
    ckpts = list((out / "checkpoints").glob("*.ckpt")) if (out / "checkpoints").is_dir() else []
    if ckpts and not resuming:
        raise FileExistsError(f"{out} holds checkpoints of an unfinished run; resume it with ckpt_path=last, "
                              "or choose another hydra.run.dir")


class StopRun(SystemExit):
    """Hydra turns an exception raised in a callback into a warning and goes on (and would then write
    .hydra/ into the folder); a SystemExit is not caught, so the run stops here. The message is
    printed and the exit status is 1."""

    def __init__(self, exc: BaseException):
        super().__init__(f"{type(exc).__name__}: {exc}")


class RefuseUsedRunDir(Callback):
    """Runs before Hydra writes .hydra/ into the run folder, so a refused run changes nothing there."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        resuming = config.hydra.job.name == "train" and bool(config.get("ckpt_path"))
        try:
            check_run_dir(config.hydra.run.dir, resuming)
        except FileExistsError as exc:
            raise StopRun(exc) from exc
