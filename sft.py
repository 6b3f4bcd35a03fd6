"""Fine-tune the category-controllable generator: `python sft.py [overrides]` (see conf/sft.yaml).

Examples:
  python sft.py                                          # SmolLM2-135M + LoRA on the Upworthy best arms
  python sft.py backbone=stories260k sft.lora.enabled=false prompt.category=none
  python sft.py -m experiment=fig3_backbones             # the backbone loss-curve study
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")  # no hub lookups unless the user asks for them
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pushgen.utils.config import REPO_ROOT  # noqa: E402  (also registers the resolvers)


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="sft")
def main(cfg: DictConfig) -> float | None:
    from pushgen.tasks.entry import run_task
    metrics = run_task(cfg, "sft")
    return metrics.get("best_val_loss")  # a number for sweepers


if __name__ == "__main__":
    main()
