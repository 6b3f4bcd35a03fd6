"""Does the category in the prompt steer the style? Adherence of a trained generator, measured.

    python -m pushgen.evaluation.controllability run_dir=logs/sft/runs/<run> [n_items=48] [split=test]
        [seed=0] [ablation_run_dir=<run trained with prompt.category=none>] [threads=2]

For held-out items (the run's data and seed give the same split as the reward model; default: the
test split) the generator writes one notification per requested category. Each output is labeled by
the run's labeler. Per category:

- adherence: share of outputs asked for category c that the labeler puts in c;
- no-category share: share of outputs of c when the prompt names no category (the same generator
  with ``prompt.category=none``, or the model of ``ablation_run_dir`` trained without categories);
- human share: share of c among the human headlines of the same items (all arms).

Adherence above both shares means the prompt's category, not the item or the data's base rate,
decides the style. Results go to ``<run_dir>/controllability/<timestamp>/`` as CSV and markdown.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from pushgen.categories.labelers import build_labeler
from pushgen.categories.taxonomy import load_taxonomy
from pushgen.data.pipeline import prepare
from pushgen.data.sft import sft_rows
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


def adherence_table(gen: pd.DataFrame, none_labels: list[str], human_labels: list[str], names: list[str],
                    train_counts: dict[str, int]) -> pd.DataFrame:
    """One row per category, then an overall row (the mean over categories: every category is asked equally often)."""
    none_share = pd.Series(none_labels).value_counts(normalize=True)
    human_share = pd.Series(human_labels).value_counts(normalize=True)
    rows = []
    for c in names:
        part = gen[gen["requested"] == c]
        rows.append({"category": c, "train_examples": int(train_counts.get(c, 0)), "n": len(part),
                     "adherence": float((part["labeled"] == c).mean()) if len(part) else float("nan"),
                     "no_category_share": float(none_share.get(c, 0.0)), "human_share": float(human_share.get(c, 0.0))})
    table = pd.DataFrame(rows)
    overall = {"category": "overall", "train_examples": int(table["train_examples"].sum()), "n": int(table["n"].sum()),
               "adherence": float((gen["labeled"] == gen["requested"]).mean()),
               # Chance that an uncontrolled output matches a uniformly requested category: 1/K * sum of shares.
               "no_category_share": float(table["no_category_share"].mean()),
               "human_share": float(table["human_share"].mean())}
    return pd.concat([table, pd.DataFrame([overall])], ignore_index=True)


def measure(run_dir: str | Path, n_items: int = 48, split: str = "test", seed: int = 0,
            ablation_run_dir: str | Path | None = None, sampling: dict | None = None) -> dict:
    run_dir = Path(run_dir)
    # The resolved copy every run writes (paths are absolute there; Hydra's own copy needs its resolvers).
    run_cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    taxonomy = load_taxonomy(OmegaConf.to_container(run_cfg.taxonomy, resolve=True))
    labeler = build_labeler(OmegaConf.to_container(run_cfg.labeler, resolve=True), taxonomy)
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
    gen["labeled"] = labeler.label(gen["output"].tolist())

    if ablation_run_dir:
        abl_model, abl_builder = load_generator(Path(ablation_run_dir) / "generator")
        ablation = f"model trained without categories ({ablation_run_dir})"
    else:
        abl_model, abl_builder = model, load_generator(run_dir / "generator", {"category": "none"})[1]
        ablation = "the same generator prompted without a category"
    none_out = generate_texts(abl_model, abl_builder, ev, [None] * len(ev), sampling, seed=seed)
    none_labels = labeler.label(none_out)
    human_labels = labeler.label(humans["text"].astype(str).tolist())
    train_counts = (_json(run_dir / "metrics.json").get("sft") or {}).get("categories_train", {})
    table = adherence_table(gen, none_labels, human_labels, taxonomy.names, train_counts)

    out = run_dir / "controllability" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=False)
    gen.to_csv(out / "generations.csv", index=False)
    pd.DataFrame({"test_id": items["test_id"], "output": none_out, "labeled": none_labels}).to_csv(
        out / "generations_no_category.csv", index=False)
    write_atomic(out / "adherence.csv", table.to_csv(index=False))
    header = (f"Controllability of {run_dir.name}: {len(items)} held-out items ({split} split), "
              f"{len(taxonomy.names)} categories, labeler {run_cfg.labeler.get('kind', 'rules')}; "
              f"no-category column: {ablation}.\n\n")
    write_atomic(out / "adherence.md", header + markdown_table(table.round(3)))
    result = {"out_dir": str(out), "n_items": len(items), "split": split, "ablation": ablation,
              "overall_adherence": float(table.iloc[-1]["adherence"]), "seconds": round(time.time() - t0, 1),
              "table": table.to_dict(orient="records")}
    write_json(out / "metrics.json", result)
    print(header + markdown_table(table.round(3)))
    return result


def _json(path: Path) -> dict:
    import json
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    if "run_dir" not in args:
        raise SystemExit(__doc__)
    set_threads(int(args["threads"]) if "threads" in args else None)
    measure(args["run_dir"], n_items=int(args.get("n_items", 48)), split=args.get("split", "test"),
            seed=int(args.get("seed", 0)), ablation_run_dir=args.get("ablation_run_dir"))


if __name__ == "__main__":
    main(sys.argv[1:])
