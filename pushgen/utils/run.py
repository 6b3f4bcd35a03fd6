"""What every task needs around it: seeding, thread settings, loggers that are always closed, and
files written whole (temporary name, then rename) so a crash never leaves a file that looks done."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int | None) -> None:
    # `seed=0` is a seed: only None means "no seed".
    if seed is not None:
        L.seed_everything(int(seed), workers=True)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def write_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def closing_loggers():
    """Finish the W&B run whatever happens, so the next job of a multirun starts its own run."""
    try:
        yield
    finally:
        try:
            import wandb
            if wandb.run is not None:
                wandb.finish()
        except Exception as exc:  # closing must never hide the real error
            log.warning("could not close the W&B run: %s", exc)
