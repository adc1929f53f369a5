"""The console script's entry point, kept apart from the CLI it loads.

Ctrl-C while the CLI is still importing (a few tenths of a second) stops it
as cleanly as Ctrl-C later does: one line, no traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from inventory.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("inventory: interrupted.\n")
        raise SystemExit(1) from None
