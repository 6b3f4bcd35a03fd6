"""Train a reward model on A/B-test pairs: `python train.py [overrides]` (see conf/train.yaml).

Examples:
  python train.py                                  # MiniLM reward model on the Upworthy A/B tests
  python train.py backbone=stories260k loss=soft_bce
  python train.py -m loss=bradley_terry,soft_bce seed=0,1,2
"""

from __future__ import annotations

from pushgen.utils.config import REPO_ROOT, offline_defaults

offline_defaults()  # before hydra's instantiation imports transformers

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from pushgen.tasks.entry import run_task, sweep_objective
    # A number for sweepers (Optuna): validation accuracy on significant pairs (None if NaN).
    return sweep_objective(run_task(cfg, "train"))


if __name__ == "__main__":
    main()
