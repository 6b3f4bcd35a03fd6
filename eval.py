"""Score every pair of an A/B file with a trained reward model:
`python eval.py ckpt_path=PATH data.path=FILE` (see conf/eval.yaml). Writes metrics.json with
pair_acc, pair_acc_sig, auc, n_pairs, n_pairs_sig into the run folder.
"""

from __future__ import annotations

from pushgen.utils.config import REPO_ROOT, offline_defaults

offline_defaults()  # before hydra's instantiation imports transformers

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="eval")
def main(cfg: DictConfig) -> None:
    from pushgen.tasks.entry import run_task
    run_task(cfg, "eval")


if __name__ == "__main__":
    main()
