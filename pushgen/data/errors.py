"""The project's own error for bad input data: it always says where (file, row, column) and what to do."""

from __future__ import annotations


class DataError(ValueError):
    """Raised for input that cannot be turned into honest preference pairs."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None,
                 column: str | None = None, hint: str | None = None):
        where = []
        if path is not None:
            where.append(f"file {path}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        text = message if not where else f"{', '.join(where)}: {message}"
        if hint:
            text = f"{text}\n  -> {hint}"
        super().__init__(text)
        self.path, self.row, self.column, self.hint = path, row, column, hint
