"""`inventory query`: ask the local copy a question in SQL, read-only by construction.

StackQL's resource names are rewritten to the store's tables with sqlglot,
`{{ name }}` placeholders become bound parameters, and the rows come out as an
aligned table, CSV, JSON or JSON lines.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlglot
from sqlalchemy import Table
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlglot import Token, TokenType, exp
from sqlglot.errors import ParseError, TokenError

from inventory.config import Settings
from inventory.errors import QueryError, StoreError, one_line
from inventory.output import COLUMN_KINDS, FORMATS, Printer, normalize
from inventory.records import INT64_MAX, INT64_MIN
from inventory.store import Store, missing_sqlite_file
from inventory.tables import ImageActionRow, ImageRow

# StackQL's names for DigitalOcean's resources, and the relation answering each:
# the images DigitalOcean still lists (not those marked deleted), or the actions.
RESOURCES = {
    ("digitalocean", "images", "actions"): "image_actions",
    ("digitalocean", "compute", "image_actions"): "image_actions",
    ("digitalocean", "images", "images"): "live_images",
    ("digitalocean", "compute", "images"): "live_images",
}
RESOURCE_TABLES: dict[str, Table] = {
    "image_actions": ImageActionRow.__table__,  # type: ignore[dict-item]
    "live_images": ImageRow.__table__,  # type: ignore[dict-item]
}
# The store's own columns, which the API's objects do not have.
BOOKKEEPING = frozenset(
    {"account", "raw", "first_seen_at", "last_seen_at", "updated_at", "deleted_at"}
)

# Bound-parameter names: a user's `{{ x }}` binds as `var_x`, so it can never
# collide with the account the resource names are restricted to.
VAR_PREFIX = "var_"
ACCOUNT_PARAM = "resource_account"

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
QUOTED_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
INTEGER = re.compile(r"-?[0-9]+")
# The first word of a statement, past comments and opening parentheses.
FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*([A-Za-z_]+)", re.S)
NOT_READ_WORDS = frozenset(
    """ABORT ALTER ANALYZE ANALYSE ATTACH BEGIN CALL CHECKPOINT CLUSTER COMMENT
    COMMIT COPY CREATE DEALLOCATE DELETE DETACH DISCARD DO DROP END EXECUTE GRANT
    IMPORT INSERT LISTEN LOAD LOCK MERGE NOTIFY PRAGMA PREPARE REASSIGN REFRESH
    REINDEX RELEASE REPLACE RESET REVOKE ROLLBACK SAVEPOINT SECURITY SET START
    TRUNCATE UNLISTEN UPDATE UPSERT VACUUM""".split()
)
DECIMAL = re.compile(r"-?[0-9]+\.[0-9]+")
# SQLAlchemy's text() reads `:name` as a bound parameter wherever it appears,
# string literals included; this is its pattern, to escape the user's own.
BIND_LIKE = re.compile(r"(?<![:\w\\]):(\w+)(?![:\w])")
EXPLAIN_OPTIONS = frozenset({"ANALYZE", "ANALYSE", "VERBOSE", "QUERY", "PLAN"})
# `{{ name }}` is five tokens: two braces, a word (a keyword will do), two braces.
BRACES = ([TokenType.L_BRACE] * 2, [TokenType.R_BRACE] * 2)

NOT_READS: dict[type[exp.Expr], str] = {
    exp.Insert: "INSERT",
    exp.Update: "UPDATE",
    exp.Delete: "DELETE",
    exp.Merge: "MERGE",
    exp.Create: "CREATE",
    exp.Drop: "DROP",
    exp.Alter: "ALTER",
    exp.TruncateTable: "TRUNCATE",
    exp.Into: "SELECT INTO",
    exp.Lock: "locking SELECT",
    exp.Copy: "COPY",
    exp.Set: "SET",
    exp.Pragma: "PRAGMA",
    exp.Attach: "ATTACH",
    exp.Detach: "DETACH",
    exp.Transaction: "BEGIN",
    exp.Commit: "COMMIT",
    exp.Rollback: "ROLLBACK",
    exp.Grant: "GRANT",
    exp.Revoke: "REVOKE",
    exp.Analyze: "ANALYZE",
    exp.Command: "command",
}


@dataclass(frozen=True)
class Prepared:
    """SQL ready for `Store.execute_read_only`, with its bound parameters."""

    sql: str
    params: dict[str, Any]
    # Each output column's store kind, where the query says; None: judge by name.
    kinds: tuple[str | None, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Edit:
    """Replace `source[start:end]` with `text`."""

    start: int
    end: int
    text: str


# Preparing a query.


def prepare(
    source: str, variables: Mapping[str, str], dialect: str, account: str
) -> Prepared:
    """Fill placeholders, refuse anything but one read, resolve StackQL names.

    `dialect` is sqlglot's name: "sqlite" or "postgres". Text sqlglot cannot
    read goes to the database as it is, so the user sees the database's own
    message; the read-only connection still guards it.
    """
    try:
        return _prepare(source, variables, dialect, account)
    except RecursionError:
        raise QueryError(
            "The query nests too deeply to be read (dozens of levels of "
            "parentheses, say); nothing was run."
        ) from None


def _prepare(
    source: str, variables: Mapping[str, str], dialect: str, account: str
) -> Prepared:
    sqlglot_dialect = sqlglot.Dialect.get_or_raise(dialect)
    try:
        tokens = _statement_tokens(sqlglot_dialect, source)
    except TokenError:
        _refuse_unless_a_read(source)
        return Prepared(_escape(source, set()), {})
    edits, names, quoted = _placeholder_edits(source, tokens)
    _check_variables(names, variables)
    filled = _apply(source, edits)
    params = {VAR_PREFIX + name: variables[name] for name in names}

    try:
        tokens = _trim(_statement_tokens(sqlglot_dialect, filled))
        statement = _parse_one(sqlglot_dialect, tokens, filled)
    except (TokenError, ParseError):
        _refuse_unless_a_read(filled)
        return _prepared(filled, _bind(params, {}, dialect, quoted))
    _refuse_writes(statement)

    edits = _resource_edits(statement, filled, dialect)
    if any(edit.text.startswith("(") for edit in edits):
        params[ACCOUNT_PARAM] = account
    sql = _apply(filled[: tokens[-1].end + 1], edits)
    bound = _bind(params, _contexts(statement), dialect, quoted)
    return _prepared(sql, bound, _output_kinds(statement))


def _prepared(
    sql: str, params: dict[str, Any], kinds: tuple[str | None, ...] | None = None
) -> Prepared:
    return Prepared(_escape(sql, set(params)), params, kinds)


def _output_kinds(statement: exp.Expr) -> tuple[str | None, ...] | None:
    """What each selected column holds, from the expression that makes it.

    `regions AS r` is JSON and `max(started_at)` a timestamp, while `'123'
    AS tags` is text. None for `*` or a query of several SELECTs: then the
    output's column names are the guide.
    """
    if not isinstance(statement, exp.Select):
        return None
    kinds = []
    for projection in statement.expressions:
        if isinstance(projection, exp.Star) or isinstance(
            getattr(projection, "this", None), exp.Star
        ):
            return None
        kinds.append(_kind_of(projection.unalias()))
    return tuple(kinds)


def _kind_of(node: exp.Expr) -> str | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column):
        return COLUMN_KINDS.get(node.name.lower())
    if isinstance(node, exp.Max | exp.Min | exp.AnyValue):
        return _kind_of(node.this)
    return None


def parse_variables(pairs: Sequence[str]) -> dict[str, str]:
    """`--var NAME=VALUE` options as a dict; the last of a repeated name wins."""
    variables = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not NAME.fullmatch(name.strip()):
            raise QueryError(f"--var wants NAME=VALUE, got {pair!r}.")
        variables[name.strip()] = value
    return variables


def _placeholder_edits(
    source: str, tokens: Sequence[Token]
) -> tuple[list[Edit], list[str], set[str]]:
    """Each `{{ name }}` or `'{{ name }}'` becomes `:var_name`.

    Returns the edits, the names (once each) and those only ever quoted.
    """
    edits: list[Edit] = []
    names: list[str] = []
    bare: set[str] = set()
    index = 0
    while index < len(tokens):
        found = _placeholder_at(source, tokens, index)
        if found is None:
            index += 1
            continue
        name, width = found
        start, end = tokens[index].start, tokens[index + width - 1].end + 1
        edits.append(Edit(start, end, _parameter(source, start, end, name)))
        names.append(name)
        if width > 1:
            bare.add(name)
        index += width
    return edits, list(dict.fromkeys(names)), set(names) - bare


def _placeholder_at(
    source: str, tokens: Sequence[Token], index: int
) -> tuple[str, int] | None:
    """The placeholder's name and width in tokens, if one starts at `index`."""
    token = tokens[index]
    if token.token_type == TokenType.STRING:
        # A plain 'quoted' literal: not E'...', nor the rest of a command.
        match = QUOTED_PLACEHOLDER.fullmatch(token.text)
        plain = source[token.start] == "'" and source[token.end] == "'"
        return (match.group(1), 1) if match and plain else None
    window = tokens[index : index + 5]
    shape = [t.token_type for t in window]
    if len(window) < 5 or (shape[:2], shape[3:]) != BRACES:
        return None
    name = window[2]
    touching = all(window[i].end + 1 == window[i + 1].start for i in (0, 3))
    if name.token_type == TokenType.IDENTIFIER or not touching:
        return None
    return (name.text, 5) if NAME.fullmatch(name.text) else None


