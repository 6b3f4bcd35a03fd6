"""Read an A/B log (Parquet, CSV or JSONL), map its columns to roles, and validate it.

Every arm becomes one row of a canonical table with the columns of ``ROLES`` plus ``source_row``
(the 0-based data row in the file). Problems raise :class:`DataError` naming the file, row and
column, or, with ``on_invalid='drop'``, drop the row and count it under its rule in a :class:`DropLog`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import contextmanager
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pushgen.data.errors import DataError
from pushgen.data.text import clean_text

log = logging.getLogger(__name__)

REQUIRED_ROLES = ("test_id", "text", "impressions", "clicks")
OPTIONAL_ROLES = ("evidence", "category", "time", "image", "first_place")
ROLES = REQUIRED_ROLES + OPTIONAL_ROLES
# Read as strings from CSV and JSON lines: their readers guess a type per column and, in batches, per
# batch, so an id "00123" could become 123 in one batch and stay "00123" in another.
TEXT_ROLES = ("test_id", "text", "evidence", "category", "image")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


class DropLog:
    """Counts what each rule removed, in the order the rules ran, so nothing is dropped silently."""

    def __init__(self, quiet: bool = False) -> None:
        self.counts: OrderedDict[str, int] = OrderedDict()
        self.flags: OrderedDict[str, int] = OrderedDict()
        self.hints: dict[str, str] = {}   # per flagged rule: what the user can do about it
        self.quiet = quiet  # a part of a file counts quietly; its whole says the totals

    def add(self, rule: str, n: int, unit: str = "rows") -> None:
        key = f"{rule} ({unit})"
        self.counts[key] = self.counts.get(key, 0) + int(n)
        if n and not self.quiet:
            log.info("dropped %d %s: %s", n, unit, rule)

    def flag(self, rule: str, n: int, unit: str = "rows", hint: str = "") -> None:
        """Count rows that are kept but look wrong: the run reports them instead of guessing."""
        key = f"{rule} ({unit})"
        self.flags[key] = self.flags.get(key, 0) + int(n)
        self.hints[key] = hint
        if n and not self.quiet:
            self._warn(key, n)

    def _warn(self, key: str, n: int) -> None:
        log.warning("%d flagged: %s%s", n, key, f"; {self.hints[key]}" if self.hints.get(key) else "")

    def log_totals(self) -> None:
        """What a quiet log counted, said once at the end."""
        for key, n in self.counts.items():
            if n:
                log.info("dropped %d: %s", n, key)
        for key, n in self.flags.items():
            if n:
                self._warn(key, n)

    def merge(self, other: DropLog) -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for key, n in other.flags.items():
            self.flags[key] = self.flags.get(key, 0) + n
        self.hints.update(other.hints)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def _available_columns(path: Path, fmt: str) -> list[str] | None:
    """Column names from the file's header or schema, without reading the data (None: unknown)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            return list(pq.read_schema(path).names)
        if fmt == "csv":
            return list(pd.read_csv(path, nrows=0, encoding="utf-8").columns)
    except Exception:  # an unreadable file gets its error from the full read below
        return None
    return None


def resolve_format(path: Path, fmt: str, missing_hint: str | None = None) -> str:
    """The file's format (from its suffix when ``fmt`` is auto); a missing file or unknown suffix raises."""
    if not path.exists():
        raise DataError("the A/B log does not exist", path=str(path),
                        hint=missing_hint or "point data.path=FILE at a Parquet, CSV or JSONL file")
    if fmt == "auto":
        fmt = FORMATS.get(path.suffix.lower(), "")
        if not fmt:
            raise DataError(f"cannot tell the format from the suffix '{path.suffix}'", path=str(path),
                            hint="use a .parquet, .csv or .jsonl file, or set data.format=parquet|csv|jsonl")
    if fmt not in ("parquet", "csv", "jsonl"):
        raise DataError(f"unknown format '{fmt}'", path=str(path), hint="set data.format=parquet|csv|jsonl")
    return fmt


