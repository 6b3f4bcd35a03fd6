"""Does the category in the prompt steer the style? Adherence of a trained generator, measured.

    python -m pushgen.evaluation.controllability run_dir=logs/sft/runs/<run> [n_items=48] [split=test]
        [seed=0] [none_samples=8] [ablation_run_dir=<run trained with prompt.category=none>] [threads=2]
        [guidance_scale=1.0]
    python -m pushgen.evaluation.controllability out_dir=<run>/controllability/<timestamp>   # relabel saved outputs

For held-out items (the run's data and seed give the same split as the reward model; default: the
test split) the generator writes one notification per requested category. Each output is labeled by
the run's labeler. Per category:

- adherence: share of outputs asked for category c that the labeler puts in c;
- no-category share: share of outputs of c when the prompt names no category (the same generator
  with ``prompt.category=none``, or the model of ``ablation_run_dir`` trained without categories),
  from ``none_samples`` outputs per item (default: one per category, so the base rate rests on as
  many outputs as all the requested categories together);
- human share: share of c among the human headlines of the same items (all arms);
- a Wilson 95% interval of the adherence, and the one-sided p-value of a two-proportion z-test
  that adherence exceeds the no-category share.

With the rule labeler, also the cue rate: the share of outputs asked for c that carry c's cue at
all (one of its rules fired), against the same share without a category; a single label follows the
priority order, so a style low in it (emotional, second_person) can be written and still lose the label.

``guidance_scale`` g > 1 generates the requested categories with classifier-free guidance on the
category (``pushgen.models.sampling.generate_texts``); the no-category outputs need none.

Adherence above both shares means the prompt's category, not the item or the data's base rate,
decides the style. Results go to ``<run_dir>/controllability/<timestamp>/`` as CSV and markdown.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from pushgen.categories.labelers import RuleLabeler, build_labeler
from pushgen.categories.taxonomy import load_taxonomy
from pushgen.data.pairs import two_proportion_z
from pushgen.data.pipeline import prepare
from pushgen.data.sft import sft_rows
from pushgen.data.splits import SPLITS
from pushgen.models.sampling import generate_texts
from pushgen.modules.sft_module import load_generator, markdown_table
from pushgen.utils.run import set_threads, write_atomic, write_json

log = logging.getLogger(__name__)


def held_out_items(run_cfg, split: str, n_items: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per held-out test: test_id, evidence; every human text of those tests)."""
    prepared = prepare(run_cfg.data, seed=int(run_cfg.seed))
    best = sft_rows(prepared.pooled, mode="best_arm", min_impressions=int(run_cfg.sft.get("min_impressions", 0)))
    items = best[(best["split"] == split) & (best["evidence"].str.strip() != "")].head(int(n_items))
    if items.empty:
        raise ValueError(f"no held-out items with evidence in split {split!r}")
    humans = prepared.pooled[prepared.pooled["test_id"].isin(items["test_id"])]
    return items[["test_id", "evidence"]].reset_index(drop=True), humans


