"""Offline metrics of a best-of-N run, computed from plain tables (each defined in the README).

Tables: ``candidates`` (item_id, category, text, fate, repeat, score[, label]), ``humans``
(item_id, text, score, is_ctr_best) and ``selections`` (one row per item, from select.select_best).
Words for diversity are lower-cased runs of letters, digits and apostrophes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from pushgen.generation.constraints import FATES, KEPT

_WORD = re.compile(r"[\w']+")
NO_CATEGORY = "none"


def words(text: str) -> list[str]:
    return _WORD.findall(str(text).casefold())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (NaN when they hold no n-gram)."""
    grams = [g for t in texts for g in _ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4,
         epsilon: float = 0.1) -> float:
    """Sentence BLEU of a token list against reference token lists.

    Clipped n-gram precisions for n = 1..max_n with equal weights; an order with no match counts
    epsilon matches (so one missing order does not zero the score); orders longer than the
    hypothesis are left out; brevity penalty against the closest reference length (the shorter on
    a tie)."""
    if not hypothesis or not references:
        return 0.0
    logs = []
    for n in range(1, max_n + 1):
        hyp = Counter(_ngrams(hypothesis, n))
        total = sum(hyp.values())
        if total == 0:
            break
        best: Counter = Counter()
        for ref in references:
            best |= Counter(_ngrams(ref, n))  # | keeps the largest count per n-gram
        matches = sum(min(c, best[g]) for g, c in hyp.items())
        logs.append(math.log((matches if matches > 0 else epsilon) / total))
    c = len(hypothesis)
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(sum(logs) / len(logs))


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Mean BLEU of each text against all the others (higher = less diverse); NaN below two texts."""
    tokens = [words(t) for t in texts]
    if len(tokens) < 2:
        return float("nan")
    return float(np.mean([bleu(tokens[i], tokens[:i] + tokens[i + 1:], max_n=max_n) for i in range(len(tokens))]))


def diversity(texts: Sequence[str], max_n: int = 4) -> dict[str, float]:
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "self_bleu": self_bleu(texts, max_n=max_n)}


def _mean(values) -> float:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def within_item_diversity(candidates: pd.DataFrame, max_n: int = 4) -> dict[str, float]:
    """Diversity of each item's kept candidates, averaged over items with at least two."""
    per_item = [diversity(g["text"].tolist(), max_n) for _, g in candidates.groupby("item_id", sort=False) if len(g) >= 2]
    return {k: _mean([d[k] for d in per_item]) for k in ("distinct_1", "distinct_2", "self_bleu")}


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    chars = np.array([len(t) for t in texts], dtype=float)
    n_words = np.array([len(words(t)) for t in texts], dtype=float)
    if len(chars) == 0:
        return {"n": 0}
    return {"n": int(len(chars)), "chars_mean": float(chars.mean()), "chars_median": float(np.median(chars)),
            "chars_p90": float(np.percentile(chars, 90)), "chars_max": float(chars.max()),
            "words_mean": float(n_words.mean())}


def adherence(selected: pd.DataFrame) -> dict[str, float]:
    """Share of rows whose labeler category equals the requested one, overall and per category
    (rows generated without a category are left out)."""
    rows = selected[selected["category"] != NO_CATEGORY]
    if rows.empty or "label" not in rows:
        return {}
    hit = rows["label"] == rows["category"]
    out = {"overall": float(hit.mean()), "n": int(len(rows))}
    out.update({f"cat/{c}": float(h.mean()) for c, h in hit.groupby(rows["category"], sort=True)})
    return out


def score_length_correlation(texts: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    chars = np.array([len(t) for t in texts], dtype=float)
    scores = np.asarray(scores, dtype=float)
    if len(chars) < 3 or np.ptp(chars) == 0 or np.ptp(scores) == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": float(stats.pearsonr(chars, scores)[0]), "spearman": float(stats.spearmanr(chars, scores)[0])}


def selection_metrics(candidates: pd.DataFrame, humans: pd.DataFrame, selections: pd.DataFrame,
                      score: str = "score", max_n: int = 4) -> dict:
    """Every offline metric of one run; see the README for each definition."""
    items = pd.Index(humans["item_id"].unique())
    best_human = humans.groupby("item_id")[score].max().reindex(items)
    sent_human = humans[humans["is_ctr_best"]].groupby("item_id")[score].first().reindex(items)
    kept = candidates[candidates["fate"] == KEPT]
    random_pick = kept.groupby("item_id")[score].mean()
    sel = selections.set_index("item_id")[score]
    replaced = (sel >= best_human.reindex(sel.index)).reindex(items, fill_value=False)
    n_cand = len(candidates)
    fates = candidates["fate"].value_counts()
    out = {
        "n_items": int(len(items)),
        "n_items_with_selection": int(len(sel)),
        "n_candidates": int(n_cand),
        "fates": {f: int(fates.get(f, 0)) for f in FATES},
        "kept_rate": float(fates.get(KEPT, 0) / n_cand) if n_cand else float("nan"),
        "duplicate_rate": float(candidates["repeat"].mean()) if n_cand else float("nan"),
        "replacement_rate": float(replaced.mean()) if len(items) else float("nan"),
        "lift_over_human": float((sel - sent_human.reindex(sel.index)).mean()),
        "lift_over_best_human": float((sel - best_human.reindex(sel.index)).mean()),
        "lift_over_random": float((sel - random_pick.reindex(sel.index)).mean()),
        "score_selected_mean": float(sel.mean()),
        "score_human_mean": float(humans[score].mean()),
        "score_candidates_mean": float(kept[score].mean()),
        "diversity_within_item": within_item_diversity(kept, max_n),
        "diversity_across_items": diversity(selections["text"].tolist(), max_n),
        "diversity_human_across_items": diversity(humans[humans["is_ctr_best"]]["text"].tolist(), max_n),
        "length": {"candidates": length_stats(kept["text"].tolist()), "selected": length_stats(selections["text"].tolist()),
                   "human": length_stats(humans["text"].tolist())},
        "score_length_corr": score_length_correlation(kept["text"].tolist(), kept[score].to_numpy()),
    }
    if "label" in selections:
        out["adherence_selected"] = adherence(selections)
    if "label" in kept:
        out["adherence_candidates"] = adherence(kept)
    return out
