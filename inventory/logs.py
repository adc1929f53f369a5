"""Log set-up, done once by the CLI: text for people, JSON lines for pipelines.

A filter on the root handler replaces any secret that reaches a message, as a
last guard: nothing should log one in the first place.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Iterable

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# `extra=NOTICE` marks an INFO line a person waiting on a long command should
# see even when only warnings are shown: a run's plan and its progress.
NOTICE = {"notice": True}


# Shorter values are no real secret, and replacing them mangles text.
MIN_SECRET = 8
# This much of a secret's start, in any case, is masked with what follows it:
# an answer that echoes the token cut short (or upper-cased) gives away most of
# it. Twelve characters of a DigitalOcean token are "dop_v1_" and five of hex.
SECRET_PREFIX = 12

# Secrets learnt after set-up (a token file rotated under a running daemon).
_learnt: set[str] = set()


def keep_secret(secret: str) -> None:
    """Redact `secret` from every log line from now on, and from `redact`."""
    _learnt.add(secret)


def redact(text: str) -> str:
    """`text` with every secret learnt so far replaced by `***`: for what goes
    elsewhere than a log line (a run's error in `sync_runs`, its summary)."""
    return _masked(text, _learnt)


def _masked(text: str, secrets: Iterable[str]) -> str:
    pattern = _pattern(frozenset(s for s in secrets if len(s) >= MIN_SECRET))
    return text if pattern is None else pattern.sub("***", text)


@functools.lru_cache(maxsize=16)
def _pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    """Each secret whole, or its first SECRET_PREFIX characters and the rest
    of the word they start, in any case."""
    if not secrets:
        return None
    longest_first = sorted(secrets, key=len, reverse=True)
    # Whole secrets first: the first alternative that matches wins.
    alternatives = [re.escape(secret) for secret in longest_first]
    alternatives += [
        re.escape(secret[:SECRET_PREFIX]) + r"[\w\-~+/=]*"
        for secret in longest_first
        if len(secret) > SECRET_PREFIX
    ]
    return re.compile("|".join(alternatives), re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Replace each secret in a record's message and arguments with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._given = list(secrets)

    @property
    def secrets(self) -> list[str]:
        return [s for s in {*self._given, *_learnt} if len(s) >= MIN_SECRET]

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if not secrets:
            return True
        message = record.getMessage()
        masked = _masked(message, secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if _masked(text, secrets) != text:
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} (traceback withheld: it held a secret)"
        return True


def configure(
    format: str = "text",
    level: str = "INFO",
    secrets: Iterable[str] = (),
    summaries: bool = True,
    notices: bool = False,
) -> None:
    """Send log records to standard error in the chosen format.

    `summaries=False` drops the per-run summary line, for commands that print
    it on standard output themselves; `notices=True` lets lines marked NOTICE
    through below `level`.
    """
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        # ISO 8601 timestamps, and a run summary's counts as fields of their own.
        handler.setFormatter(
            JsonFormatter(
                JSON_FORMAT, rename_fields={"levelname": "level"}, timestamp=True
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    secrets = list(secrets)
    for secret in secrets:
        keep_secret(secret)  # also out of what `redact` cleans: errors, summaries
    handler.addFilter(RedactSecrets(secrets))
    if not summaries:
        handler.addFilter(lambda record: not getattr(record, "run", None))
    threshold = logging.getLevelName(level.upper())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(threshold)
    if notices and threshold > logging.INFO:
        root.setLevel(logging.INFO)
        handler.addFilter(
            lambda record: (
                record.levelno >= threshold or getattr(record, "notice", False)
            )
        )
    # Quieter libraries: their INFO lines are per request or per migration step.
    for name in ("aiohttp.access", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, threshold))
