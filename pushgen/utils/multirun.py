"""A sweep's table of contents: every job that ends, finished or failed, appends one line to
`<sweep dir>/multirun.jsonl`. A sweep that is interrupted (a failed job stops Hydra's basic launcher,
a killed process stops everything) still lists each finished job with its folder and metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode

SUMMARY_FILE = "multirun.jsonl"


def append_line(path: Path, record: dict[str, Any]) -> None:
    # One write of one line, flushed and synced: a crash leaves earlier lines whole.
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / SUMMARY_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class MultirunSummary(Callback):
    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra if job_return.hydra_cfg is not None else None
        if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
            return
        out = Path(hydra_cfg.runtime.output_dir)
        ok = job_return.status == JobStatus.COMPLETED
        record = {"job": int(hydra_cfg.job.num), "overrides": list(job_return.overrides or []), "dir": str(out),
                  "status": "finished" if ok else "failed",
                  "metrics": str(out / "metrics.json") if (out / "metrics.json").exists() else None}
        if ok:
            record["result"] = job_return._return_value
        else:
            err = job_return._return_value
            record["error"] = f"{type(err).__name__}: {err}"[:500]
        append_line(Path(hydra_cfg.sweep.dir) / SUMMARY_FILE, record)
