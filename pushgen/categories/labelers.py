"""Labelers: give each text ONE primary style category of a :class:`Taxonomy`.

- :class:`RuleLabeler` (``labeler=rules``, the default): every category's patterns and word lists
  from the taxonomy file are matched; the primary category is the first category in the
  taxonomy's ``priority`` order that fired, and ``fallback`` when none did.
- :class:`LearnedLabeler` (``labeler=learned``): a TF-IDF + logistic-regression classifier trained
  by the framework on the rule labels of many real headlines (see :mod:`pushgen.categories.learned`),
  so it also labels wordings the rules do not list. Saved as JSON + NPZ (no pickle).

``build_labeler(cfg, taxonomy)`` picks one from the ``labeler`` config node (``kind``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pushgen.categories.taxonomy import Category, Taxonomy
from pushgen.data.text import clean_text

# Typographic quotes and dashes written plainly, so one pattern covers both spellings.
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u2026": "..."})


def normalise_for_rules(text: str) -> str:
    """The form rules are matched on: cleaned text with straight quotes and '...' for an ellipsis."""
    return clean_text(text).translate(_PLAIN)


@runtime_checkable
class Labeler(Protocol):
    taxonomy: Taxonomy

    def label(self, texts: Sequence[str]) -> list[str]:
        """One category name of the taxonomy per text."""
        ...

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """[n_texts, n_categories] in taxonomy order; larger = more of that category."""
        ...


def _word_regex(words: Sequence[str]) -> str:
    # Longest first so a phrase wins over its first word; a space matches any run of whitespace.
    alts = [re.escape(w.strip()).replace(r"\ ", r"\s+") for w in sorted(set(words), key=len, reverse=True)]
    return r"(?<![\w'])(?:" + "|".join(alts) + r")(?![\w'])"


class RuleLabeler:
    """Pattern and word-list matching from the taxonomy file. ``scores`` counts the hits per
    category (the fallback scores 1 when nothing else fired); ``label`` applies the priority order."""

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self._rules: list[list[re.Pattern[str]]] = [self._compile(c) for c in taxonomy]
        self._fallback = taxonomy.index(taxonomy.fallback)
        # Column indices in priority order, for the tie-break.
        self._order = [taxonomy.index(n) for n in taxonomy.priority]

    @staticmethod
    def _compile(cat: Category) -> list[re.Pattern[str]]:
        regexes = [re.compile(p, re.IGNORECASE) for p in cat.patterns]
        if cat.words:
            regexes.append(re.compile(_word_regex(cat.words), re.IGNORECASE))
        return regexes

    def hits(self, text: str) -> np.ndarray:
        """Number of matches of each category's rules in one text (taxonomy order)."""
        plain = normalise_for_rules(text)
        counts = np.zeros(len(self.taxonomy), dtype=np.float32)
        for k, regexes in enumerate(self._rules):
            counts[k] = sum(len(r.findall(plain)) for r in regexes)
        if not counts.any():
            counts[self._fallback] = 1.0
        return counts

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        texts = _as_texts(texts)
        if not texts:
            return np.zeros((0, len(self.taxonomy)), dtype=np.float32)
        return np.stack([self.hits(t) for t in texts])

    def _primary(self, counts: np.ndarray) -> str:
        for k in self._order:
            if counts[k] > 0 and k != self._fallback:
                return self.taxonomy.categories[k].name
        return self.taxonomy.fallback

    def label(self, texts: Sequence[str]) -> list[str]:
        return [self._primary(self.hits(t)) for t in _as_texts(texts)]

    def explain(self, text: str) -> dict[str, list[str]]:
        """Which rule text matched, per category (for debugging a taxonomy file)."""
        plain = normalise_for_rules(text)
        out = {}
        for cat, regexes in zip(self.taxonomy, self._rules):
            found = [m.group(0) for r in regexes for m in r.finditer(plain)]
            if found:
                out[cat.name] = found
        return out


def _as_texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("label()/scores() take a sequence of texts, not one string; wrap it in a list")
    return [t if isinstance(t, str) else clean_text(t) for t in texts]


LABELER_KINDS = ("rules", "learned")
# Keys each kind reads (conf/labeler/*.yaml); anything else is a typo the schema check reports.
LABELER_KEYS = {"rules": {"kind"},
                "learned": {"kind", "sources", "exclude_labels", "max_texts", "seed", "features", "C", "max_iter",
                            "class_weight", "path", "cache_dir"}}


def build_labeler(cfg: Mapping[str, Any] | None, taxonomy: Taxonomy) -> Labeler:
    """The labeler named by ``cfg.kind`` (``rules`` or ``learned``) for ``taxonomy``."""
    cfg = cfg or {"kind": "rules"}
    kind = cfg.get("kind", "rules")
    if kind == "rules":
        return RuleLabeler(taxonomy)
    if kind == "learned":
        from pushgen.categories.learned import load_or_train
        return load_or_train(cfg, taxonomy)
    raise ValueError(f"labeler.kind must be one of {list(LABELER_KINDS)}, got {kind!r}")


def check_labeler_config(node: Any, path: str, errors: list[str]) -> None:
    """Config-schema hook (pushgen.utils.schema): a known ``kind`` and only the keys it reads."""
    if not isinstance(node, Mapping) and not hasattr(node, "keys"):
        errors.append(f"{path}: expected a mapping with a kind, got {node!r}")
        return
    kind = node.get("kind")
    if kind not in LABELER_KINDS:
        errors.append(f"{path}.kind: {kind!r} is not allowed; allowed: {', '.join(map(repr, LABELER_KINDS))}")
        return
    for key in node:
        if key not in LABELER_KEYS[kind]:
            errors.append(f"{path}.{key}: not a key of the {kind} labeler; allowed: {', '.join(sorted(LABELER_KEYS[kind]))}")
