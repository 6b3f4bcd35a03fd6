"""Text hygiene for A/B logs: strip HTML, decode entities, drop invisible characters, and build a
normalised key so that the same headline shown with two images is recognised as one text."""

from __future__ import annotations

import html
import re
import unicodedata

_TAG = re.compile(r"<[^>]+>")
# Zero-width and other invisible format characters seen in scraped headlines.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SPACE = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[^\w\s]", re.UNICODE)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def clean_text(value: object) -> str:
    """Readable text: tags removed (a tag becomes a space), entities decoded, invisible characters
    dropped, whitespace collapsed. Missing values become ''."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        # Twice: ledes carry doubly-escaped entities such as &amp;nbsp;
        text = html.unescape(html.unescape(text))
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return _SPACE.sub(" ", text).strip()


def normalise_key(cleaned: str) -> str:
    """Deduplication key of an already cleaned text: case, quotes and punctuation do not count."""
    text = cleaned.translate(_QUOTES).casefold()
    text = _NOT_WORD.sub(" ", text)
    return _SPACE.sub(" ", text).strip()