@contextmanager
def reading(path: Path, fmt: str):
    """Turns each reader's own exceptions into a DataError naming the file (and the byte of bad UTF-8)."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # each reader has its own exception zoo; the message is what matters
        if fmt != "parquet":
            with open(path, "rb") as fh:
                if fh.read(4) == b"PAR1":
                    raise DataError(f"is a Parquet file, read as {fmt}", path=str(path),
                                    hint="set data.format=parquet (or auto, with a .parquet suffix)") from exc
        if isinstance(exc, UnicodeDecodeError):
            # The reader decodes in chunks, so its offset is chunk-relative: find the real one.
            raw = path.read_bytes()
            try:
                raw.decode("utf-8")
                where = f"({exc.reason})"
            except UnicodeDecodeError as whole:
                line = raw.count(b"\n", 0, whole.start) + 1
                where = f"({whole.reason} at byte {whole.start}, line {line})"
            raise DataError(f"is not valid UTF-8 {where}", path=str(path), hint="re-save the file as UTF-8") from exc
        raise DataError(f"could not be read as {fmt}: {type(exc).__name__}: {exc}", path=str(path),
                        hint="check that the file is complete and well-formed") from exc


def read_table(path: str | Path, fmt: str = "auto", missing_hint: str | None = None,
               columns: list[str] | None = None, text_columns: list[str] = ()) -> pd.DataFrame:
    """Load a file into a DataFrame; unreadable files raise DataError naming the file.

    ``columns``: read only these (Parquet, CSV), so unused wide columns never take memory. If one
    of them is not in the file, everything is read, and validation names the missing column.
    ``text_columns``: read as strings from CSV and JSON lines (Parquet keeps its schema's types)."""
    path = Path(path)
    fmt = resolve_format(path, fmt, missing_hint)
    if columns is not None:
        available = _available_columns(path, fmt)
        columns = list(dict.fromkeys(columns)) if available is not None and set(columns) <= set(available) else None
    with reading(path, fmt):
        if fmt == "parquet":
            return pd.read_parquet(path, columns=columns)
        if fmt == "csv":
            return pd.read_csv(path, encoding="utf-8", usecols=columns, dtype=_as_str(text_columns))
        return pd.read_json(path, lines=True, encoding="utf-8", dtype=_as_str(text_columns) or True)


def _as_str(columns) -> dict[str, type] | None:
    return {c: str for c in columns} or None


def iter_table(path: str | Path, fmt: str, columns: list[str], batch_rows: int, text_columns: list[str] = ()):
    """The file's rows in DataFrames of at most ``batch_rows`` rows, only ``columns`` (each must be in
    the file: :func:`check_columns` first), without holding the whole file; ``text_columns`` as in
    :func:`read_table`, so every batch reads a column as the whole file would."""
    path = Path(path)
    columns = list(dict.fromkeys(columns))
    with reading(path, fmt):
        if fmt == "parquet":
            import pyarrow.parquet as pq
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns):
                yield batch.to_pandas()
        elif fmt == "csv":
            with pd.read_csv(path, encoding="utf-8", usecols=columns, chunksize=batch_rows,
                             dtype=_as_str(text_columns)) as chunks:
                yield from chunks
        else:
            with pd.read_json(path, lines=True, encoding="utf-8", chunksize=batch_rows,
                              dtype=_as_str(text_columns) or True) as chunks:
                for chunk in chunks:
                    missing = [c for c in columns if c not in chunk.columns]
                    if missing:  # JSON lines name their keys per line; a key may be absent from a whole chunk
                        chunk = chunk.assign(**{c: None for c in missing})
                    yield chunk[columns]


def text_columns(columns: Mapping[str, str | None]) -> list[str]:
    """The file's columns that hold ids and texts (read as strings): see ``TEXT_ROLES``."""
    return [columns[r] for r in TEXT_ROLES if columns.get(r) is not None]


def available_columns(path: str | Path, fmt: str) -> list[str]:
    """Column names of the file without reading its data (JSON lines: the keys of its first line)."""
    path = Path(path)
    cols = _available_columns(path, fmt)
    if cols is not None:
        return cols
    with reading(path, fmt):
        if fmt == "jsonl":
            return list(pd.read_json(path, lines=True, encoding="utf-8", nrows=1).columns)
    return list(read_table(path, fmt).columns)  # unreadable: its read names the problem


def check_columns(available: list[str], columns: Mapping[str, str | None], path: str) -> None:
    """Every role is known, every required role is mapped, and every mapped column is in the file."""
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise DataError(f"unknown role(s) {sorted(unknown)} in data.columns; allowed: {list(ROLES)}")
    for role in ROLES:
        col = columns.get(role)
        if col is None:
            if role in REQUIRED_ROLES:
                raise DataError(f"no column is mapped to the required role '{role}'", path=path,
                                hint=f"set data.columns.{role}=COLUMN")
        elif col not in available:
            raise DataError(f"missing column '{col}' (role '{role}'); the file has {list(map(str, available))}",
                            path=path, column=col,
                            hint=(f"set data.columns.{role}= to the right column name"
                                  + ("" if role in REQUIRED_ROLES else f", or data.columns.{role}=null if the file has none")))


