"""Errors that point at the exact place in the user's input that is wrong."""

from __future__ import annotations

from pathlib import Path


class DualencError(Exception):
    """An error the command line reports as one plain message, without a traceback."""


class DataError(DualencError):
    """Bad input data, located by file, line and field.

    Args:
        path: the file that holds the bad data.
        message: what is wrong.
        line: 1-based line (or record) number, where one applies.
        field: the column or field name, where one applies.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