def wilson(k: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default); (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def above_p_value(k1: float, n1: float, k2: float, n2: float) -> float:
    """One-sided p-value that proportion k1/n1 exceeds k2/n2 (pooled two-proportion z-test)."""
    z, _ = two_proportion_z(k1, n1, k2, n2)
    return float(stats.norm.sf(z))


def cue_matrix(labeler, texts: list[str]) -> np.ndarray | None:
    """(texts x categories) bool: the text carries the category's own cue (one of its rules fired;
    the fallback: none did), whatever the priority order then makes its single label. Rule labeler
    only (a learned labeler has no cues): None otherwise."""
    if not isinstance(labeler, RuleLabeler):
        return None
    return labeler.scores(texts) > 0


def adherence_table(gen: pd.DataFrame, none_labels: list[str], human_labels: list[str], names: list[str],
                    train_counts: dict[str, int], gen_cues: np.ndarray | None = None,
                    none_cues: np.ndarray | None = None) -> pd.DataFrame:
    """One row per category, then an overall row (the mean over categories: every category is asked equally often).

    With cue matrices (``cue_matrix``; columns in ``names`` order, rows aligned with ``gen`` and the
    no-category outputs) two more columns: ``cue_rate``, the share of outputs asked for c that carry
    c's cue, and ``no_category_cue_rate``, the same share among outputs prompted without a category.
    They separate "the generator did not write the style" from "it did, but a cue of a category
    earlier in the labeler's priority order took the single label"."""
    none = pd.Series(none_labels, dtype=object)
    n_none = len(none)
    human_share = pd.Series(human_labels, dtype=object).value_counts(normalize=True)
    rows = []
    for c in names:
        part = gen[gen["requested"] == c]
        hits, k_none = int((part["labeled"] == c).sum()), int((none == c).sum())
        lo, hi = wilson(hits, len(part))
        rows.append({"category": c, "train_examples": int(train_counts.get(c, 0)), "n": len(part),
                     "adherence": hits / len(part) if len(part) else float("nan"), "adherence_lo": lo, "adherence_hi": hi,
                     "no_category_share": k_none / n_none if n_none else float("nan"),
                     "human_share": float(human_share.get(c, 0.0)),
                     "p_above_no_category": above_p_value(hits, len(part), k_none, n_none) if len(part) and n_none else float("nan")})
        if gen_cues is not None and none_cues is not None:
            k = names.index(c)
            mask = (gen["requested"] == c).to_numpy()
            rows[-1]["cue_rate"] = float(gen_cues[mask, k].mean()) if mask.any() else float("nan")
            rows[-1]["no_category_cue_rate"] = float(none_cues[:, k].mean()) if n_none else float("nan")
    table = pd.DataFrame(rows)
    hits = int((gen["labeled"] == gen["requested"]).sum())
    lo, hi = wilson(hits, len(gen))
    # An uncontrolled output matches a uniformly requested category with chance 1/K * sum of shares
    # = 1/K whatever the shares; the mean share is that chance, and the test compares with it.
    base = float(table["no_category_share"].mean())
    overall = {"category": "overall", "train_examples": int(table["train_examples"].sum()), "n": len(gen),
               "adherence": hits / len(gen) if len(gen) else float("nan"), "adherence_lo": lo, "adherence_hi": hi,
               "no_category_share": base, "human_share": float(table["human_share"].mean()),
               "p_above_no_category": above_p_value(hits, len(gen), base * n_none, n_none) if len(gen) and n_none else float("nan")}
    if "cue_rate" in table:
        overall["cue_rate"] = float(table["cue_rate"].mean())
        overall["no_category_cue_rate"] = float(table["no_category_cue_rate"].mean())
    return pd.concat([table, pd.DataFrame([overall])], ignore_index=True)


def measure(run_dir: str | Path, n_items: int = 48, split: str = "test", seed: int = 0,
            ablation_run_dir: str | Path | None = None, sampling: dict | None = None,
            none_samples: int | None = None) -> dict:
    run_dir = Path(run_dir)
    # The resolved copy every run writes (paths are absolute there; Hydra's own copy needs its resolvers).
    run_cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    taxonomy = load_taxonomy(OmegaConf.to_container(run_cfg.taxonomy, resolve=True))
    labeler = build_labeler(OmegaConf.to_container(run_cfg.labeler, resolve=True), taxonomy)  # fails before generating
    items, humans = held_out_items(run_cfg, split, n_items)
    sampling = {**OmegaConf.to_container(run_cfg.sft.sampling, resolve=True), **(sampling or {})}

    model, builder = load_generator(run_dir / "generator")
    if not builder.use_category:
        raise ValueError(f"{run_dir} was trained with prompt.category=none: it has no category to follow")
    ev = items["evidence"].astype(str).tolist()
    frames = []
    t0 = time.time()
    for c in taxonomy.names:
        outs = generate_texts(model, builder, ev, [c] * len(ev), sampling, seed=seed)
        frames.append(pd.DataFrame({"test_id": items["test_id"], "requested": c, "output": outs}))
        log.info("generated %d for %s (%.0f s so far)", len(outs), c, time.time() - t0)
    gen = pd.concat(frames, ignore_index=True)

    if ablation_run_dir:
        abl_model, abl_builder = load_generator(Path(ablation_run_dir) / "generator")
        ablation = f"model trained without categories ({ablation_run_dir})"
    else:
        abl_model, abl_builder = model, load_generator(run_dir / "generator", {"category": "none"})[1]
        ablation = "the same generator prompted without a category"
    reps = len(taxonomy.names) if none_samples is None else int(none_samples)
    none_ev = [e for _ in range(reps) for e in ev]
    none_out = generate_texts(abl_model, abl_builder, none_ev, [None] * len(none_ev), sampling, seed=seed)
    none = pd.DataFrame({"test_id": list(items["test_id"]) * reps, "output": none_out})

    out = run_dir / "controllability" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=False)
    gen.to_csv(out / "generations.csv", index=False)
    none.to_csv(out / "generations_no_category.csv", index=False)
    info = {"n_items": len(items), "split": split, "ablation": ablation, "none_samples": reps,
            "guidance_scale": float(sampling.get("guidance_scale", 1.0)),
            "generation_seconds": round(time.time() - t0, 1)}
    write_json(out / "run_info.json", info)
    return summarise(out, run_cfg, humans, labeler)