def _parameter(source: str, start: int, end: int, name: str) -> str:
    """`:var_name`, spaced where a neighbour would glue to it (`::int`, a word)."""
    before = source[start - 1] if start > 0 else " "
    after = source[end] if end < len(source) else " "
    return "".join(
        (
            " " if re.match(r"[:\w\\]", before) else "",
            f":{VAR_PREFIX}{name}",
            " " if re.match(r"[:\w]", after) else "",
        )
    )


def _check_variables(names: Sequence[str], variables: Mapping[str, str]) -> None:
    missing = [name for name in names if name not in variables]
    if missing:
        listed = ", ".join(f"{{{{ {name} }}}}" for name in missing)
        raise QueryError(
            f"No value for {listed}: pass --var {missing[0]}=VALUE"
            + (" for each." if len(missing) > 1 else ".")
        )
    unused = [name for name in variables if name not in names]
    if unused:
        raise QueryError(
            f"--var {unused[0]} matches no placeholder in the query; a {{{{ name }}}} "
            "inside a longer string literal is left as text."
        )


def _trim(tokens: Sequence[Token]) -> list[Token]:
    """The tokens without trailing semicolons; QueryError if nothing is left."""
    trimmed = list(tokens)
    while trimmed and trimmed[-1].token_type == TokenType.SEMICOLON:
        trimmed.pop()
    if not trimmed:
        raise QueryError("No SQL to run: the query is empty.")
    return trimmed


