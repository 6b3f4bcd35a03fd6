"""What every task needs around it: seeding, thread settings, loggers that are always closed, and
files written whole (temporary name, then rename) so a crash never leaves a file that looks done."""

from __future__ import annotations

import json
import logging
import os
import shutil
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


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _file_mode() -> int:
    return 0o666 & ~_umask()


def _dir_mode() -> int:
    return 0o777 & ~_umask()


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary name beside ``path``; on success it is renamed to ``path`` in one step, on
    failure it is removed. Whoever reads ``path`` sees the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes))
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path, replace: bool = False):
    """Like :func:`atomic_path` for a folder (an exported model): filled under a temporary name,
    renamed when complete. An existing folder is refused, or with ``replace=True`` (a resumed run
    re-exporting into its own folder) swapped out only once the new one is complete."""
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} exists already; it is never overwritten")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, _dir_mode())  # mkdtemp makes it private (0700)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.rename(path, old / path.name)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


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
