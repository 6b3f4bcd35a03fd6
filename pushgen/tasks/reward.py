"""The reward-model study as two functions that train.py / eval.py (and the tests) call.

train: data -> pairs -> tokens -> fit -> best checkpoint -> held-out metrics, baselines, plots.
evaluate: a trained checkpoint scores every pair of any A/B file with the same data rules.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pushgen.data.pipeline import PreparedData, prepare
from pushgen.data.splits import SPLITS
from pushgen.data.tokenize import count_truncated_pairs, tokenize_texts
from pushgen.evaluation import baselines, plots
from pushgen.evaluation.classification import write_study
from pushgen.evaluation.metrics import accuracy_by_bucket
from pushgen.modules.datamodule import PairDataModule
from pushgen.modules.reward_module import RewardModule
from pushgen.utils.checkpoint import AtomicCheckpointIO, NotACheckpoint, check_compatible, load_checkpoint_file
from pushgen.utils.config import to_plain
from pushgen.utils.run import atomic_dir, atomic_path, seed_everything, set_threads, write_atomic, write_json

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_id.txt"

# Names that eval.py promises in metrics.json, mapped from the module's logged metric names.
PUBLIC_NAMES = {"acc": "pair_acc", "acc_sig": "pair_acc_sig", "auc": "auc", "auc_sig": "auc_sig",
                "margin": "margin", "margin_sig": "margin_sig", "reward_mean": "reward_mean",
                "reward_std": "reward_std", "n": "n_pairs", "n_sig": "n_pairs_sig", "loss": "loss"}


def _wandb_id(out: Path) -> str:
    """The run folder's W&B id, created once: a resumed run continues the same W&B run."""
    path = out / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # W&B ids are short lowercase [a-z0-9] strings
    write_atomic(path, run_id + "\n")
    return run_id


def _build_loggers(cfg: DictConfig, out: Path) -> list:
    # A new csv/version_N per (re)start: a resumed run keeps the history it logged before.
    loggers: list = [CSVLogger(save_dir=str(out), name="csv")]
    for key, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None or "_target_" not in lg_cfg:
            continue
        extra = {"name": _run_name(cfg)} if "name" in lg_cfg else {}
        try:
            if str(lg_cfg["_target_"]).endswith("WandbLogger"):
                extra.update(id=_wandb_id(out), resume="allow")
            lg = hydra.utils.instantiate(lg_cfg, **extra)
            getattr(lg, "experiment", None)  # start it now, so a tracker that cannot start is caught here
        except Exception as exc:
            # A tracker is a convenience; the CSV log and metrics.json carry the run without it.
            log.warning("logger '%s' could not start (%s: %s); the run continues with the CSV log only",
                        key, type(exc).__name__, str(exc)[:300])
            continue
        loggers.append(lg)
    return loggers


def _run_name(cfg: DictConfig) -> str:
    """The run's name; in a multirun each job adds its overrides, so W&B runs tell apart at a glance."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        job = HydraConfig.get().job
        return f"{cfg.name}[{job.override_dirname or job.num}]"
    return str(cfg.name)


def _build_callbacks(cfg: DictConfig) -> list:
    return [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]


def _datamodule(cfg: DictConfig, prepared: PreparedData, module: RewardModule, splits=SPLITS) -> tuple[PairDataModule, dict]:
    tok = module.tokenizer
    reward = module.hparams.reward
    token_ids, tstats = tokenize_texts(prepared.pooled, tok, max_length=int(reward.get("max_length", 64)),
                                       use_evidence=bool(reward.get("use_evidence", False)), kind=module.model.kind,
                                       cache_dir=Path(cfg.paths.cache_dir) / "tokenized",
                                       truncation=str(reward.get("truncation", "right")))
    tstats.update(count_truncated_pairs(prepared.pairs, tstats.pop("truncated_rows")))
    dm = PairDataModule({s: prepared.split(s) for s in splits}, token_ids, pad_id=tok.pad_token_id,
                        padding_side=tok.padding_side, batch_size=int(cfg.data.get("batch_size", 32)),
                        eval_batch_size=int(cfg.data.get("eval_batch_size", 64)),
                        group_by_test=bool(cfg.data.get("group_by_test", True)), seed=int(cfg.seed),
                        num_workers=int(cfg.data.get("num_workers", 0)),
                        arms=prepared.pooled, whole_tests=module.loss_needs == "arms")
    return dm, tstats


def _public(metrics: dict[str, float], stage: str) -> dict[str, Any]:
    out = {}
    for key, value in metrics.items():
        name = key.split("/", 1)[1] if key.startswith(f"{stage}/") else None
        if name in PUBLIC_NAMES:
            v = float(value)
            out[PUBLIC_NAMES[name]] = int(v) if name in ("n", "n_sig") else v
    return out


def _score_pairs(module: RewardModule, dm: PairDataModule) -> pd.DataFrame:
    """Chosen and rejected scores of every pair of the last test pass, in the split's pair order."""
    index, chosen, rejected = (torch.cat(parts).cpu().numpy() for parts in zip(*module.test_scores))
    pairs = dm.splits["test"].copy()
    pairs.loc[index, "score_chosen"] = chosen
    pairs.loc[index, "score_rejected"] = rejected
    # With trainer.limit_test_batches only part of the split is tested: keep what the metrics cover.
    return pairs.dropna(subset=["score_chosen"])