def summarise(out: Path, run_cfg, humans: pd.DataFrame | None = None, labeler=None) -> dict:
    """Label the generations saved in ``out`` with the run's labeler and write the adherence table
    (``adherence.csv``/``.md``, ``metrics.json``, labels added to the generation CSVs). Rerunnable:
    ``relabel`` calls it on an earlier folder, e.g. after the taxonomy or the table changed."""
    taxonomy = load_taxonomy(OmegaConf.to_container(run_cfg.taxonomy, resolve=True))
    labeler = labeler or build_labeler(OmegaConf.to_container(run_cfg.labeler, resolve=True), taxonomy)
    info = _json(out / "run_info.json")
    gen = pd.read_csv(out / "generations.csv", keep_default_na=False)
    none = pd.read_csv(out / "generations_no_category.csv", keep_default_na=False)
    if humans is None:
        humans = held_out_items(run_cfg, info["split"], info["n_items"])[1]
    outs, none_outs = gen["output"].astype(str).tolist(), none["output"].astype(str).tolist()
    gen["labeled"], none["labeled"] = labeler.label(outs), labeler.label(none_outs)
    human_labels = labeler.label(humans["text"].astype(str).tolist())
    run_dir = out.parent.parent
    train_counts = (_json(run_dir / "metrics.json").get("sft") or {}).get("categories_train", {})
    table = adherence_table(gen, none["labeled"].tolist(), human_labels, taxonomy.names, train_counts,
                            cue_matrix(labeler, outs), cue_matrix(labeler, none_outs))
    gen.to_csv(out / "generations.csv", index=False)
    none.to_csv(out / "generations_no_category.csv", index=False)
    write_atomic(out / "adherence.csv", table.to_csv(index=False))
    header = (f"Controllability of {run_dir.name}: {info['n_items']} held-out items ({info['split']} split), "
              f"{len(taxonomy.names)} categories, labeler {run_cfg.labeler.get('kind', 'rules')}; "
              f"no-category column: {info['ablation']}, {info['none_samples']} outputs per item; "
              f"guidance scale {info.get('guidance_scale', 1.0)}.\n\n")
    write_atomic(out / "adherence.md", header + markdown_table(table.round(3)))
    result = {"out_dir": str(out), **info, "overall_adherence": float(table.iloc[-1]["adherence"]),
              "table": table.to_dict(orient="records")}
    write_json(out / "metrics.json", result)
    print(header + markdown_table(table.round(3)))
    return result


def relabel(out_dir: str | Path) -> dict:
    """Recompute the table of an earlier measurement folder (``<run>/controllability/<timestamp>``) from its saved generations."""
    out = Path(out_dir)
    for name in ("generations.csv", "generations_no_category.csv", "run_info.json"):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name} not found: out_dir must be a folder written by this "
                                    "command (<sft run>/controllability/<timestamp>)")
    return summarise(out, OmegaConf.load(out.parent.parent / "config_resolved.yaml"))


def _json(path: Path) -> dict:
    import json
    return json.loads(path.read_text()) if path.exists() else {}


def _number(args: dict, key: str, kind: type, default, minimum=None):
    if key not in args:
        return default
    try:
        value = kind(args[key])
    except ValueError:
        raise ValueError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {args[key]!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return value


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    try:
        if set(args) == {"out_dir"}:
            relabel(args["out_dir"])
            return
        unknown = set(args) - {"run_dir", "n_items", "split", "seed", "ablation_run_dir", "none_samples", "threads",
                               "guidance_scale"}
        if unknown:
            raise SystemExit(f"unknown argument(s) {sorted(unknown)}\n{__doc__}")
        if "run_dir" not in args:
            raise SystemExit(f"run_dir=<sft run folder> is required\n{__doc__}")
        # Every value is checked before the data is prepared and models are loaded.
        n_items, seed = _number(args, "n_items", int, 48, 1), _number(args, "seed", int, 0)
        none_samples, threads = _number(args, "none_samples", int, None, 1), _number(args, "threads", int, None, 1)
        guidance = _number(args, "guidance_scale", float, None, 0.0)
        split = args.get("split", "test")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        set_threads(threads)
        run_dir = Path(args["run_dir"])
        if not (run_dir / "config_resolved.yaml").is_file() or not (run_dir / "generator").is_dir():
            raise FileNotFoundError(f"run_dir={run_dir} is not a finished sft.py run folder (it needs "
                                    "config_resolved.yaml and generator/; e.g. logs/sft/runs/<run> or <pipeline run>/sft)")
        measure(run_dir, n_items=n_items, split=split, seed=seed, ablation_run_dir=args.get("ablation_run_dir"),
                none_samples=none_samples, sampling=None if guidance is None else {"guidance_scale": guidance})
    except (FileNotFoundError, ValueError) as e:   # a user's mistake: say it once, no traceback
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