def validate(raw: pd.DataFrame, columns: Mapping[str, str | None], *, path: str = "<table>",
             on_invalid: str = "raise", require_evidence: bool = False,
             drops: DropLog | None = None, source_rows: np.ndarray | None = None,
             allow_empty: bool = False) -> pd.DataFrame:
    """Map columns to roles and check every arm. Returns the canonical table.

    ``source_rows``: the file row of each row of ``raw`` when it is a part of the file (errors and
    ``source_row`` then name the file's rows); ``allow_empty``: a part may have no row left."""
    if on_invalid not in ("raise", "drop"):
        raise DataError(f"data.on_invalid must be 'raise' or 'drop', got '{on_invalid}'")
    drops = drops if drops is not None else DropLog()
    check_columns(list(raw.columns), columns, path)
    if len(raw) == 0:
        raise DataError("the table has no rows", path=path)

    src = np.arange(len(raw)) if source_rows is None else np.asarray(source_rows, dtype=np.int64)
    out = pd.DataFrame({"source_row": src})
    for role in ROLES:
        if columns.get(role) is not None:
            out[role] = raw[columns[role]].to_numpy()

    def _first_bad(mask: np.ndarray) -> int:
        return int(src[np.flatnonzero(mask)[0]])

    def _at(mask: np.ndarray) -> int:  # position in this table of the first bad row
        return int(np.flatnonzero(mask)[0])

    bad_rows: dict[str, np.ndarray] = {}

    # Counts: present, integral, non-negative, clicks <= impressions.
    for role in ("impressions", "clicks"):
        values = pd.to_numeric(out[role], errors="coerce").to_numpy(dtype=float)
        # Above 2**53 a float no longer holds every integer exactly (and int64 overflows later on).
        bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values)) | (values > 2.0**53)
        if bad.any():
            row = _first_bad(bad)
            if on_invalid == "raise":
                value = raw[columns[role]].iloc[_at(bad)]
                value = value.item() if hasattr(value, "item") else value
                raise DataError(f"{role} must be a non-negative integer below 2**53, got {value!r}",
                                path=path, row=row, column=columns[role],
                                hint="fix the row, or set data.on_invalid=drop to drop and count such rows")
            bad_rows[f"{role} not a non-negative integer below 2**53"] = bad
        out[role] = np.where(bad, 0, values).astype(np.int64)
    over = out["clicks"].to_numpy() > out["impressions"].to_numpy()
    if over.any():
        row, at = _first_bad(over), _at(over)
        if on_invalid == "raise":
            raise DataError(f"clicks ({int(out['clicks'].iloc[at])}) exceed impressions ({int(out['impressions'].iloc[at])})",
                            path=path, row=row, column=columns["clicks"],
                            hint="clicks must be a subset of impressions; fix the row or set data.on_invalid=drop")
        bad_rows["clicks above impressions"] = over

    ids = out["test_id"]
    bad = ids.isna().to_numpy() | (ids.astype(str).str.strip() == "").to_numpy()
    if bad.any():
        if on_invalid == "raise":
            raise DataError("empty test id", path=path, row=_first_bad(bad), column=columns["test_id"],
                            hint="every arm needs the id of its A/B test; or set data.on_invalid=drop")
        bad_rows["empty test id"] = bad
    out["test_id"] = ids.astype(str).str.strip()

    out["text"] = [clean_text(v) for v in out["text"]]
    bad = (out["text"] == "").to_numpy()
    if bad.any():
        if on_invalid == "raise":
            raise DataError("empty text after cleaning", path=path, row=_first_bad(bad), column=columns["text"],
                            hint="every arm needs the text that was shown; or set data.on_invalid=drop")
        bad_rows["empty text"] = bad

    if "evidence" in out:
        out["evidence"] = [clean_text(v) for v in out["evidence"]]
        out = _fill_evidence_within_test(out)
        missing = (out["evidence"] == "").to_numpy()
        if missing.any():
            if require_evidence:
                if on_invalid == "raise":
                    raise DataError("empty evidence text (none in any arm of this test)", path=path,
                                    row=_first_bad(missing), column=columns["evidence"],
                                    hint="set data.require_evidence=false to allow it, or data.on_invalid=drop")
                bad_rows["empty evidence"] = missing
            else:
                log.warning("%d arm(s) have no evidence text in any arm of their test; they keep an empty one",
                            int(missing.sum()))
    else:
        out["evidence"] = ""

    if "category" in out:
        out["category"] = [clean_text(v) for v in out["category"]]
    if "first_place" in out:
        out["first_place"] = out["first_place"].fillna(False).astype(bool)

    if bad_rows:
        keep = np.ones(len(out), dtype=bool)
        for rule, mask in bad_rows.items():
            drops.add(rule, int((mask & keep).sum()))
            keep &= ~mask
        out = out[keep].reset_index(drop=True)
        if len(out) == 0 and not allow_empty:
            raise DataError("no valid rows are left after dropping invalid ones", path=path,
                            hint=f"rows dropped per rule: {drops.as_dict()}")
    return out


def _fill_evidence_within_test(table: pd.DataFrame) -> pd.DataFrame:
    """Evidence describes the item, not the arm: an arm that lacks it borrows its test's."""
    empty = table["evidence"] == ""
    if not empty.any():
        return table
    known = table.loc[~empty].groupby("test_id")["evidence"].first()
    filled = table.loc[empty, "test_id"].map(known).fillna("")
    table = table.copy()
    table.loc[empty, "evidence"] = filled
    return table