def _classification(cfg: DictConfig, out: Path, scored: pd.DataFrame, pooled: pd.DataFrame) -> tuple[dict, dict]:
    """The classification study on the held-out pairs (intervals over tests): its table goes to
    metrics.json, its figures next to the run's other plots. ``task.analysis_boot=0`` skips it."""
    n_boot = int(cfg.task.get("analysis_boot", 1000))
    if n_boot <= 0:
        return {}, {}
    paths = write_study(scored, out / "plots", pooled=pooled, n_boot=n_boot, seed=int(cfg.seed), score_hist=False)
    table = pd.read_csv(paths["table_csv"])
    summary = {f"{r.metric}[{r.subset}]": {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": int(r.n)}
               for r in table.itertuples()}
    return summary, {k: v for k, v in paths.items() if str(v).endswith(".png")}


def _figures(out: Path, scored: pd.DataFrame, loggers: list, extra: dict | None = None) -> dict[str, str]:
    margin = (scored["score_chosen"] - scored["score_rejected"]).to_numpy()
    figs = {
        "loss_curves": plots.loss_curves(out / "csv", out / "plots" / "loss_curves.png"),
        "score_hist": plots.score_histogram(scored["score_chosen"].to_numpy(), scored["score_rejected"].to_numpy(),
                                            out / "plots" / "score_hist.png"),
        "acc_by_ctr_diff": plots.bucket_accuracy(accuracy_by_bucket(scored["ctr_diff"].to_numpy(), margin),
                                                 out / "plots" / "acc_by_ctr_diff.png"),
    }
    figs = {k: v for k, v in {**(extra or {}), **figs}.items() if v is not None}
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb
            lg.experiment.log({f"plots/{k}": wandb.Image(str(v)) for k, v in figs.items()})
    return {k: str(v) for k, v in figs.items()}


def _resolve_ckpt(ckpt_path: str | None, out: Path) -> str | None:
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = out / "checkpoints" / "last.ckpt"
        if not last.exists():
            raise FileNotFoundError(f"ckpt_path=last but {last} does not exist; to resume a training run, "
                                    "give hydra.run.dir=<its folder>; otherwise give ckpt_path=PATH")
        return str(last)
    if not Path(ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
    return str(ckpt_path)


def _one_device(trainer: L.Trainer) -> dict:
    """Trainer overrides for evaluating on one device after a data-parallel fit (none otherwise)."""
    return {"devices": 1, "num_nodes": 1, "strategy": "auto"} if trainer.world_size > 1 or trainer.num_devices > 1 else {}


def train(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    set_threads(cfg.get("threads"))
    seed_everything(cfg.seed)
    # The model first: a bad backbone or loss setting fails in seconds, before the data is read.
    module = RewardModule(backbone=to_plain(cfg.backbone), reward=to_plain(cfg.reward),
                          loss=to_plain(cfg.loss), optim=to_plain(cfg.optim))
    prepared = prepare(cfg.data, seed=int(cfg.seed))
    if rank_zero_only.rank == 0:  # under multi-process training, one process writes the run's files
        with atomic_path(out / "pairs.csv.gz") as tmp:
            prepared.pairs.to_csv(tmp, index=False, compression="gzip")
    wanted = ("train", "val", "test") if cfg.get("test", True) else ("train", "val")
    dm, tstats = _datamodule(cfg, prepared, module, splits=wanted)
    loggers = _build_loggers(cfg, out)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=_build_callbacks(cfg),
                                                 default_root_dir=str(out), plugins=[AtomicCheckpointIO()])
    resume_from = _resolve_ckpt(cfg.get("ckpt_path"), out)
    if resume_from is not None:
        check_compatible(resume_from, module)  # a clear error instead of a size-mismatch traceback
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)

    ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    one_device = _one_device(trainer)
    if trainer.world_size > 1:
        # Data-parallel fit done: the other ranks stop here and rank 0 evaluates on one device, so
        # every held-out pair is scored once and written whole.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if not trainer.is_global_zero:
            return {}
        trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=[], enable_checkpointing=False,
                                          default_root_dir=str(out), **one_device)
    best = (ckpt_cb.best_model_path or ckpt_cb.last_model_path) if ckpt_cb is not None else ""
    # Validation metrics of the checkpoint that was kept, not of the last validation.
    # A logger-free trainer, so this extra pass does not add a point to the validation curve.
    quiet: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                                               default_root_dir=str(out), plugins=[AtomicCheckpointIO()],
                                               **one_device)
    validated = quiet.validate(module, datamodule=dm, ckpt_path=best or None, verbose=False, weights_only=True)[0]
    metrics: dict[str, Any] = {"best_ckpt": best or None, "data": prepared.stats, "tokens": tstats,
                               "val": _public(validated, "val")}
    if cfg.get("test", True):
        # `quiet.validate` already loaded the best weights into `module`.
        tested = trainer.test(module, datamodule=dm)[0]
        metrics["test"] = _public(tested, "test")
        scored = _score_pairs(module, dm)
        with atomic_path(out / "test_pair_scores.csv") as tmp:
            scored.to_csv(tmp, index=False)
        metrics["classification"], extra = _classification(cfg, out, scored, prepared.pooled)
        metrics["plots"] = _figures(out, scored, loggers, extra)
    if cfg.get("baselines", True):
        train_pairs, test_pairs = prepared.split("train"), prepared.split("test")
        if cfg.get("test", True):
            # The baselines are judged on exactly the pairs the model was tested on (all of the split,
            # or the part trainer.limit_test_batches covered).
            test_pairs = test_pairs.loc[scored.index]
        metrics["baselines"] = {"longer_wins": baselines.longer_wins(test_pairs),
                                "tfidf_logreg": baselines.tfidf_logreg(train_pairs, test_pairs, seed=int(cfg.seed))}
    if cfg.task.get("export_model", False):
        # `module` holds the best weights since quiet.validate(ckpt_path=best).
        # The guard made sure this folder is this run's: a resumed run replaces its own export.
        with atomic_dir(out / "reward_model", replace=True) as tmp:
            module.model.save_pretrained(tmp)
        metrics["reward_model"] = str(out / "reward_model")
    write_json(out / "metrics.json", metrics)
    _log_summary(metrics)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    set_threads(cfg.get("threads"))
    seed_everything(cfg.seed)
    if cfg.ckpt_path == "last":
        raise ValueError("eval.py needs ckpt_path=PATH to a .ckpt file (e.g. <train run>/checkpoints/last.ckpt)")
    ckpt = _resolve_ckpt(cfg.ckpt_path, out)
    load_checkpoint_file(ckpt, mmap=True)  # a CSV, a truncated file, pickled objects: a short, clear error
    try:
        module = RewardModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # e.g. an SFT checkpoint: a real checkpoint of another module
        raise NotACheckpoint(f"ckpt_path={ckpt} is not a pushgen reward checkpoint ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:200]}); use a .ckpt from a train.py run "
                             "folder's checkpoints/") from exc
    prepared = prepare(cfg.data, seed=int(cfg.seed), whole_file_split="test")
    dm, tstats = _datamodule(cfg, prepared, module, splits=("test",))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=_build_loggers(cfg, out), callbacks=[],
                                                 default_root_dir=str(out))
    tested = trainer.test(module, datamodule=dm)[0]
    scored = _score_pairs(module, dm)
    with atomic_path(out / "pair_scores.csv") as tmp:
        scored.to_csv(tmp, index=False)
    metrics = {**_public(tested, "test"), "ckpt_path": ckpt, "data_path": str(cfg.data.path),
               "data": prepared.stats, "tokens": tstats}
    write_json(out / "metrics.json", metrics)
    _log_summary(metrics)
    return metrics


def _log_summary(metrics: dict[str, Any]) -> None:
    test = metrics.get("test", metrics)
    line = ", ".join(f"{k}={test[k]:.4f}" for k in ("pair_acc", "pair_acc_sig", "auc") if k in test)
    log.info("%s: %s", "held-out test split" if "test" in metrics else "whole file", line)
    for name, b in (metrics.get("baselines") or {}).items():
        log.info("baseline %s: pair_acc=%.4f pair_acc_sig=%.4f", name, b["pair_acc"], b["pair_acc_sig"])
