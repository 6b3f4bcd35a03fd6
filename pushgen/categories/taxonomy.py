"""Style categories of notification texts, defined in config (`conf/taxonomy/*.yaml`).

A taxonomy is an ordered list of categories (name, one-line description, and the patterns and
word lists the rule labeler matches), a ``fallback`` category for texts no rule fires on, and a
``priority`` order that picks the one primary category when several fire. Everything is checked
on load, so a typo in a taxonomy file fails there, naming the key, not later as a wrong label.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushgen.utils.config import to_plain

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CATEGORY_KEYS = {"name", "description", "patterns", "words"}
_TAXONOMY_KEYS = {"name", "fallback", "priority", "categories"}


class TaxonomyError(ValueError):
    """A taxonomy config that cannot define categories; the message names the key to fix."""


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    # Rule-labeler evidence: regular expressions (case-insensitive) and whole words or phrases.
    patterns: tuple[str, ...] = ()
    words: tuple[str, ...] = ()


class Taxonomy:
    """An ordered, validated set of categories. Iterating yields them in file order; ``priority``
    is the tie-break order of the rule labeler (first = wins)."""

    def __init__(self, categories: Sequence[Category], fallback: str, priority: Sequence[str] | None = None,
                 name: str = "custom"):
        self.name = name
        self.categories: tuple[Category, ...] = tuple(categories)
        self._by_name = {c.name: c for c in self.categories}
        self.fallback = fallback
        self.priority: tuple[str, ...] = tuple(priority) if priority else tuple(self.names)
        self._check()

    def _check(self) -> None:
        if not self.categories:
            raise TaxonomyError("taxonomy.categories is empty: define at least one category")
        seen: set[str] = set()
        for i, cat in enumerate(self.categories):
            where = f"taxonomy.categories[{i}]"
            if not isinstance(cat.name, str) or not _NAME.match(cat.name):
                raise TaxonomyError(f"{where}.name must be a lower-case identifier (a-z, 0-9, _), got {cat.name!r}")
            if cat.name in seen:
                raise TaxonomyError(f"{where}.name: duplicate category name '{cat.name}'")
            seen.add(cat.name)
            if not isinstance(cat.description, str) or not cat.description.strip():
                raise TaxonomyError(f"{where} ('{cat.name}'): description is empty; give a one-line description")
            for j, pattern in enumerate(cat.patterns):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise TaxonomyError(f"{where}.patterns[{j}] ('{cat.name}'): invalid regular expression "
                                        f"{pattern!r}: {exc}") from exc
            for j, word in enumerate(cat.words):
                if not isinstance(word, str) or not word.strip():
                    raise TaxonomyError(f"{where}.words[{j}] ('{cat.name}'): empty word")
        if self.fallback not in self._by_name:
            raise TaxonomyError(f"taxonomy.fallback: unknown category '{self.fallback}'; allowed: {self.names}")
        unknown = [p for p in self.priority if p not in self._by_name]
        if unknown:
            raise TaxonomyError(f"taxonomy.priority: unknown category {unknown}; allowed: {self.names}")
        if len(set(self.priority)) != len(self.priority):
            raise TaxonomyError(f"taxonomy.priority lists a category twice: {list(self.priority)}")
        missing = [n for n in self.names if n not in self.priority]
        if missing:
            raise TaxonomyError(f"taxonomy.priority must list every category; missing {missing}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def get(self, name: str) -> Category:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown category '{name}'; allowed: {self.names}") from None

    def index(self, name: str) -> int:
        """Column of ``name`` in score arrays (file order)."""
        self.get(name)
        return self.names.index(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.categories)

    def __iter__(self) -> Iterator[Category]:
        return iter(self.categories)

    def __repr__(self) -> str:
        return f"Taxonomy({self.name!r}, {self.names}, fallback={self.fallback!r})"

    def as_dict(self) -> dict[str, Any]:
        """Plain form (for fingerprints and saved models)."""
        return {"name": self.name, "fallback": self.fallback, "priority": list(self.priority),
                "categories": [{"name": c.name, "description": c.description, "patterns": list(c.patterns),
                                "words": list(c.words)} for c in self.categories]}


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TaxonomyError(f"{where} must be a list of strings, got {type(value).__name__}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise TaxonomyError(f"{where} must hold strings only, got {bad[0]!r}")
    return tuple(value)


def load_taxonomy(cfg: Mapping[str, Any] | str | Path) -> Taxonomy:
    """Build a :class:`Taxonomy` from the ``taxonomy`` config node (or a YAML file path)."""
    if isinstance(cfg, (str, Path)):
        import yaml
        path = Path(cfg)
        if not path.exists():
            raise TaxonomyError(f"taxonomy file {path} does not exist")
        cfg = yaml.safe_load(path.read_text()) or {}
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise TaxonomyError(f"the taxonomy config must be a mapping, got {type(cfg).__name__}")
    unknown = set(cfg) - _TAXONOMY_KEYS
    if unknown:
        raise TaxonomyError(f"unknown key(s) {sorted(unknown)} in taxonomy; allowed: {sorted(_TAXONOMY_KEYS)}")
    entries = cfg.get("categories")
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise TaxonomyError("taxonomy.categories must be a non-empty list of {name, description, patterns, words}")
    cats = []
    for i, entry in enumerate(entries):
        where = f"taxonomy.categories[{i}]"
        if not isinstance(entry, Mapping):
            raise TaxonomyError(f"{where} must be a mapping with name and description, got {entry!r}")
        extra = set(entry) - _CATEGORY_KEYS
        if extra:
            raise TaxonomyError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {sorted(_CATEGORY_KEYS)}")
        for key in ("name", "description"):
            if key not in entry:
                raise TaxonomyError(f"{where}: missing '{key}'")
        cats.append(Category(name=entry["name"], description=entry["description"] or "",
                             patterns=_strings(entry.get("patterns"), f"{where}.patterns"),
                             words=_strings(entry.get("words"), f"{where}.words")))
    if "fallback" not in cfg:
        raise TaxonomyError("taxonomy.fallback is missing: name the category a text gets when no rule fires")
    priority = _strings(cfg.get("priority"), "taxonomy.priority") or None
    return Taxonomy(cats, fallback=cfg["fallback"], priority=priority, name=str(cfg.get("name", "custom")))


def check_taxonomy_config(node: Any, path: str, errors: list[str]) -> None:
    """Config-schema hook (pushgen.utils.schema): a taxonomy group that does not load is one error."""
    try:
        load_taxonomy(node)
    except TaxonomyError as exc:
        errors.append(f"{path}: {exc}")
