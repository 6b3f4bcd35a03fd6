"""Scores of many texts under a reward model: each distinct input once, in batches of similar length.

Inputs are tokenised exactly as in reward training (`pushgen.data.tokenize`: the text alone, or
the item's evidence with it). Sorting by token length before batching means a batch is padded to
about its own length, not to the longest input of the whole set; scores come back in input order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pushgen.data.tokenize import _encode_batch
from pushgen.models.reward import RewardModel


def _pad(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.as_tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@torch.no_grad()
def score_texts(model: RewardModel, texts: Sequence[str], evidence: Sequence[str] | None = None,
                batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """float64 scores, one per text; with ``evidence`` (one per text) the reward model reads the item too."""
    if batch_size < 1:
        raise ValueError(f"scoring batch_size must be >= 1, got {batch_size}")
    use_evidence = evidence is not None
    if use_evidence and len(evidence) != len(texts):
        raise ValueError(f"{len(evidence)} evidence texts for {len(texts)} texts")
    inputs = list(zip(texts, evidence if use_evidence else [""] * len(texts)))
    unique = list(dict.fromkeys(inputs))
    if not unique:
        return np.empty(0, dtype=np.float64)
    model.eval()
    tok = model.tokenizer
    encoded = _encode_batch({"text": [t for t, _ in unique], "evidence": [e for _, e in unique]}, tok,
                            max_length=int(max_length), use_evidence=use_evidence, kind=model.kind)["input_ids"]
    order = np.argsort([len(r) for r in encoded], kind="stable")[::-1]  # longest first: an oversized batch fails at once
    device = model.head.weight.device
    scores = np.empty(len(unique), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = _pad([encoded[i] for i in idx], tok.pad_token_id, tok.padding_side)
        scores[idx] = model(ids.to(device), mask.to(device)).double().cpu().numpy()
    position = {x: i for i, x in enumerate(unique)}
    return scores[[position[x] for x in inputs]]
