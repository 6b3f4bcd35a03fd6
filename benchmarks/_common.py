"""Shared set-up for the benchmarks: the real Upworthy pairs, the default data config, timers and
the machine's peak matmul rate (the denominator of model FLOP utilisation)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("PUSHGEN_MODELS_DIR", REPO.parent / "shared" / "models"))
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
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


def peak_matmul_flops(n: int = 1024, repeats: int = 20, dtype=torch.float32) -> float:
    """Best-of FLOP/s of an n x n x n torch.matmul on this machine (2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls: all but embedding tables (a lookup costs no FLOPs)."""
    embed = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embed)