def _statement_tokens(dialect: sqlglot.Dialect, sql: str) -> list[Token]:
    """The tokens of the statement; under an EXPLAIN, of the statement explained.

    sqlglot reads the rest of an EXPLAIN as one string, so that rest is read
    again with the prefix blanked out, which keeps every token's position.
    """
    tokens = dialect.tokenize(sql)
    if len(tokens) < 2 or tokens[0].text.upper() != "EXPLAIN":
        return tokens
    rest = tokens[0].end + 1
    tokens = dialect.tokenize(" " * rest + sql[rest:])
    index = 0
    if tokens[0].token_type == TokenType.L_PAREN:
        index = _closing(tokens, 0) + 1  # PostgreSQL's (ANALYZE, FORMAT JSON)
    while index < len(tokens) - 1 and tokens[index].text.upper() in EXPLAIN_OPTIONS:
        index += 1
    return tokens[index:]


def _closing(tokens: Sequence[Token], start: int) -> int:
    depth = 0
    for index in range(start, len(tokens)):
        kind = tokens[index].token_type
        depth += (kind == TokenType.L_PAREN) - (kind == TokenType.R_PAREN)
        if depth == 0:
            return index
    return len(tokens) - 1


def _parse_one(dialect: sqlglot.Dialect, tokens: Sequence[Token], sql: str) -> exp.Expr:
    """The one statement `tokens` hold; QueryError if they hold more."""
    with _quiet_sqlglot():
        parsed = dialect.parser().parse(list(tokens), sql)
    statements = [statement for statement in parsed if statement is not None]
    if len(statements) != 1:
        raise QueryError(
            f"Give one statement at a time; this query holds {len(statements)}."
        )
    return statements[0]


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning when it falls back to a Command; we refuse those."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _refuse_writes(statement: exp.Expr) -> None:
    """QueryError unless the statement only reads, data-modifying CTEs included."""
    if not isinstance(statement, exp.Query | exp.Values):
        _refuse(statement)
    for node in statement.walk():
        if isinstance(node, tuple(NOT_READS)):
            _refuse(node)


