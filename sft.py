"""Fine-tune the category-controllable generator: `python sft.py [overrides]` (see conf/sft.yaml).

Examples:
  python sft.py                                          # SmolLM2-135M + LoRA on the Upworthy best arms
  python sft.py backbone=stories260k sft.lora.enabled=false prompt.category=none
  python sft.py -m experiment=fig3_backbones             # the backbone loss-curve study
"""

from __future__ import annotations

from pushgen.utils.config import REPO_ROOT, offline_defaults

offline_defaults()  # before hydra's instantiation imports transformers

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="sft")
def main(cfg: DictConfig) -> float | None:
    from pushgen.tasks.entry import run_task
    metrics = run_task(cfg, "sft")
    return metrics.get("best_val_loss")  # a number for sweepers


if __name__ == "__main__":
    main()
