"""Generate, score and select push notifications: `python generate.py generator.path=DIR reward_model=DIR`
(see conf/generate.yaml). Writes candidates.csv (every candidate with its category, score and fate),
selections.csv, top_k_per_category.csv, metrics.json, plots/ and report.md into the run folder.

Examples:
  python generate.py generator.path=logs/sft/runs/.../generator reward_model=logs/reward/runs/.../reward_model
  python generate.py ... gold_reward_model=logs/reward/runs/<other backbone>/reward_model   # reward-hacking curve
  python generate.py ... prompt=no_category                                                  # the ablation
"""

from __future__ import annotations

from pushgen.utils.config import REPO_ROOT, offline_defaults

offline_defaults()  # before hydra's instantiation imports transformers

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="generate")
def main(cfg: DictConfig) -> float | None:
    from pushgen.tasks.entry import run_task
    metrics = run_task(cfg, "generate")
    return metrics["selection"]["replacement_rate"]


if __name__ == "__main__":
    main()