def _refuse_unless_a_read(sql: str) -> None:
    """Text the parser cannot read is refused when it starts as no read does.

    The read-only connection guards it too; this keeps `START TRANSACTION
    READ WRITE` and the like from reaching it at all, while a misspelt
    `SELEC` still gets the database's own message.
    """
    word = _first_word(sql)
    if word in NOT_READ_WORDS:
        raise QueryError(
            f"Refused {word or 'this statement'}: inventory query only reads "
            "(SELECT, WITH, VALUES, EXPLAIN); nothing was run."
        )


def _first_word(sql: str) -> str:
    match = FIRST_WORD.match(sql)
    return match.group(1).upper() if match else ""


def _refuse(node: exp.Expr) -> NoReturn:
    if isinstance(node, exp.Command):
        kind = str(node.this).upper()
    else:
        kind = next(
            (name for cls, name in NOT_READS.items() if isinstance(node, cls)),
            None,
        ) or _first_word(node.sql())  # CHECKPOINT reads as a column name
    raise QueryError(
        f"Refused {kind}: inventory query only reads "
        "(SELECT, WITH, VALUES, EXPLAIN); nothing was run."
    )


# StackQL resource names.


def _resource_edits(statement: exp.Expr, sql: str, dialect: str) -> list[Edit]:
    """Replace each StackQL table name, and drop it from qualified columns."""
    edits = []
    for table in statement.find_all(exp.Table):
        parts = table.parts
        relation = _resource(parts)
        if relation is None and len(parts) == 3 and _folded(parts[0]) == "digitalocean":
            known = ", ".join(".".join(name) for name in RESOURCES)
            raise QueryError(
                f"Unknown StackQL resource {'.'.join(p.sql() for p in parts)}; "
                f"inventory holds {known}."
            )
        if relation is None or not _located(parts):
            continue
        alias = "" if table.alias else " AS " + _source(sql, parts[-1])
        text = _resource_sql(relation, dialect) + alias
        edits.append(Edit(parts[0].meta["start"], parts[-1].meta["end"] + 1, text))
    for column in statement.find_all(exp.Column):
        parts = column.parts
        if len(parts) == 4 and _resource(parts[:3]) and _located(parts):
            edits.append(Edit(parts[0].meta["start"], parts[2].meta["start"], ""))
    return edits


def _resource(parts: Sequence[exp.Expr]) -> str | None:
    """The relation a StackQL name stands for, or None for any other name."""
    names = [_folded(part) for part in parts]
    if len(names) != 3 or None in names:
        return None
    return RESOURCES.get((str(names[0]), str(names[1]), str(names[2])))


def _folded(part: exp.Expr) -> str | None:
    # Unquoted names fold to lower case, as SQL does; quoted ones match exactly.
    if not isinstance(part, exp.Identifier):
        return None
    return str(part.this) if part.quoted else str(part.this).lower()


def _located(parts: Sequence[exp.Expr]) -> bool:
    return all("start" in part.meta and "end" in part.meta for part in parts)


def _source(sql: str, part: exp.Expr) -> str:
    return sql[part.meta["start"] : part.meta["end"] + 1]


def _resource_sql(relation: str, dialect: str) -> str:
    """A subquery with the API object's fields, for the configured account."""
    table = RESOURCE_TABLES[relation]
    columns = ", ".join(
        exp.to_identifier(column.name, quoted=True).sql(dialect)
        for column in table.columns
        if column.name not in BOOKKEEPING
    )
    return f"(SELECT {columns} FROM {relation} WHERE account = :{ACCOUNT_PARAM})"


def _apply(source: str, edits: Sequence[Edit]) -> str:
    pieces, position = [], 0
    for edit in sorted(edits, key=lambda edit: edit.start):
        pieces.append(source[position : edit.start] + edit.text)
        position = edit.end
    return "".join(pieces) + source[position:]


def _escape(sql: str, params: set[str]) -> str:
    """Escape every `:word` that is not one of our parameters, for text()."""
    return BIND_LIKE.sub(
        lambda m: m.group(0) if m.group(1) in params else "\\" + m.group(0), sql
    )


# Binding values.


