"""What every study shares: finding finished run folders, reading them, running a study's sweep,
and writing a report folder with its provenance (the commands and config hashes behind it)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pushgen.utils.config import REPO_ROOT
from pushgen.utils.run import write_atomic


@dataclass(frozen=True)
class Run:
    """A finished run folder: its resolved config, metrics.json and how it was launched."""
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    overrides: list[str]
    config_hash: str

    def get(self, dotted: str, default=None):
        node: Any = self.config
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node


def _config_text(folder: Path) -> str | None:
    for name in ("config_resolved.yaml", ".hydra/config.yaml"):
        if (folder / name).exists():
            return (folder / name).read_text()
    return None


def config_hash(text: str) -> str:
    """A short hash of a run's resolved config with its run-specific paths removed, so two runs of
    the same settings share a hash whatever folder they wrote to."""
    cfg = yaml.safe_load(text) or {}
    cfg.pop("paths", None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_run(folder: str | Path, finished: bool = True) -> Run:
    """A run folder; with ``finished=False`` also a job that failed (its metrics are then empty)."""
    folder = Path(folder)
    text = _config_text(folder)
    has_metrics = (folder / "metrics.json").exists()
    if text is None or (finished and not has_metrics):
        raise FileNotFoundError(f"{folder} is not a finished run folder (needs metrics.json and "
                                "config_resolved.yaml or .hydra/config.yaml)")
    over_file = folder / ".hydra" / "overrides.yaml"
    overrides = list(yaml.safe_load(over_file.read_text()) or []) if over_file.exists() else []
    metrics = json.loads((folder / "metrics.json").read_text()) if has_metrics else {}
    return Run(folder, yaml.safe_load(text) or {}, metrics, overrides, config_hash(text))


def find_runs(dirs: Sequence[str | Path], include_failed: bool = False) -> list[Run]:
    """Every finished run folder at or below the given folders (a sweep folder holds one per job),
    in path order; with ``include_failed`` every job Hydra started. A folder holding none is an error."""
    runs = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"--from-runs {d}: no such folder")
        marker = ".hydra/config.yaml" if include_failed else "metrics.json"
        found = {p.parent.parent if include_failed else p.parent for p in d.rglob(marker)}
        if (d / marker).exists():
            found.add(d)
        found = sorted((f for f in found if _config_text(f) is not None),
                       key=lambda f: [int(x) if x.isdigit() else x for x in f.parts])
        if not found:
            raise FileNotFoundError(f"--from-runs {d}: no {'job' if include_failed else 'finished run'} folder in it")
        runs.extend(load_run(f, finished=not include_failed) for f in found)
    return runs


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip()[:12] + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_provenance(out: Path, study: str, runs: Sequence[Run], command: str | None, entry: str,
                     sources: Sequence[str | Path]) -> None:
    """provenance.csv (one row per run: folder, config hash, the command that made it) and
    commands.md (how to rebuild this report)."""
    rows = [{"run": str(r.path), "config_hash": r.config_hash,
             "command": f"python {entry} " + " ".join(r.overrides)} for r in runs]
    write_atomic(out / "provenance.csv", pd.DataFrame(rows).to_csv(index=False))
    lines = [f"# {study}: how this report was made", "",
             f"Code: commit {git_commit()}.", ""]
    if command:
        lines += ["Sweep that produced the runs:", "", "```bash", command, "```", ""]
    lines += ["Rebuild this report from the same run folders:", "", "```bash",
              f"python -m pushgen.reproduce {study} --from-runs " + " ".join(str(s) for s in sources),
              "```", "", "| run | config hash | command |", "| --- | --- | --- |"]
    lines += [f"| {Path(r['run']).name} | `{r['config_hash']}` | `{r['command']}` |" for r in rows]
    write_atomic(out / "commands.md", "\n".join(lines) + "\n")


@dataclass(frozen=True)
class Study:
    """One study: the paper result it reproduces, the sweep that makes its runs, and the function that
    turns finished run folders into a report folder."""
    name: str
    reproduces: str
    entry: str                     # the entry point its runs come from (train.py, sft.py, ...)
    summarise: Callable[[list[Run], Path], dict[str, Any]]
    multirun: bool = True
    requires: tuple[str, ...] = ()  # entry points that must exist in the checkout
    group: str = "experiment"       # the config group holding conf/<group>/<name>.yaml
    include_failed: bool = False    # also read jobs that failed (a sweep's trial table)

    def missing(self) -> list[str]:
        """Files the sweep needs that this checkout lacks: its entry points and its config."""
        need = (self.entry, *self.requires, f"conf/{self.group}/{self.name}.yaml")
        return [r for r in need if not (REPO_ROOT / r).exists()]

    def sweep_command(self, sweep_dir: Path, overrides: Sequence[str] = ()) -> list[str]:
        where = f"hydra.sweep.dir={sweep_dir}" if self.multirun else f"hydra.run.dir={sweep_dir}"
        return [sys.executable, str(REPO_ROOT / self.entry), *(["-m"] if self.multirun else []),
                f"{self.group}={self.name}", where, *overrides]
