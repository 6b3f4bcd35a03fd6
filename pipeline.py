"""The whole of PushGen in one command (what `make run` runs): `python pipeline.py [overrides]`.

Trains the reward model, a second "gold" reward model, fine-tunes the generator, then generates,
scores and selects notifications for held-out items; see conf/pipeline.yaml.

Examples:
  python pipeline.py                                        # CPU-sized, on the real Upworthy A/B tests
  python pipeline.py hydra.run.dir=logs/pipeline/runs/X     # resume: finished stages are reused
  python pipeline.py experiment=pushgen_paper_scale         # the same loop at paper scale (GPU)
"""

from __future__ import annotations

from pushgen.utils.config import REPO_ROOT, offline_defaults

offline_defaults()  # before hydra's instantiation imports transformers

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="pipeline")
def main(cfg: DictConfig) -> None:
    from pushgen.tasks.entry import run_task
    run_task(cfg, "pipeline")


if __name__ == "__main__":
    main()
