"""SFT data for the generator: A/B tests -> (evidence, category, target) rows -> token examples -> batches.

The rows come from ``PreparedData.pooled`` of ``pushgen.data.pipeline.prepare``: the same split as
the reward model for the same data config and seed, so an item in the reward model's test split is
never in the generator's training split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from pushgen.categories.prompts import IGNORE_INDEX, PromptBuilder
from pushgen.data.errors import DataError

log = logging.getLogger(__name__)

TARGET_MODES = ("best_arm", "all_arms")


def sft_rows(pooled: pd.DataFrame, mode: str = "best_arm", min_impressions: int = 0) -> pd.DataFrame:
    """One row per SFT target: test_id, split, evidence, text, ctr, impressions, weight.

    best_arm: each test's text with the highest pooled CTR (ties: more impressions, then first seen),
    weight 1. all_arms: every text, weighted by its CTR relative to its test's mean CTR (a test's
    weights average 1, so a test with many arms is not worth more than one with two).
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"sft.targets must be one of {TARGET_MODES}, got {mode!r}")
    need = {"test_id", "split", "text", "ctr", "impressions"}
    missing = need - set(pooled.columns)
    if missing:
        raise DataError(f"pooled arms lack column(s) {sorted(missing)}", hint="build them with pushgen.data.pipeline.prepare")
    df = pooled[pooled["impressions"] >= int(min_impressions)].copy()
    df["evidence"] = df["evidence"].fillna("") if "evidence" in df else ""
    df = df[df["text"].astype(str).str.strip() != ""]
    if mode == "best_arm":
        order = df.assign(_pos=np.arange(len(df))).sort_values(["ctr", "impressions", "_pos"],
                                                               ascending=[False, False, True], kind="stable")
        df = order.drop_duplicates("test_id").sort_values("_pos").drop(columns="_pos")
        df["weight"] = 1.0
    else:
        mean = df.groupby("test_id")["ctr"].transform("mean")
        df["weight"] = np.where(mean > 0, df["ctr"] / mean.where(mean > 0, 1.0), 1.0)
    if df.empty:
        raise DataError("no SFT targets are left", hint=f"lower sft.min_impressions (now {min_impressions})")
    cols = ["test_id", "split", "evidence", "text", "ctr", "impressions", "weight"]
    return df[cols].reset_index(drop=True)


def label_rows(rows: pd.DataFrame, labeler) -> pd.DataFrame:
    """Add each target's style category (the labeler's primary category)."""
    return rows.assign(category=labeler.label(rows["text"].astype(str).tolist()))


def tokenize_rows(rows: pd.DataFrame, builder: PromptBuilder, unconditional: bool = False,
                  contrast: Sequence[str] = ()) -> list[dict]:
    """Token examples (input_ids, labels, weight, category) in row order; empty targets raise or are
    skipped by the builder's ``on_empty_target`` (and counted in ``builder.stats``).

    ``unconditional``: each example also carries ``unconditional`` (the same target after the prompt
    without its style line) for ``CategoryDropout`` to swap in. ``contrast`` (category names): each
    example also carries ``contrast``, its target after the prompt of every other of these
    categories, for ``CategoryContrast``."""
    out = []
    for ev, cat, text, w in zip(rows["evidence"], rows["category"], rows["text"], rows["weight"]):
        ex = builder.example(str(ev), cat if builder.use_category else None, str(text))
        if ex is not None:
            # The category is kept even when the prompt omits it, so a balanced ablation sees the same data.
            item = {**ex, "weight": float(w), "category": cat}
            if unconditional:
                item["unconditional"] = builder.unconditional_example(str(ev), ex)
            if contrast:
                item["contrast"] = {c: builder.example_as(str(ev), ex, c) for c in contrast if c != cat}
            out.append(item)
    return out


class CategoryContrast:
    """Collate wrapper: each example also enters the batch under a wrong category's prompt.

    The batch gets the wrong-prompt rows after the real ones and ``contrast_pairs`` (K, 2): the row
    of each example and of its twin. ``SFTModule`` then asks that the target be likelier under its
    own category than under the other (``sft.category_contrast``), which is what guidance and
    controllability need and plain likelihood does not ask for when a style is the data's default.
    The wrong category is drawn uniformly from the others with a seeded generator."""

    def __init__(self, collate, seed: int):
        if getattr(collate, "pack", False):
            raise ValueError("sft.category_contrast needs one example per row: set sft.packing.enabled=false")
        self.collate = collate
        self.gen = torch.Generator().manual_seed(int(seed) + 2)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        twins, pairs = [], []
        for i, e in enumerate(examples):
            others = sorted(e.get("contrast") or {})
            if not others:  # e.g. swapped for its unconditional twin by CategoryDropout
                continue
            pick = others[int(torch.randint(len(others), (1,), generator=self.gen))]
            pairs.append((i, len(examples) + len(twins)))
            twins.append({**e["contrast"][pick], "weight": 0.0})
        batch = self.collate(list(examples) + twins)
        batch["contrast_pairs"] = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
        return batch