def _contexts(statement: exp.Expr) -> dict[str, str]:
    """What each placeholder is compared with, where a store column says."""
    contexts: dict[str, str] = {}
    for placeholder in statement.find_all(exp.Placeholder):
        kind = _context(placeholder)
        if kind is not None:
            contexts.setdefault(str(placeholder.this), kind)
    return contexts


def _context(node: exp.Expr) -> str | None:
    parent = node.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if isinstance(parent, exp.Limit | exp.Offset):
        return "integer"
    if isinstance(parent, exp.In | exp.Between):
        other = parent.this
    elif isinstance(parent, exp.Binary) and isinstance(parent, exp.Predicate):
        other = parent.left if parent.right is node else parent.right
    else:
        return None
    return (
        COLUMN_KINDS.get(other.name.lower()) if isinstance(other, exp.Column) else None
    )


def _bind(
    params: dict[str, Any],
    contexts: Mapping[str, str],
    dialect: str,
    quoted: set[str],
) -> dict[str, Any]:
    """Each --var value typed for the store column it is compared with.

    A value compared with no store column binds as written: text when quoted
    (`'{{ name }}'`), else a number when it reads as one.
    """
    bound = dict(params)
    for name, value in params.items():
        if not name.startswith(VAR_PREFIX):
            continue
        kind = contexts.get(name)
        if kind is None and name.removeprefix(VAR_PREFIX) in quoted:
            kind = "text"
        if kind == "integer" and not (
            INTEGER.fullmatch(value) and INT64_MIN <= int(value) <= INT64_MAX
        ):
            # SQLite would match nothing, PostgreSQL fail on "query argument
            # $1": both better said, naming the placeholder.
            raise QueryError(
                f"--var {name.removeprefix(VAR_PREFIX)}={value!r} is compared with "
                "an integer column; give a whole number within 64 bits."
            )
        if kind == "timestamp" and not _is_iso(value):
            # PostgreSQL would fail on asyncpg's words, SQLite compare text.
            raise QueryError(
                f"--var {name.removeprefix(VAR_PREFIX)}={value!r} is compared with "
                "a timestamp column; give an ISO 8601 time, such as 2026-01-31 or "
                "2026-01-31T12:00:00Z."
            )
        bound[name] = _typed(value, kind, dialect)
    return bound


