"""The best-of-N task that generate.py calls: for held-out items, generate candidates per style
category, judge, score and select them, and write tables, metrics, plots and a report.

Reads: a generator folder (an SFT run's output, or any causal LM), an exported reward model (a
train.py run's reward_model/), optionally a second "gold" reward model, and the A/B data for items.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pushgen.data.pipeline import prepare
from pushgen.evaluation import generation_plots as gplots
from pushgen.generation.backends import Sampling, build_backend, check_guidance, load_generator
from pushgen.generation.constraints import KEPT, Constraints
from pushgen.generation.diagnostics import best_of_n_curve
from pushgen.generation.loop import generate_candidates, held_out_items, score_and_select
from pushgen.generation.metrics import NO_CATEGORY, selection_metrics
from pushgen.generation.report import write_report
from pushgen.generation.scoring import score_texts
from pushgen.utils.config import to_plain
from pushgen.utils.run import seed_everything, set_threads, write_json

log = logging.getLogger(__name__)


def resolve_categories(requested: Any, taxonomy, use_category: bool) -> list[str | None]:
    """`generation.categories`: `all` (the taxonomy's), or a list of names; None when the prompt has no category."""
    if not use_category:
        return [None]
    if requested in (None, "all"):
        return list(taxonomy.names)
    names = [str(c) for c in requested]
    unknown = [c for c in names if c not in taxonomy]
    if unknown:
        raise ValueError(f"generation.categories has {unknown}, not in the taxonomy (known: {', '.join(taxonomy.names)})")
    return names


def _readable(table: pd.DataFrame) -> pd.DataFrame:
    """Long columns (the raw output, the evidence) last, so the tables read well in a spreadsheet."""
    tail = [c for c in ("raw", "evidence") if c in table]
    return table[[c for c in table.columns if c not in tail] + tail]


def _finite(obj: Any) -> Any:
    """NaN/inf -> None so metrics.json stays strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _scorer(model, cfg):
    bs, max_len, use_ev = int(cfg.get("batch_size", 64)), int(cfg.get("max_length", 64)), bool(cfg.get("use_evidence"))
    return lambda texts, evidence: score_texts(model, texts, evidence if use_ev else None, batch_size=bs, max_length=max_len)


def _figures(out: Path, result, curve: pd.DataFrame, sel_metrics: dict) -> dict[str, str]:
    kept = result.candidates[result.candidates["fate"] == KEPT]
    best_h = result.humans.groupby("item_id")["score"].max().to_numpy()
    adh = {name: {k.split("/", 1)[1]: v for k, v in (sel_metrics.get(key) or {}).items() if k.startswith("cat/")}
           for name, key in (("all kept candidates", "adherence_candidates"), ("selections", "adherence_selected"))}
    figs = {
        "best_of_n": gplots.best_of_n(curve, out / "plots" / "best_of_n.png"),
        "scores": gplots.score_distributions(kept["score"].to_numpy(), result.selections["score"].to_numpy(), best_h,
                                             out / "plots" / "scores.png"),
        "score_vs_length": gplots.score_vs_length(kept["n_chars"].to_numpy(), kept["score"].to_numpy(),
                                                  result.humans["text"].str.len().to_numpy(),
                                                  result.humans["score"].to_numpy(), out / "plots" / "score_vs_length.png",
                                                  corr=sel_metrics["score_length_corr"]["pearson"]),
        "adherence": gplots.adherence_bars(adh, out / "plots" / "adherence.png"),
    }
    return {k: str(v) for k, v in figs.items() if v is not None}


def _log_wandb(cfg: DictConfig, out: Path, metrics: dict, figs: dict, result) -> None:
    lg = (cfg.get("logger") or {}).get("wandb")
    if not lg:
        return
    import wandb

    run = wandb.init(project=lg.get("project", "pushgen"), name=str(cfg.name), group=lg.get("group"), dir=str(out),
                     mode="offline" if lg.get("offline", True) else None,
                     config=OmegaConf.to_container(cfg, resolve=True))
    flat = pd.json_normalize(_finite({k: v for k, v in metrics.items() if k != "plots"}), sep="/").iloc[0].to_dict()
    run.log({k: v for k, v in flat.items() if isinstance(v, (int, float)) and v is not None})
    run.log({f"plots/{k}": wandb.Image(v) for k, v in figs.items()})
    cols = [c for c in ("item_id", "category", "text", "score", "gold_score", "label") if c in result.selections]
    run.log({"selections": wandb.Table(dataframe=result.selections[cols].astype({"item_id": str}))})


def _generator(cfg: DictConfig, taxonomy, out: Path):
    """(model, tokenizer, prompt builder, folder for vLLM) for generator.path.

    An SFT export (pushgen_generator.json) brings the prompt settings it was trained with, so the
    generator is prompted exactly as in training (only prompt.category is taken from this config,
    for the no-category ablation); a LoRA adapter is merged for speed. Any other folder or hub id
    is a plain causal LM prompted with this config's prompt settings."""
    from pushgen.categories.prompts import build_prompt_builder

    g = cfg.generator
    if not g.get("path"):
        raise ValueError("generator.path is not set: give a generator folder (an SFT run's generator/) or a model id")
    path = Path(str(g.path))
    if not path.exists() and (str(g.path).startswith((".", "/", "~")) or str(g.path).count("/") != 1):
        # Not a folder and not shaped like a hub id (org/name): say so instead of a hub error.
        raise FileNotFoundError(f"generator.path: {g.path} does not exist; give an SFT run's generator/ folder "
                                "(e.g. logs/sft/runs/<run>/generator) or a hub id like org/name")
    if path.is_dir() and (path / "generator" / "pushgen_generator.json").is_file() \
            and not (path / "pushgen_generator.json").is_file():
        raise FileNotFoundError(f"generator.path: {path} is an SFT run folder; give its generator/ subfolder "
                                f"(generator.path={path / 'generator'})")
    use_vllm = cfg.generation.backend.get("name", "hf") == "vllm"
    if (path / "pushgen_generator.json").is_file():
        from pushgen.modules.sft_module import load_generator as load_exported

        model, builder = load_exported(path, prompt_overrides={"category": str(cfg.prompt.category)})
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload().eval()
            if use_vllm:  # vLLM reads whole weights from a folder: write the merged model once
                merged = out / "generator_merged"
                model.save_pretrained(merged)
                builder.tokenizer.save_pretrained(merged)
                path = merged
        return (None if use_vllm else model), builder.tokenizer, builder, str(path)
    trust = bool(g.get("trust_remote_code"))
    if use_vllm:  # vLLM loads the weights itself; only the tokenizer is needed here, for the prompts
        from transformers import AutoTokenizer
        model, tok = None, AutoTokenizer.from_pretrained(str(g.path), trust_remote_code=trust)
    else:
        model, tok = load_generator(g.path, dtype=g.get("dtype", "float32"), trust_remote_code=trust)
    return model, tok, build_prompt_builder(tok, cfg.prompt, taxonomy), str(g.path)


def generate(cfg: DictConfig) -> dict[str, Any]:
    from pushgen.categories.labelers import build_labeler
    from pushgen.categories.taxonomy import load_taxonomy
    from pushgen.models.reward import RewardModel

    out = Path(cfg.paths.output_dir)
    set_threads(cfg.get("threads"))
    seed_everything(cfg.seed)
    gen = cfg.generation
    # Models and settings first: a wrong path or key fails in seconds, before any data is read.
    sampling = Sampling.from_cfg(to_plain(gen.sampling))
    constraints = Constraints.from_cfg(to_plain(gen.constraints))
    taxonomy = load_taxonomy(cfg.taxonomy)
    labeler = build_labeler(cfg.labeler, taxonomy)
    check_guidance(sampling, str(gen.backend.get("name", "hf")), str(cfg.prompt.get("category", "label")) != "none")
    if cfg.get("gold_reward_model") and Path(str(cfg.gold_reward_model)).resolve() == Path(str(cfg.reward_model)).resolve():
        raise ValueError(f"gold_reward_model is the same folder as reward_model ({cfg.reward_model}): a judge that "
                         "selected the candidates cannot check them; give a model trained on other tests "
                         "(data.split.train_shard={index:1,count:2}, as pipeline.py's gold stage) or leave it unset")
    reward = RewardModel.from_pretrained(cfg.reward_model)
    gold = RewardModel.from_pretrained(cfg.gold_reward_model) if cfg.get("gold_reward_model") else None
    model, tok, builder, model_path = _generator(cfg, taxonomy, out)
    categories = resolve_categories(to_plain(gen.categories), builder.taxonomy or taxonomy, builder.use_category)
    backend_cfg = to_plain(gen.backend)
    backend = build_backend(backend_cfg, sampling, model=model, tokenizer=tok, model_path=model_path,
                            stop_ids=builder.stop_ids)
    g = cfg.generator

    prepared = prepare(cfg.data, seed=int(cfg.seed))
    items, humans = held_out_items(prepared.pooled, split=str(cfg.held_out.split), limit=cfg.held_out.get("limit"),
                                   seed=int(cfg.seed))
    log.info("%d items from split %s, categories %s, n=%d each", len(items), cfg.held_out.split, categories,
             int(gen.n_per_category))
    raw = generate_candidates(items, categories, builder.prompt_ids, backend, n=int(gen.n_per_category),
                              seed=int(cfg.seed), unconditional_fn=builder.unconditional_ids if builder.use_category else None)
    start = time.perf_counter()
    result = score_and_select(raw, humans, constraints, _scorer(reward, cfg.scoring),
                              _scorer(gold, cfg.scoring) if gold is not None else None,
                              labeler.label, top_k=int(cfg.selection.top_k))
    score_seconds = time.perf_counter() - start

    sel_metrics = selection_metrics(result.candidates, result.humans, result.selections)
    curve = best_of_n_curve(result.candidates, result.humans, gold="gold_score" if gold is not None else None)
    gen_seconds = float(raw.attrs.get("seconds", float("nan")))
    metrics: dict[str, Any] = {
        "run": {"name": str(cfg.name), "generator": str(g.path), "reward_model": str(cfg.reward_model),
                "gold_reward_model": str(cfg.gold_reward_model) if gold is not None else None,
                "split": str(cfg.held_out.split), "categories": [NO_CATEGORY if c is None else c for c in categories],
                "n_per_category": int(gen.n_per_category), "backend": backend_cfg.get("name", "hf"),
                "prompt_template": builder.kind, "guidance_scale": sampling.guidance_scale,
                "generation_seconds": gen_seconds, "candidates_per_second": len(raw) / gen_seconds if gen_seconds else None,
                "scoring_seconds": score_seconds, "prompts": builder.stats.as_dict()},
        "selection": sel_metrics,
        "best_of_n": curve.to_dict(orient="list"),
        "data": prepared.stats,
    }
    if gold is not None:
        # The proxy's picks judged by the gold model: does the selection still beat the human text?
        judged = selection_metrics(result.candidates, result.humans, result.selections, score="gold_score")
        metrics["selection_gold"] = {k: judged[k] for k in ("replacement_rate", "lift_over_human", "lift_over_best_human",
                                                             "lift_over_random", "score_length_corr")}

    _readable(result.candidates).to_csv(out / "candidates.csv", index=False)
    _readable(result.humans).to_csv(out / "humans.csv", index=False)
    _readable(result.selections.drop(columns=["raw"])).to_csv(out / "selections.csv", index=False)
    _readable(result.top_k.drop(columns=["raw"])).to_csv(out / "top_k_per_category.csv", index=False)
    curve.to_csv(out / "best_of_n.csv", index=False)
    metrics["plots"] = _figures(out, result, curve, sel_metrics)
    write_report(out / "report.md", _finite(metrics), curve, result)
    _log_wandb(cfg, out, metrics, metrics["plots"], result)
    # Last: metrics.json marks the run as finished (the run-folder guard and resumed pipelines look for it).
    write_json(out / "metrics.json", _finite(metrics))
    log.info("replacement rate %.3f, lift over human %.3f, over random %.3f, adherence %s",
             sel_metrics["replacement_rate"], sel_metrics["lift_over_human"], sel_metrics["lift_over_random"],
             (sel_metrics.get("adherence_selected") or {}).get("overall"))
    return metrics
