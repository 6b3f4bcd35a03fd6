"""How well each labeler agrees with the hand labels: `python -m pushgen.categories.agreement`.

Reads the hand-label keys (``hand_labels`` in conf/categories.yaml), fetches each headline from
the data file, runs every labeler in ``compare`` and writes, into a new run folder, per labeler:
accuracy, Cohen's kappa, per-category precision / recall / F1 with counts, and the confusion
matrix (``agreement.json``, ``agreement.md``, and ``predictions.csv`` with keys and labels, no
text). Figures are given for each sample of the label file (its ``sample`` column) and for
all rows together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def agreement(gold: Sequence[str], pred: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, Cohen's kappa and per-category precision/recall/F1 of ``pred`` against ``gold``.

    Kappa = (p_o - p_e) / (1 - p_e), p_e = sum_k (gold share of k)(pred share of k); 1.0 when both
    sides use a single identical category. A category never predicted has precision None, one
    never in gold has recall None (not 0: there is nothing to measure)."""
    gold, pred, names = list(gold), list(pred), list(names)
    if len(gold) != len(pred) or not gold:
        raise ValueError(f"agreement needs equal, non-empty label lists; got {len(gold)} and {len(pred)}")
    unknown = sorted((set(gold) | set(pred)) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the categories {names}")
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)             # rows: gold, columns: predicted
    for g, p in zip(gold, pred):
        confusion[index[g], index[p]] += 1
    n = confusion.sum()
    p_o = np.trace(confusion) / n
    p_e = float((confusion.sum(1) / n) @ (confusion.sum(0) / n))
    kappa = 1.0 if p_e == 1.0 else float((p_o - p_e) / (1 - p_e))
    per = {}
    for name, i in index.items():
        tp, support, predicted = int(confusion[i, i]), int(confusion[i].sum()), int(confusion[:, i].sum())
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall > 0 else
              (0.0 if precision is not None and recall is not None else None))
        per[name] = {"support": support, "predicted": predicted, "correct": tp, "precision": precision,
                     "recall": recall, "f1": f1}
    return {"n": int(n), "accuracy": float(p_o), "kappa": kappa, "per_category": per,
            "confusion": confusion.tolist(), "names": names}


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def markdown_table(results: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    """One table: rows = categories (+ overall), columns = per labeler recall/precision."""
    labelers = list(results)
    head = "| category | hand labels (n) | " + " | ".join(f"{lab}: P / R" for lab in labelers) + " |"
    lines = [head, "| --- | --- | " + " | ".join("---" for _ in labelers) + " |"]
    first = results[labelers[0]]
    for name in names:
        cells = [f"{_fmt(results[lab]['per_category'][name]['precision'])} / "
                 f"{_fmt(results[lab]['per_category'][name]['recall'])}" for lab in labelers]
        lines.append(f"| {name} | {first['per_category'][name]['support']} | " + " | ".join(cells) + " |")
    lines.append(f"| **accuracy** | {first['n']} | " + " | ".join(f"{results[lab]['accuracy']:.3f}" for lab in labelers) + " |")
    lines.append("| **Cohen's kappa** | | " + " | ".join(f"{results[lab]['kappa']:.3f}" for lab in labelers) + " |")
    return "\n".join(lines)


TITLES = {"uniform": "uniform sample (an estimate for the whole file)",
          "enriched": "enriched sample (headlines with a digit or a quotation mark)",
          "heldout": "held-out sample (labelled after the rules were revised)",
          "all": "all hand labels"}


def _parts(labels) -> list[tuple[str, np.ndarray]]:
    """Each sample of the label file on its own, then all rows together."""
    parts = [(str(s), (labels["sample"] == s).to_numpy()) for s in dict.fromkeys(labels["sample"])]
    return parts + [("all", np.ones(len(labels), dtype=bool))]


def run_agreement(cfg) -> dict[str, Any]:
    """Label the hand-labelled headlines with each labeler in ``cfg.compare``; write and return the figures."""
    from omegaconf import OmegaConf, open_dict

    from pushgen.categories.hand_labels import read_hand_labels
    from pushgen.categories.labelers import build_labeler
    from pushgen.categories.taxonomy import load_taxonomy
    from pushgen.utils.config import REPO_ROOT
    from pushgen.utils.run import set_threads, write_atomic, write_json

    set_threads(cfg.get("threads"))
    taxonomy = load_taxonomy(cfg.taxonomy)
    labels = read_hand_labels(cfg.hand_labels, cfg.data_path, taxonomy.names)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    predictions = labels[["test_id", "headline_key", "sample", "label"]].copy()
    # `compare`: labeler files to run side by side; null runs the composed `labeler` node as is,
    # so a variant can be measured from the command line (labeler.C=1 ...).
    names = list(cfg.compare) if cfg.get("compare") else [str(cfg.labeler.kind)]
    for name in names:
        if cfg.get("compare"):
            path = REPO_ROOT / "conf" / "labeler" / f"{name}.yaml"
            if not path.exists():
                raise FileNotFoundError(f"compare: no labeler file {path}; available: "
                                        f"{sorted(p.stem for p in path.parent.glob('*.yaml'))}")
            node = OmegaConf.load(path)
            with open_dict(cfg):
                cfg.labeler = node              # interpolations such as ${paths.cache_dir} resolve in cfg
        labeler = build_labeler(cfg.labeler, taxonomy)
        pred = labeler.label(labels["text"].tolist())
        predictions[name] = pred
        results[name] = {}
        for part, mask in _parts(labels):
            results[name][part] = agreement(labels.loc[mask, "label"], np.asarray(pred)[mask], taxonomy.names)
    text = [f"### {TITLES.get(part, part)} (n = {next(iter(results.values()))[part]['n']})\n\n"
            + markdown_table({k: r[part] for k, r in results.items()}, taxonomy.names)
            for part, _ in _parts(labels)]
    report = "\n\n".join(text) + "\n"
    print(report)
    write_atomic(out / "agreement.md", report)
    write_json(out / "agreement.json", {"hand_labels": str(cfg.hand_labels), "data_path": str(cfg.data_path),
                                        "taxonomy": taxonomy.name, "results": results})
    predictions.to_csv(out / "predictions.csv", index=False)      # keys and labels only, no text
    log.info("agreement written to %s", out)
    return results


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    from pushgen.utils.config import REPO_ROOT

    @hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="categories")
    def _main(cfg: DictConfig) -> None:
        run_agreement(cfg)

    _main()


if __name__ == "__main__":
    main()
