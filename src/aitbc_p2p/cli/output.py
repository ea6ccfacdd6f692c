"""What ``aitbc`` prints: for people, text and rich tables on stdout, progress and spinners
on stderr; with ``--json``, one JSON document on stdout and nothing else there (errors
too, as the RPC's envelope), so a script reads it whole."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 160
"""Columns of a table written to a pipe or file (no terminal to measure)."""


class Out:
    def __init__(self, *, json_mode: bool) -> None:
        self.json = json_mode
        tty = sys.stdout.isatty()
        self.console = Console(width=None if tty else PIPE_WIDTH, highlight=False, soft_wrap=not tty)
        self.err = Console(stderr=True, highlight=False)

    def done(self, data: Any, human: Callable[[Console], None] | str | None = None) -> None:
        """The command's answer: ``data`` as JSON, or ``human`` (text, or a function that
        prints) for people; without ``human``, ``data`` is shown as a list of fields."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        elif isinstance(human, str):
            self.console.print(human, markup=False)
        elif human is not None:
            human(self.console)
        elif isinstance(data, Mapping):
            self.console.print(fields(data))
        else:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")

    def error(self, code: str, message: str, details: Any = None) -> None:
        if self.json:
            sys.stdout.write(json.dumps({"error": {"code": code, "message": message, "details": details or {}}}) + "\n")
            return
        print(f"aitbc: {code}: {message}" if code else f"aitbc: {message}", file=sys.stderr)
        if details:
            print(json.dumps(details, indent=2), file=sys.stderr)

    def progress(self, text: str) -> None:
        """A line about what is happening (stderr: stdout stays the answer)."""
        self.err.print(text, markup=False, highlight=False)

    @contextmanager
    def waiting(self, text: str) -> Iterator[Callable[[str], None]]:
        """A spinner on a terminal while a wait lasts (a line on stderr elsewhere); yields
        a function that changes what it says."""
        if not self.err.is_terminal:
            self.progress(text)
            yield self.progress
            return
        with self.err.status(text) as status:
            yield lambda line: status.update(line)


def fields(data: Mapping[str, Any]) -> Table:
    """A record as a two-column table of its fields (nested values as compact JSON)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in data.items():
        shown = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
        table.add_row(str(name), shown)
    return table


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    return out


__all__ = ["Out", "fields", "table"]
