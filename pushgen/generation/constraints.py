"""What happens to each raw candidate before scoring: it is cleaned, checked against the configured
constraints, and compared with the item's other candidates and human texts.

Every candidate gets exactly one fate, the first rule it breaks in this order:
empty, too_short, too_long, banned_word, duplicate (repeats an earlier candidate of the same item
after normalisation), human_copy (repeats one of the item's human texts); otherwise kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pushgen.data.text import clean_text, normalise_key

KEPT = "kept"
FATES = ("empty", "too_short", "too_long", "banned_word", "duplicate", "human_copy", KEPT)
_WRAPPING_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
# A label some models put before the text itself ("Headline: ...", echoing a prompt's cue).
_LABEL = re.compile(r"^(?:headline|title|notification|push notification|story)\s*:\s*", re.IGNORECASE)


def clean_candidate(raw: str) -> str:
    """The notification inside a raw continuation: its first non-empty line, cleaned, without a
    leading "Headline:"-style label or wrapping quotes (models often quote the headline or run on
    into a second paragraph)."""
    for line in str(raw).splitlines():
        line = _LABEL.sub("", clean_text(line))
        if line:
            stripped = line.strip(_WRAPPING_QUOTES).strip()
            return stripped or line
    return ""


@dataclass(frozen=True)
class Constraints:
    """`generation.constraints`: lengths in characters, banned words or phrases (whole words, any case)."""

    min_chars: int = 1
    max_chars: int | None = None
    banned_words: tuple[str, ...] = field(default_factory=tuple)
    drop_human_copies: bool = True

    def __post_init__(self):
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"generation.constraints.max_chars ({self.max_chars}) is below min_chars ({self.min_chars})")
        words = [w.strip() for w in self.banned_words if str(w).strip()]
        # One regex for all of them; \b on both sides so "ad" does not ban "adorable".
        pattern = r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b" if words else None
        object.__setattr__(self, "_banned", re.compile(pattern, re.IGNORECASE) if pattern else None)

    @classmethod
    def from_cfg(cls, cfg: Mapping | None) -> "Constraints":
        cfg = dict(cfg or {})
        known = {"min_chars", "max_chars", "banned_words", "drop_human_copies"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"generation.constraints has unknown keys {unknown}; known: {sorted(known)}")
        if "banned_words" in cfg:
            cfg["banned_words"] = tuple(cfg["banned_words"] or ())
        return cls(**cfg)

    def rule_fate(self, text: str) -> str:
        """The fate from the text alone (no comparison with other texts)."""
        if not text:
            return "empty"
        if len(text) < self.min_chars:
            return "too_short"
        if self.max_chars is not None and len(text) > self.max_chars:
            return "too_long"
        if self._banned is not None and self._banned.search(text):
            return "banned_word"
        return KEPT


def assign_fates(items: Sequence, texts: Sequence[str], constraints: Constraints,
                 human_keys: Mapping[object, Iterable[str]] | None = None) -> tuple[list[str], list[bool]]:
    """Fate of each candidate (in the given order) and whether it repeats an earlier one of its item.

    ``items[i]`` is candidate i's item; ``human_keys[item]`` the normalised keys of its human texts.
    The repeat flag is kept apart from the fate so the duplicate rate does not depend on the rule order."""
    if len(items) != len(texts):
        raise ValueError(f"{len(items)} item ids for {len(texts)} candidates")
    human_keys = {k: set(v) for k, v in (human_keys or {}).items()}
    seen: dict[object, set[str]] = {}
    fates, repeats = [], []
    for item, text in zip(items, texts):
        key = normalise_key(text)
        item_seen = seen.setdefault(item, set())
        repeat = bool(key) and key in item_seen
        item_seen.add(key)
        fate = constraints.rule_fate(text)
        if fate == KEPT and repeat:
            fate = "duplicate"
        elif fate == KEPT and constraints.drop_human_copies and key in human_keys.get(item, ()):
            fate = "human_copy"
        fates.append(fate)
        repeats.append(repeat)
    return fates, repeats
