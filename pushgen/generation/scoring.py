"""Scores of many texts under a reward model: each distinct text once, in batches of similar length.

Sorting by token length before batching means a batch is padded to about its own length, not to the
longest text of the whole set; scores are returned in the input order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pushgen.models.reward import RewardModel


@torch.no_grad()
def score_texts(model: RewardModel, texts: Sequence[str], batch_size: int = 64,
                max_length: int | None = 64) -> np.ndarray:
    """float64 scores, one per input text (repeated texts share one forward pass)."""
    if batch_size < 1:
        raise ValueError(f"scoring batch_size must be >= 1, got {batch_size}")
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.empty(0, dtype=np.float64)
    model.eval()
    tok = model.tokenizer
    lengths = [len(ids) for ids in tok(unique, truncation=max_length is not None, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")[::-1]  # longest first: a too-large batch fails at once
    scores = np.empty(len(unique), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = model.tokenize([unique[i] for i in idx], max_length=max_length)
        scores[idx] = model(**batch).double().cpu().numpy()
    position = {t: i for i, t in enumerate(unique)}
    return scores[[position[t] for t in texts]]
