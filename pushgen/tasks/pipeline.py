"""The whole of PushGen as one command: train the reward model, train a second "gold" reward model
(the independent judge of the reward-hacking check), fine-tune the generator, then generate, score
and select for held-out items.

Each stage is an ordinary run of its own entry point's config (train / sft / generate), composed with
the overrides the pipeline config gives it, and written into its own run folder inside the
pipeline's folder (`<top>/<stage>/`). A stage whose folder already holds a finished run
(metrics.json) is reused, so an interrupted pipeline resumes with `hydra.run.dir=<top>`; a stage
interrupted mid-training resumes from its last checkpoint, and one that stopped before any checkpoint
starts again (its folder renamed `<stage>.unfinished-N`).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pushgen.utils.config import REPO_ROOT, to_plain
from pushgen.utils.run import write_atomic, write_json

log = logging.getLogger(__name__)

# Where a later stage finds what an earlier one made: override key -> (stage, file in its folder).
LINKS = {
    "generate": {"reward_model": ("reward", "reward_model"), "gold_reward_model": ("gold", "reward_model"),
                 "generator.path": ("sft", "generator")},
}


@contextmanager
def _stage_log(path: Path):
    """Mirror the log into the stage's own folder, as a standalone run would have it."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def compose_stage(config_name: str, overrides: list[str]) -> DictConfig:
    """A stage's config, composed like its entry point would (inside or outside a Hydra app)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _links(stage: str, top: Path, enabled: list[str]) -> list[str]:
    out = []
    for key, (source, name) in LINKS.get(stage, {}).items():
        if source in enabled:
            out.append(f"{key}={top / source / name}")
    return out


def _set_aside(out: Path) -> Path:
    """A stage that stopped before its first checkpoint starts again; what it left is kept beside it."""
    n = 1
    while out.with_name(f"{out.name}.unfinished-{n}").exists():
        n += 1
    aside = out.rename(out.with_name(f"{out.name}.unfinished-{n}"))
    log.warning("stage %s: its folder held a run that stopped before its first checkpoint; kept as %s, "
                "starting the stage again", out.name, aside)
    return aside


def stage_config(name: str, spec: DictConfig, top: Path, enabled: list[str], common: list[str],
                 pipeline_name: str, resuming: bool = False) -> tuple[DictConfig, list[str]]:
    """A stage's composed and checked config; a bad override names the stage and the key."""
    from pushgen.utils.schema import ConfigError, validate_config

    overrides = list(common) + list(spec.get("overrides") or []) + _links(name, top, enabled)
    if resuming:
        overrides.append("ckpt_path=last")
    try:
        cfg = compose_stage(str(spec.config), overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(top / name)
            cfg.name = f"{pipeline_name}-{name}"
        validate_config(cfg, str(spec.task))
    except ConfigError as exc:
        raise ConfigError([f"stage {name}: {p}" for p in exc.problems], str(spec.task)) from None
    except Exception as exc:  # Hydra's composition errors: an unknown key or group option
        raise ValueError(f"stage {name} (config {spec.config}): its overrides do not compose: {exc} "
                         f"-- fix stages.{name}.overrides or pipeline.common") from None
    return cfg, overrides


def run_stage(name: str, spec: DictConfig, top: Path, enabled: list[str], common: list[str],
              pipeline_name: str) -> dict[str, Any]:
    from pushgen.tasks.entry import run_task

    out = top / name
    done = out / "metrics.json"
    if done.exists():
        log.info("stage %s: reusing the finished run in %s", name, out)
        return json.loads(done.read_text())
    resuming = bool(list((out / "checkpoints").glob("*.ckpt"))) if (out / "checkpoints").is_dir() else False
    if not resuming and out.is_dir() and any(out.iterdir()):
        _set_aside(out)
    cfg, overrides = stage_config(name, spec, top, enabled, common, pipeline_name, resuming)
    out.mkdir(parents=True, exist_ok=True)
    log.info("stage %s: %s %s -> %s%s", name, spec.config, " ".join(overrides), out, " (resuming)" if resuming else "")
    start = time.perf_counter()
    with _stage_log(out / f"{spec.task}.log"):
        metrics = run_task(cfg, str(spec.task))
    log.info("stage %s finished in %.1f min", name, (time.perf_counter() - start) / 60)
    return metrics


def _summary(stages: dict[str, dict], top: Path, seconds: dict[str, float]) -> dict[str, Any]:
    s: dict[str, Any] = {"stages": {k: {"dir": k, "minutes": round(seconds.get(k, 0.0) / 60, 2)} for k in stages}}
    for k in ("reward", "gold"):
        if k in stages:
            s[k] = {m: stages[k].get("test", {}).get(m) for m in ("pair_acc", "pair_acc_sig", "auc")}
    if "sft" in stages:
        s["sft"] = {"best_val_loss": stages["sft"].get("best_val_loss")}
    if "generate" in stages:
        sel = stages["generate"]["selection"]
        s["generate"] = {k: sel.get(k) for k in ("replacement_rate", "lift_over_human", "lift_over_random",
                                                  "duplicate_rate", "kept_rate")}
        s["generate"]["adherence_selected"] = (sel.get("adherence_selected") or {}).get("overall")
        if "selection_gold" in stages["generate"]:
            s["generate"]["replacement_rate_gold"] = stages["generate"]["selection_gold"]["replacement_rate"]
    return s


def _report(summary: dict, top: Path) -> str:
    lines = ["# PushGen pipeline run", "", "| stage | folder | minutes (this start) |", "| --- | --- | --- |"]
    lines += [f"| {k} | [{v['dir']}/]({v['dir']}/) | {v['minutes']} |" for k, v in summary["stages"].items()]
    lines.append("")
    for k in ("reward", "gold"):
        if k in summary:
            lines.append(f"- {k} reward model, held-out pairs: " + ", ".join(f"{m} {v:.3f}" for m, v in summary[k].items()
                                                                            if v is not None))
    if "sft" in summary and summary["sft"]["best_val_loss"] is not None:
        lines.append(f"- generator SFT: best validation loss {summary['sft']['best_val_loss']:.3f}")
    if "generate" in summary:
        lines.append("- best-of-N: " + ", ".join(f"{m} {v:.3f}" for m, v in summary["generate"].items() if v is not None))
        lines += ["", "The full best-of-N report: [generate/report.md](generate/report.md)."]
    return "\n".join(lines) + "\n"


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    top = Path(cfg.paths.output_dir)
    top.mkdir(parents=True, exist_ok=True)
    order = [str(s) for s in cfg.pipeline.order]
    unknown = [s for s in order if s not in cfg.stages]
    if unknown:
        raise ValueError(f"pipeline.order names {unknown}, not under stages (known: {list(cfg.stages)})")
    common = [str(o) for o in (to_plain(cfg.pipeline.get("common")) or [])]
    for name in order:  # every stage's config is checked before the first one trains
        stage_config(name, cfg.stages[name], top, order, common, str(cfg.name))
    results, seconds = {}, {}
    for name in order:
        start = time.perf_counter()
        results[name] = run_stage(name, cfg.stages[name], top, order, common, str(cfg.name))
        seconds[name] = time.perf_counter() - start
    summary = _summary(results, top, seconds)
    summary["config"] = OmegaConf.to_container(cfg.pipeline, resolve=True)
    write_atomic(top / "report.md", _report(summary, top))
    write_json(top / "metrics.json", summary)
    log.info("pipeline finished: %s", top / "report.md")
    return summary
