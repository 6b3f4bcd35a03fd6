"""Shared set-up for the benchmarks: the real Upworthy pairs and the default data config."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from pushgen.utils.config import register_resolvers  # noqa: E402

register_resolvers()


def default_cfg(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides or [])
    with open_dict(cfg):
        cfg.paths.output_dir = str(REPO / "logs" / "bench")
    return cfg


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