class CategoryDropout:
    """Collate wrapper: each example's prompt loses its style line with probability ``p``.

    The classifier-free-guidance recipe: one model learns both p(text | category) and p(text), so the
    branch guidance subtracts is the fine-tuned data's own mix rather than the base model's habit
    (which, for the style it writes by default, leaves almost no difference to amplify). Draws come
    from a seeded generator, so a run repeats."""

    def __init__(self, collate, p: float, seed: int):
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"sft.category_dropout must be in [0, 1), got {p}")
        self.collate, self.p = collate, float(p)
        self.gen = torch.Generator().manual_seed(int(seed) + 1)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        drop = torch.rand(len(examples), generator=self.gen) < self.p
        swapped = []
        for e, d in zip(examples, drop.tolist()):
            if d:
                if "unconditional" not in e:
                    raise ValueError("sft.category_dropout > 0 needs examples built with tokenize_rows(..., unconditional=True)")
                e = {**e, **e["unconditional"]}
                e.pop("contrast", None)  # no category left to contrast
            swapped.append(e)
        return self.collate(swapped)


def category_sampling_weights(categories: Sequence[str], balance: float) -> np.ndarray:
    """Per-example draw probabilities proportional to n_c ** -balance (n_c: examples of the example's category).

    balance = 0 keeps the data's own mix, 1 gives every category the same share of draws; values in
    between temper the mix. A rare style is then seen often enough for its prompt to be learned.
    """
    if not 0.0 <= float(balance) <= 1.0:
        raise ValueError(f"sft.category_balance must be in [0, 1], got {balance}")
    cats = pd.Series(list(categories), dtype=object)
    counts = cats.map(cats.value_counts()).to_numpy(dtype=np.float64)
    w = counts ** (-float(balance))
    return w / w.sum()


def pack_rows(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """First-fit packing of example indices into rows of at most max_tokens (a longer example gets its own row)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max(int(max_tokens) - n, 0))
    return rows


class SFTCollator:
    """Batches of SFT examples, padded (one example per row) or packed (several per row).

    Packed rows carry per-example position ids and no attention mask: transformers then builds a
    block-diagonal causal mask from the position ids, so no token attends across examples. Every
    batch has ``token_weight`` (the example weight at each target position, 0 elsewhere).
    """

    def __init__(self, pad_id: int, pack: bool = False, pack_tokens: int = 512):
        self.pad_id = int(pad_id)
        self.pack = bool(pack)
        self.pack_tokens = int(pack_tokens)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.pack:
            groups = pack_rows([len(e["input_ids"]) for e in examples], self.pack_tokens)
        else:
            groups = [[i] for i in range(len(examples))]
        width = max(sum(len(examples[i]["input_ids"]) for i in g) for g in groups)
        ids = torch.full((len(groups), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(groups), width), IGNORE_INDEX, dtype=torch.long)
        weight = torch.zeros((len(groups), width), dtype=torch.float32)
        pos = torch.zeros((len(groups), width), dtype=torch.long)
        mask = torch.zeros((len(groups), width), dtype=torch.long)
        for r, g in enumerate(groups):
            at = 0
            for i in g:
                e = examples[i]
                n = len(e["input_ids"])
                ids[r, at:at + n] = torch.tensor(e["input_ids"])
                lab = torch.tensor(e["labels"])
                labels[r, at:at + n] = lab
                weight[r, at:at + n] = (lab != IGNORE_INDEX).float() * float(e.get("weight", 1.0))
                pos[r, at:at + n] = torch.arange(n)
                mask[r, at:at + n] = 1
                at += n
            # The padded tail restarts its positions: a separate block that nothing real attends to.
            pos[r, at:] = torch.arange(width - at)
        batch = {"input_ids": ids, "labels": labels, "token_weight": weight}
        if self.pack:
            batch["position_ids"] = pos
        else:
            batch["attention_mask"] = mask
        return batch


class SFTDataModule:
    """Train/val example lists and their loaders (a plain object: Lightning accepts any loaders)."""

    def __init__(self, examples: dict[str, list[dict]], pad_id: int, batch_size: int, eval_batch_size: int,
                 pack: bool, pack_tokens: int, seed: int, category_balance: float = 0.0,
                 category_dropout: float = 0.0, category_contrast: bool = False):
        self.examples = examples
        self.category_balance = float(category_balance)
        if self.category_balance:
            self.train_weights = category_sampling_weights([e["category"] for e in examples["train"]],
                                                           self.category_balance)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.train_collate = SFTCollator(pad_id, pack=pack, pack_tokens=pack_tokens)
        if category_contrast:
            self.train_collate = CategoryContrast(self.train_collate, seed)
        if category_dropout:
            # Training only: validation loss stays the conditional loss, comparable across runs.
            self.train_collate = CategoryDropout(self.train_collate, category_dropout, seed)
        self.eval_collate = SFTCollator(pad_id, pack=False)
        self.seed = int(seed)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        if not self.category_balance:
            return torch.utils.data.DataLoader(self.examples["train"], batch_size=self.batch_size, shuffle=True,
                                               generator=g, collate_fn=self.train_collate)
        # An epoch is as many draws (with replacement) as there are examples, at the tempered mix.
        sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(self.train_weights), len(self.train_weights),
                                                         replacement=True, generator=g)
        return torch.utils.data.DataLoader(self.examples["train"], batch_size=self.batch_size, sampler=sampler,
                                           collate_fn=self.train_collate)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.examples["val"], batch_size=self.eval_batch_size, shuffle=False,
                                           collate_fn=self.eval_collate)
