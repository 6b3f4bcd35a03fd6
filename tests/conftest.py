"""Shared fixtures: offline, single-threaded, and a small hand-made A/B log."""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# The same environment variables the configs read (conf/paths/default.yaml).
DATA_DIR = Path(os.environ.get("PUSHGEN_DATA_DIR", SHARED / "data"))
MODELS_DIR = Path(os.environ.get("PUSHGEN_MODELS_DIR", SHARED / "models"))
UPWORTHY = DATA_DIR / "upworthy" / "upworthy_exploratory_dev.parquet"
STORIES = MODELS_DIR / "stories260K"

COLUMNS = {"test_id": "test", "text": "headline", "evidence": "lede", "impressions": "imps",
           "clicks": "clicks", "time": "week", "image": "image", "first_place": None, "category": None}


def ab_table(n_tests: int = 12, seed: int = 0) -> pd.DataFrame:
    """A small A/B log with realistic shape: 3 texts per test, one text shown with two images."""
    import numpy as np
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tests):
        for k in range(3):
            for img in range(2 if k == 0 else 1):
                imps = int(rng.integers(2950, 3050))  # balanced, as a working randomiser gives
                rate = 0.01 + 0.01 * k + 0.002 * (t % 3)
                rows.append({"test": f"t{t}", "headline": f"Story {t} headline version {k} <b>now</b>",
                             "lede": f"<p>Lede of story {t} &amp; more</p>", "imps": imps,
                             "clicks": int(rng.binomial(imps, rate)), "week": 201450 + t % 3, "image": f"img{img}"})
    return pd.DataFrame(rows)


def data_cfg(path: Path, **over) -> dict:
    cfg = {"path": str(path), "format": "auto", "columns": dict(COLUMNS), "on_invalid": "raise",
           "require_evidence": False, "exclude_time": None, "srm": {"enabled": False, "alpha": 0.001},
           "pairs": {"min_impressions": 0, "max_pvalue": 1.0, "fdr_q": None, "weighting": "uniform"},
           "split": {"val": 0.2, "test": 0.2}, "batch_size": 8, "eval_batch_size": 16, "group_by_test": True,
           "num_workers": 0}
    cfg.update(over)
    return cfg


@pytest.fixture
def ab_file(tmp_path) -> Path:
    path = tmp_path / "ab.parquet"
    ab_table().to_parquet(path)
    return path
