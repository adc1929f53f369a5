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
from typing import Any

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# `extra=NOTICE` marks an INFO line a person waiting on a long command should
# see even when only warnings are shown: a run's plan and its progress.
NOTICE = {"notice": True}


# Shorter values are no real secret, and replacing them mangles text.
MIN_SECRET = 8
# Any this many characters in a row of a secret, in any case, are masked with
# the rest of the word they are in: an answer that echoes the token cut short,
# upper-cased, or without its "dop_v1_" gives away most of it.
SECRET_WINDOW = 12
# What a word is, for that: what tokens, keys and base64 are made of.
WORD = re.compile(r"[\w\-~+/=]+")

# Secrets learnt after set-up (a token file rotated under a running daemon).
_learnt: set[str] = set()


def keep_secret(secret: str) -> None:
    """Redact `secret` from every log line from now on, and from `redact`."""
    _learnt.add(secret)


def redact(text: str) -> str:
    """`text` with every secret learnt so far replaced by `***`: for what goes
    elsewhere than a log line (a run's error in `sync_runs`, its summary)."""
    return _mask(text, _known(_learnt))


def scrubbed(body: bytes, data: Any) -> Any:
    """`data`, parsed from the API answer `body`, with every string in it that
    holds a secret masked as `redact` masks: what an answer echoes of the
    token goes to the store no more than to a log.

    A scan of `body` for aligned halves of a window rules most answers out
    at once: any SECRET_WINDOW characters in a row of a secret hold one.
    """
    known = _known(_learnt)
    if not known:
        return data
    folded = body.lower()
    if not any(block in folded for block in _blocks(known)):
        return data
    masked = _scrub(data, known)
    if masked != data:
        logging.getLogger(__name__).warning(
            "An API answer held the token, or part of it; stored as ***"
        )
    return masked


@functools.lru_cache(maxsize=16)
def _blocks(secrets: frozenset[str]) -> tuple[bytes, ...]:
    half = SECRET_WINDOW // 2
    return tuple(
        secret[i : i + half].lower().encode()
        for secret in secrets
        for i in range(0, max(len(secret) - half + 1, 1), half)
    )


def _scrub(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        return _mask(value, secrets)
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    if isinstance(value, dict):
        return {
            _mask(key, secrets): _scrub(item, secrets) for key, item in value.items()
        }
    return value


def _known(secrets: Iterable[str]) -> frozenset[str]:
    """The secrets long enough to mask: shorter ones are no real secret."""
    return frozenset(s for s in secrets if len(s) >= MIN_SECRET)


def _mask(text: str, known: frozenset[str]) -> str:
    if not known:
        return text
    text = _whole(known).sub("***", text)
    windows = _windows(known)
    if not windows:
        return text
    return WORD.sub(lambda word: "***" if _leaks(word[0], windows) else word[0], text)


@functools.lru_cache(maxsize=16)
def _whole(secrets: frozenset[str]) -> re.Pattern[str]:
    """Each secret whole, in any case; the longest first, as it wins."""
    longest_first = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, longest_first)), re.IGNORECASE)


@functools.lru_cache(maxsize=16)
def _windows(secrets: frozenset[str]) -> frozenset[str]:
    """Every SECRET_WINDOW characters in a row of each secret longer than that."""
    return frozenset(
        secret[i : i + SECRET_WINDOW].casefold()
        for secret in secrets
        for i in range(len(secret) - SECRET_WINDOW + 1)
    )


def _leaks(word: str, windows: frozenset[str]) -> bool:
    folded = word.casefold()
    return any(
        folded[i : i + SECRET_WINDOW] in windows
        for i in range(len(folded) - SECRET_WINDOW + 1)
    )


class RedactSecrets(logging.Filter):
    """Replace each secret in a record's message and arguments with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._given = list(secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return _known({*self._given, *_learnt})

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if not secrets:
            return True
        message = record.getMessage()
        masked = _mask(message, secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if _mask(text, secrets) != text:
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
