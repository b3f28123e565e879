"""The `selfcorrect` command: one module per command group, all on the application of
cli/app.py (its global options and shared helpers)."""

from __future__ import annotations

import logging
import sqlite3
import sys

from rich.logging import RichHandler
from rich.markup import escape

from selfcorrect.cli import evaluate, improve, memory, models, serve, tools, train  # noqa: F401  (they register commands)
from selfcorrect.cli.app import app, err
from selfcorrect.db import is_locked, locked
from selfcorrect.errors import SelfcorrectError

__all__ = ["app", "main"]


def main() -> None:
    debug = "--debug" in sys.argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=debug)],
    )
    if not debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app()
    except SelfcorrectError as e:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    except sqlite3.DatabaseError as e:
        if debug:
            raise
        if is_locked(e):  # a write that outlasted our wait: nothing is wrong with the file
            err.print(f"[bold red]error:[/] {escape(str(locked(_store_named())))}", soft_wrap=True)
            sys.exit(1)
        err.print(f"[bold red]error:[/] the store is damaged or unreadable ({escape(str(e))}) — restore "
                  "it from a backup, or start a new one with --store", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


def _store_named() -> str:
    """The store the command line names (--store), else the default one."""
    from selfcorrect.config import DEFAULT_STORE

    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--store" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--store="):
            return arg.split("=", 1)[1]
    return str(DEFAULT_STORE)
