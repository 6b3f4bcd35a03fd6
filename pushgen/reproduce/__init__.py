"""One command per study: ``python -m pushgen.reproduce STUDY`` runs the study's sweep and writes
``reports/STUDY/`` (figures as PNG, tables as CSV and markdown, the commands and config hashes
behind them); ``--from-runs DIR ...`` builds the same report from finished run folders instead.

Each study's sweep is ``conf/experiment/<study>.yaml``; STUDIES says what each reproduces.
"""

from __future__ import annotations

from pushgen.reproduce import fig4, generator, loss_ablation, sweeps
from pushgen.reproduce.common import Run, Study, find_runs, load_run

STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("fig3_backbones", "paper Fig. 3: SFT loss curves of several generator backbones",
          entry="sft.py", summarise=generator.loss_curves),
    Study("fig4_reward_analysis", "paper Fig. 4: the reward model's classification ability, with intervals "
          "over tests, calibration, top-1 within tests and Kendall tau (new)", entry="train.py",
          summarise=fig4.summarise, multirun=False),
    Study("loss_ablation", "new: every reward loss x 3 seeds on one test split (BT, BT+margin, soft BCE, hinge, "
          "Plackett-Luce, binomial)", entry="train.py", summarise=loss_ablation.summarise),
    Study("category_ablation", "paper's category prompts: the generator with and without the category in "
          "the prompt", entry="generate.py", requires=("sft.py",), summarise=generator.metrics_table("selection")),
    Study("best_of_n", "paper's selection: reward of the best of N candidates against N and the human text",
          entry="generate.py", summarise=generator.metrics_table("selection")),
    Study("reward_optuna", "new: Optuna search over lr, batch, loss, margin scale; every trial (failed ones too) "
          "in one table", entry="train.py", summarise=sweeps.trial_table, group="hparams_search", include_failed=True),
)}

__all__ = ["STUDIES", "Run", "Study", "find_runs", "load_run"]