def _is_iso(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _typed(value: str, kind: str | None, dialect: str) -> Any:
    if kind in (None, "integer") and INTEGER.fullmatch(value):
        number = int(value)
        # Beyond 64 bits no column holds it: compared as text, it matches nothing.
        return number if INT64_MIN <= number <= INT64_MAX else value
    if kind is None and DECIMAL.fullmatch(value):
        return float(value)
    if kind == "float":
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "timestamp":
        return _timestamp_param(value, dialect)
    return value


def _timestamp_param(value: str, dialect: str) -> Any:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    if dialect == "postgres":
        return moment
    # SQLite holds the store's timestamps as naive UTC text in this format.
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# Running.


async def fetch(url: URL, prepared: Prepared) -> tuple[list[str], list[list[Any]]]:
    """Run prepared SQL on a read-only store; its rows as JSON-ready values."""
    async with streamed(url, prepared) as (columns, batches):
        return columns, [row async for batch in batches for row in batch]


@contextlib.asynccontextmanager
async def streamed(
    url: URL, prepared: Prepared
) -> AsyncIterator[tuple[list[str], AsyncIterator[list[list[Any]]]]]:
    """Run prepared SQL on a read-only store: its columns, and its rows as
    JSON-ready values in batches, as the database gives them."""
    if missing := missing_sqlite_file(url):
        raise QueryError(_no_store(missing))
    store = Store.open(url, read_only=True)
    try:
        await _require_schema(store)
        async with contextlib.AsyncExitStack() as stack:
            with _as_query_error(prepared):
                columns, batches = await stack.enter_async_context(
                    store.read_only(prepared.sql, prepared.params)
                )

            async def normalized() -> AsyncIterator[list[list[Any]]]:
                with _as_query_error(prepared):
                    async for batch in batches:
                        yield normalize(columns, batch, prepared.kinds)

            # Not within _as_query_error: what the caller raises (a closed
            # pipe) is its own, not the query's.
            yield columns, normalized()
    finally:
        await store.close()


@contextmanager
def _as_query_error(prepared: Prepared) -> Iterator[None]:
    """The database refusing the query (bad SQL, a value out of range) as
    one QueryError line."""
    try:
        yield
    except (OSError, SQLAlchemyError, OverflowError, ValueError) as exc:
        raise QueryError(_with_placeholder_hint(one_line(exc), prepared)) from exc


def _with_placeholder_hint(message: str, prepared: Prepared) -> str:
    """A syntax error in a query with placeholders is most often one put where
    a name goes: it binds a value, as `?` or `$1`, which no table can be."""
    placeholders = any(name.startswith(VAR_PREFIX) for name in prepared.params)
    if placeholders and "syntax error" in message:
        return (
            f"{message} (a {{{{ name }}}} placeholder stands for a value; a table "
            "or column name cannot be one)"
        )
    if placeholders and message.startswith("invalid input for query argument"):
        # asyncpg: PostgreSQL typed the parameter from its use (`+ 1`).
        return (
            f"{message} (a '{{{{ name }}}}' in quotes compared with no column is "
            "text; for a number, write {{ name }} without the quotes)"
        )
    return message


async def _require_schema(store: Store) -> None:
    # A store that cannot be read is not the query's fault: StoreError, exit 1.
    if not await store.has_schema():
        raise QueryError(_no_store(store.describe()))


def _no_store(where: str) -> str:
    return f"No store at {where}: run `inventory sync` or `inventory demo` first."


def dialect_of(url: URL) -> str:
    """sqlglot's name for the store's SQL dialect."""
    return "postgres" if url.get_backend_name() == "postgresql" else "sqlite"


# The command.


def read_sql(sql: str | None, path: str | None) -> str:
    """The query from the argument, a file, or standard input (`-` or piped)."""
    if sql is not None and path is not None:
        raise QueryError("Give the SQL as an argument or with --file, not both.")
    if sql is not None:
        return sql
    if path == "-" or (path is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if path is None:
        raise QueryError("No SQL: give it as an argument, with --file, or on stdin.")
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise QueryError(f"Cannot read the SQL file {path}: {reason}.") from exc


@click.command("query")
@click.argument("sql", required=False)
@click.option(
    "-f",
    "--file",
    "path",
    metavar="PATH",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the SQL from a file; - is standard input.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="How to print the rows.",
)
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="Fill {{ NAME }} with VALUE, as a bound parameter. Repeatable.",
)
@click.option(
    "--account",
    metavar="NAME",
    help="The account StackQL names show (default: the configured account).",
)
# cli.database_option's twin: cli.py imports this module, so it cannot be imported.
@click.option(
    "--database",
    "database",
    metavar="URL",
    help="Database URL (sqlite:///PATH or postgresql://...); "
    "overrides INVENTORY_DATABASE_URL and the file.",
)
@click.pass_context
def query(
    ctx: click.Context,
    sql: str | None,
    path: str | None,
    output_format: str,
    variables: tuple[str, ...],
    account: str | None,
    database: str | None,
) -> None:
    """Run one read-only SQL query on the store and print the rows.

    \b
    StackQL names work too:
      inventory query --var image_id=7555620 \\
        "SELECT id, status FROM digitalocean.images.actions
         WHERE image_id = '{{ image_id }}'"
    """
    # cli.py imports this module to register the command: import it lazily.
    from inventory.cli import fail, run_async, settings_from

    ctx.ensure_object(dict)
    settings = settings_from(ctx, database=database)
    try:
        url = settings.database_url()
        prepared = prepare(
            read_sql(sql, path),
            parse_variables(variables),
            dialect_of(url),
            account or settings.account,
        )
    except QueryError as exc:
        fail(str(exc))
    run_async(_query)(settings, prepared, output_format)


async def _query(settings: Settings, prepared: Prepared, output_format: str) -> int:
    from inventory import logs
    from inventory.cli import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE

    try:
        async with streamed(settings.database_url(), prepared) as (columns, batches):
            printer = Printer(columns, output_format)
            async for rows in batches:
                click.echo(printer.rows(rows), nl=False)
            click.echo(printer.end(), nl=False)
    except (QueryError, StoreError) as exc:
        click.echo(f"inventory: {logs.redact(str(exc))}", err=True)
        return EXIT_USAGE if isinstance(exc, QueryError) else EXIT_RUN_FAILED
    return EXIT_OK
