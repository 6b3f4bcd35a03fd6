"""The best-of-N loop on plain inputs: items -> prompts -> candidates -> fates -> scores -> picks.

Everything it needs comes in as arguments (a prompt function, a backend, scorers, a labeler), so
tests drive it with tiny models and plain-string prompts, and the generate task wires real ones."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushgen.data.text import normalise_key
from pushgen.generation.backends import GenerationBackend
from pushgen.generation.constraints import KEPT, Constraints, assign_fates, clean_candidate
from pushgen.generation.metrics import NO_CATEGORY
from pushgen.generation.select import select_best, top_k_per_category

log = logging.getLogger(__name__)

PromptFn = Callable[[str, "str | None"], Sequence[int]]
# (texts, their items' evidence) -> scores
Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]
Labeler = Callable[[Sequence[str]], Sequence[str]]


def held_out_items(pooled: pd.DataFrame, split: str = "test", limit: int | None = None,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items of one split (one per A/B test, with evidence) and their human texts.

    ``limit`` draws that many items at random with ``seed`` (reproducible); tests without evidence
    are skipped, since the generator has nothing to write about."""
    part = pooled[pooled["split"] == split]
    if part.empty:
        raise ValueError(f"no texts in split '{split}' (splits present: {sorted(pooled['split'].unique())})")
    evidence = part.groupby("test_id", sort=True)["evidence"].first()
    evidence = evidence[evidence.fillna("").str.len() > 0]
    ids = evidence.index.to_numpy()
    if limit is not None and limit < len(ids):
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=int(limit), replace=False))
    items = pd.DataFrame({"item_id": ids, "evidence": evidence.reindex(ids).to_numpy()})
    humans = part[part["test_id"].isin(ids)][["test_id", "text", "evidence", "ctr", "impressions", "clicks"]]
    humans = humans.rename(columns={"test_id": "item_id"}).reset_index(drop=True)
    # The human text that won its A/B test: the one that would have been sent.
    # (one per item; the first listed on a tie)
    humans["is_ctr_best"] = False
    humans.loc[humans.groupby("item_id")["ctr"].idxmax(), "is_ctr_best"] = True
    return items, humans


def generate_candidates(items: pd.DataFrame, categories: Sequence[str | None], prompt_fn: PromptFn,
                        backend: GenerationBackend, n: int, seed: int = 0,
                        unconditional_fn: Callable[[str], Sequence[int]] | None = None) -> pd.DataFrame:
    """n raw candidates for every (item, category); category None is the no-category prompt.
    ``unconditional_fn(evidence)``: the guidance branch's prompt (classifier-free guidance), if any."""
    keys, prompts = [], []
    for item_id, evidence in zip(items["item_id"], items["evidence"]):
        for cat in categories:
            keys.append((item_id, NO_CATEGORY if cat is None else cat, evidence))
            prompts.append(list(prompt_fn(evidence, cat)))
    unconditional = [list(unconditional_fn(ev)) for _, _, ev in keys] if unconditional_fn else None
    start = time.perf_counter()
    outputs = backend.generate(prompts, n=n, seed=seed, unconditional=unconditional)
    elapsed = time.perf_counter() - start
    rows = [{"item_id": item_id, "category": cat, "sample": j, "raw": raw, "evidence": ev}
            for (item_id, cat, ev), outs in zip(keys, outputs) for j, raw in enumerate(outs)]
    log.info("generated %d candidates for %d prompts in %.1f s (%.1f candidates/s)",
             len(rows), len(prompts), elapsed, len(rows) / max(elapsed, 1e-9))
    table = pd.DataFrame(rows, columns=["item_id", "category", "sample", "raw", "evidence"])
    table.attrs["seconds"] = elapsed
    return table


@dataclass
class BestOfN:
    candidates: pd.DataFrame   # every candidate with its fate, scores and label
    humans: pd.DataFrame       # the items' human texts with their scores
    selections: pd.DataFrame   # best kept candidate per item
    top_k: pd.DataFrame        # best k kept candidates per item and category


def score_and_select(raw: pd.DataFrame, humans: pd.DataFrame, constraints: Constraints, scorer: Scorer,
                     gold_scorer: Scorer | None = None, labeler: Labeler | None = None, top_k: int = 1) -> BestOfN:
    """Clean and judge the raw candidates, score survivors and human texts, and select."""
    cand = raw.copy()
    cand["text"] = [clean_candidate(t) for t in cand["raw"]]
    human_keys = humans.groupby("item_id")["text"].agg(lambda s: {normalise_key(t) for t in s}).to_dict()
    cand["fate"], cand["repeat"] = assign_fates(cand["item_id"].tolist(), cand["text"].tolist(), constraints, human_keys)
    cand["n_chars"] = cand["text"].str.len()
    kept = cand["fate"] == KEPT
    humans = humans.copy()
    cand["score"] = np.nan
    # Candidates and human texts in one scoring pass: one sort by length, one set of batches.
    texts = cand.loc[kept, "text"].tolist() + humans["text"].tolist()
    evidence = cand.loc[kept, "evidence"].tolist() + humans["evidence"].tolist()
    scores = scorer(texts, evidence)
    cand.loc[kept, "score"] = scores[:kept.sum()]
    humans["score"] = scores[kept.sum():]
    if gold_scorer is not None:
        gold = gold_scorer(texts, evidence)
        cand["gold_score"] = np.nan
        cand.loc[kept, "gold_score"] = gold[:kept.sum()]
        humans["gold_score"] = gold[kept.sum():]
    if labeler is not None:
        cand["label"] = None
        cand.loc[kept, "label"] = list(labeler(cand.loc[kept, "text"].tolist()))
        humans["label"] = list(labeler(humans["text"].tolist()))
    selections = select_best(cand)
    top = top_k_per_category(cand, top_k)
    return BestOfN(candidates=cand, humans=humans, selections=selections, top_k=top)
