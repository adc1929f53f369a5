"""`inventory query` on real SQLite and PostgreSQL stores: names, reads, output."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from inventory.config import database_url
from inventory.errors import QueryError
from inventory.output import Printer, render
from inventory.query import Prepared, fetch, prepare, query
from inventory.records import parse_action, parse_image
from inventory.store import Store

from conftest import EXAMPLES

SEEN_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

STACKQL_EXAMPLE = """\
SELECT id, completed_at, region, region_slug, resource_id, resource_type, started_at, status, type
FROM digitalocean.images.actions
WHERE image_id = '{{ image_id }}';"""  # noqa: E501 - verbatim from StackQL's docs

NINE_COLUMNS = [
    "id",
    "completed_at",
    "region",
    "region_slug",
    "resource_id",
    "resource_type",
    "started_at",
    "status",
    "type",
]

OBRIEN = {
    "id": 1001,
    "name": "O'Brien's snapshot",
    "distribution": "Debian",
    "slug": "obrien",
    "public": True,
    "regions": ["ams3"],
    "created_at": "2020-02-29T12:00:00.5Z",
    "type": "custom",
    "size_gigabytes": 1234567.0,
    "description": None,
    "tags": ["base", "prod"],
    "status": "available",
}


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No settings from the environment or a file; logging as it was before."""
    for name in ("INVENTORY_CONFIG", "INVENTORY_ACCOUNT", "INVENTORY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
async def seeded(store: Store, database_url: str) -> str:
    """A store with three images and two actions of image 7555620."""
    images = [
        parse_image(i) for i in example("spec-images-list-snapshots.json")["images"]
    ]
    await store.upsert_images("default", [*images, parse_image(OBRIEN)], SEEN_AT)
    actions = [
        parse_action(example("spec-image-actions-list.json")["actions"][0]),
        parse_action(example("spec-image-action-get.json")["action"]),
    ]
    await store.upsert_actions("default", [(7555620, a) for a in actions], SEEN_AT)
    return database_url


def run(url: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(query, [*args, "--database", url], obj={}, input=input)


def rows_of(url: str, sql: str, *args: str) -> list[dict[str, Any]]:
    result = run(url, sql, "--format", "json", *args)
    assert (result.exit_code, result.stderr) == (0, "")
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def on_store(url: str, change: Callable[[Store], Awaitable[Any]]) -> None:
    """Change the store from a test that is not async, as click's runner needs."""

    async def main() -> None:
        store = Store.open(url)
        try:
            await change(store)
        finally:
            await store.close()

    asyncio.run(main())


def snapshot(url: str) -> list[list[dict[str, Any]]]:
    """Every table's rows, and the list of tables, to prove nothing changed."""
    tables = (
        "SELECT name FROM sqlite_master ORDER BY name"
        if url.startswith("sqlite")
        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    )
    return [
        rows_of(url, tables),
        rows_of(url, "SELECT * FROM images ORDER BY id"),
        rows_of(url, "SELECT * FROM image_regions ORDER BY image_id, region_slug"),
        rows_of(url, "SELECT * FROM image_actions ORDER BY id"),
        rows_of(url, "SELECT * FROM sync_runs ORDER BY id"),
    ]


# StackQL names.


def test_stackql_example_verbatim_answers_like_the_plain_query(seeded: str) -> None:
    result = run(
        seeded, STACKQL_EXAMPLE, "--format", "json", "--var", "image_id=7555620"
    )
    plain = rows_of(
        seeded,
        f"SELECT {', '.join(NINE_COLUMNS)} FROM image_actions WHERE image_id = 7555620",
    )

    assert (result.exit_code, result.stderr) == (0, "")
    stackql = json.loads(result.stdout)
    assert [list(row) for row in stackql] == [NINE_COLUMNS] * 2
    assert sorted(stackql, key=lambda row: row["id"]) == sorted(
        plain, key=lambda row: row["id"]
    )


def test_stackql_example_reads_from_a_file_and_from_stdin(seeded: str) -> None:
    Path("example.sql").write_text(STACKQL_EXAMPLE)
    args = ("--format", "csv", "--var", "image_id=7555620")

    from_file = run(seeded, "--file", "example.sql", *args)
    from_dash = run(seeded, "--file", "-", *args, input=STACKQL_EXAMPLE)
    from_pipe = run(seeded, *args, input=STACKQL_EXAMPLE)

    assert from_file.exit_code == 0
    assert from_file.stdout.startswith(",".join(NINE_COLUMNS) + "\n")
    assert from_file.stdout.count("\n") == 3
    assert from_dash.stdout == from_file.stdout == from_pipe.stdout


def test_compute_images_are_the_live_images_only(seeded: str) -> None:
    kept = parse_image(example("spec-images-list-snapshots.json")["images"][1])
    later = datetime(2026, 2, 1, tzinfo=UTC)

    async def delete_all_but_one(store: Store) -> None:
        await store.upsert_images("default", [kept], later)
        await store.mark_images_deleted("default", later, later)

    on_store(seeded, delete_all_but_one)

    for name in ("digitalocean.compute.images", "digitalocean.images.images"):
        assert rows_of(seeded, f"SELECT id FROM {name} ORDER BY id") == [
            {"id": 7555621}
        ]
    assert rows_of(seeded, "SELECT id FROM images ORDER BY id") == [
        {"id": 1001},
        {"id": 7555620},
        {"id": 7555621},
    ]


def test_stackql_images_have_the_api_fields_only(seeded: str) -> None:
    [row] = rows_of(seeded, "SELECT * FROM digitalocean.compute.images WHERE id = 1001")

    assert row == {
        "id": 1001,
        "name": "O'Brien's snapshot",
        "type": "custom",
        "distribution": "Debian",
        "slug": "obrien",
        "public": True,
        "regions": ["ams3"],
        "created_at": "2020-02-29T12:00:00.500000+00:00",
        "min_disk_size": None,
        "size_gigabytes": 1234567.0,
        "description": None,
        "tags": ["base", "prod"],
        "status": "available",
        "error_message": None,
    }


def test_stackql_names_answer_for_the_chosen_account_only(seeded: str) -> None:
    other = parse_image({"id": 42, "name": "elsewhere"})
    on_store(seeded, lambda store: store.upsert_images("other", [other], SEEN_AT))
    sql = "SELECT i.id FROM digitalocean.compute.images AS i ORDER BY i.id"

    assert rows_of(seeded, sql) == [{"id": 1001}, {"id": 7555620}, {"id": 7555621}]
    assert rows_of(seeded, sql, "--account", "other") == [{"id": 42}]


def test_names_in_string_literals_and_columns_are_left_alone(seeded: str) -> None:
    sql = (
        "SELECT 'digitalocean.images.actions' AS actions, images.id "
        "FROM images WHERE name <> 'digitalocean.compute.images' "
        "AND images.id = 7555620"
    )

    result = run(seeded, sql, "--format", "csv")

    assert (result.exit_code, result.stdout) == (
        0,
        "actions,id\ndigitalocean.images.actions,7555620\n",
    )


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_stackql_names_become_subqueries_under_their_own_name(dialect: str) -> None:
    sql = (
        "SELECT actions.id, digitalocean.images.actions.status "
        "FROM DigitalOcean.Images.Actions -- {{ not_a_placeholder }}\n"
        "JOIN digitalocean.compute.images i ON i.id = actions.image_id;"
    )

    prepared = prepare(sql, {}, dialect, "default")

    assert prepared == Prepared(
        'SELECT actions.id, actions.status FROM (SELECT "id", "image_id", '
        '"completed_at", "region", "region_slug", "resource_id", "resource_type", '
        '"started_at", "status", "type" FROM image_actions '
        "WHERE account = :resource_account) AS Actions -- {{ not_a_placeholder }}\n"
        'JOIN (SELECT "id", "name", "type", "distribution", "slug", "public", '
        '"regions", "created_at", "min_disk_size", "size_gigabytes", "description", '
        '"tags", "status", "error_message" FROM live_images '
        "WHERE account = :resource_account) i ON i.id = actions.image_id",
        {"resource_account": "default"},
    )


def test_quoted_names_that_differ_in_case_are_not_resource_names() -> None:
    sql = 'SELECT 1 FROM "DigitalOcean".images.actions'

    assert prepare(sql, {}, "postgres", "default") == Prepared(sql, {})


# Placeholders.


def test_a_value_with_quotes_is_bound_not_spliced(seeded: str) -> None:
    sql = "SELECT id, name FROM images WHERE name = '{{ name }}'"

    assert rows_of(seeded, sql, "--var", "name=O'Brien's snapshot") == [
        {"id": 1001, "name": "O'Brien's snapshot"}
    ]
    assert rows_of(seeded, sql, "--var", "name=x' OR '1'='1") == []


def test_an_integer_value_compared_with_text_binds_as_text(seeded: str) -> None:
    sql = "SELECT id FROM images WHERE name = {{ name }} OR slug = '{{ name }}'"

    assert rows_of(seeded, sql, "--var", "name=1001") == []


def test_a_quoted_value_compared_with_no_column_binds_as_text(seeded: str) -> None:
    """As written: '{{ n }}' is text, on PostgreSQL too, and keeps its zeros."""
    sql = (
        "SELECT '{{ n }}' AS n, id FROM images "
        "WHERE lower(name) <> '{{ n }}' AND id = {{ id }}"
    )

    assert rows_of(seeded, sql, "--var", "n=007", "--var", "id=1001") == [
        {"n": "007", "id": 1001}
    ]


def test_an_integer_beyond_64_bits_is_one_line_not_a_traceback(seeded: str) -> None:
    sql = "SELECT id FROM images WHERE name = {{ v }}"
    result = run(seeded, sql, "--var", "v=99999999999999999999")

    assert result.exit_code == 0, result.stderr
    assert "(0 rows)" in result.stdout


def test_a_timestamp_value_binds_as_a_timestamp(seeded: str) -> None:
    sql = (
        "SELECT id FROM image_actions WHERE started_at > '{{ since }}' "
        "AND started_at < {{ until }} ORDER BY id"
    )
    args = ("--var", "since=2014-11-14T16:42:44Z", "--var", "until=2015-01-01")

    assert rows_of(seeded, sql, *args) == [{"id": 36805527}]


def test_placeholders_in_limit_and_in_lists_bind(seeded: str) -> None:
    sql = "SELECT id FROM images WHERE id IN ({{a}}, {{ b }}) ORDER BY id LIMIT {{ n }}"
    args = ("--var", "a=1001", "--var", "b=7555621", "--var", "n=1")

    assert rows_of(seeded, sql, *args) == [{"id": 1001}]


def test_a_placeholder_without_a_value_is_named(seeded: str) -> None:
    result = run(seeded, STACKQL_EXAMPLE)

    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        "inventory: No value for {{ image_id }}: pass --var image_id=VALUE.\n",
    )


def test_a_value_for_no_placeholder_is_refused() -> None:
    sql = "SELECT id FROM images WHERE name LIKE '%{{ name }}%'"

    with pytest.raises(QueryError, match=r"^--var name matches no placeholder"):
        prepare(sql, {"name": "snap"}, "sqlite", "default")


def test_a_placeholder_inside_a_longer_literal_is_left_as_text() -> None:
    sql = "SELECT '{{ x }} and more', \"{{ x }}\" FROM images"

    assert prepare(sql, {}, "sqlite", "default") == Prepared(sql, {})


def test_placeholders_under_an_explain_are_filled() -> None:
    sql = "EXPLAIN QUERY PLAN SELECT id FROM images WHERE id = {{ id }};"

    assert prepare(sql, {"id": "7"}, "sqlite", "default") == Prepared(
        "EXPLAIN QUERY PLAN SELECT id FROM images WHERE id = :var_id", {"var_id": 7}
    )


def test_colons_in_the_users_text_are_not_parameters() -> None:
    sql = "SELECT ':name', x::int FROM images WHERE y = {{ v }}::int"

    assert prepare(sql, {"v": "3"}, "postgres", "default") == Prepared(
        "SELECT '\\:name', x::int FROM images WHERE y = :var_v ::int", {"var_v": 3}
    )


def test_a_malformed_var_is_refused(seeded: str) -> None:
    result = run(seeded, "SELECT 1", "--var", "image_id")

    assert (result.exit_code, result.stderr) == (
        2,
        "inventory: --var wants NAME=VALUE, got 'image_id'.\n",
    )


# Read-only.

WRITES = [
    ("INSERT INTO image_regions VALUES ('default', 1, 'nyc1')", "INSERT"),
    ("UPDATE images SET name = 'x'", "UPDATE"),
    ("DELETE FROM image_actions", "DELETE"),
    ("DROP TABLE images", "DROP"),
    ("CREATE TABLE stolen AS SELECT * FROM images", "CREATE"),
    ("WITH gone AS (SELECT id FROM images) DELETE FROM images", "DELETE"),
    ("WITH gone AS (DELETE FROM images RETURNING id) SELECT * FROM gone", "DELETE"),
    ("EXPLAIN ANALYZE DELETE FROM images", "DELETE"),
    ("SELECT * INTO stolen FROM images", "SELECT INTO"),
    ("VACUUM", "VACUUM"),
    ("CHECKPOINT", "CHECKPOINT"),
    ("LISTEN x", "LISTEN"),
    # Past the parser: refused by their first word.
    ("START TRANSACTION READ WRITE", "START"),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "START"),
]


@pytest.mark.parametrize(("sql", "kind"), WRITES)
def test_a_write_is_refused_and_nothing_changes(
    seeded: str, sql: str, kind: str
) -> None:
    before = snapshot(seeded)

    result = run(seeded, sql)

    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"inventory: Refused {kind}: inventory query only reads "
        "(SELECT, WITH, VALUES, EXPLAIN); nothing was run.\n",
    )
    assert snapshot(seeded) == before


async def test_a_write_past_the_parser_is_refused_by_the_store(seeded: str) -> None:
    """The read-only connection is the second guard, for SQL sqlglot cannot read."""
    insert = Prepared("INSERT INTO image_regions VALUES ('default', 1, 'nyc1')", {})
    message = (
        "attempt to write a readonly database"
        if seeded.startswith("sqlite")
        else "cannot execute INSERT in a read-only transaction"
    )

    with pytest.raises(QueryError, match=f"^{message}$"):
        await fetch(database_url(seeded), insert)
    _, rows = await fetch(
        database_url(seeded), Prepared("SELECT * FROM image_regions", {})
    )
    assert len(rows) == 4


def test_more_than_one_statement_is_refused(seeded: str) -> None:
    result = run(seeded, "SELECT 1; DELETE FROM images")

    assert (result.exit_code, result.stderr) == (
        2,
        "inventory: Give one statement at a time; this query holds 2.\n",
    )


def test_explain_of_a_read_runs(seeded: str) -> None:
    sql = (
        "EXPLAIN QUERY PLAN SELECT * FROM digitalocean.images.actions"
        if seeded.startswith("sqlite")
        else "EXPLAIN (COSTS OFF) SELECT * FROM digitalocean.images.actions"
    )

    result = run(seeded, sql, "--format", "jsonl")

    assert (result.exit_code, result.stderr) == (0, "")
    assert "image_actions" in result.stdout


# Errors.


def test_bad_sql_prints_the_databases_message_on_one_line(seeded: str) -> None:
    messages = {
        "sqlite": [
            "no such column: nosuch",
            'near "SELEC": syntax error',
            'unrecognized token: "\'abc"',
        ],
        "postgresql": [
            'column "nosuch" does not exist',
            'syntax error at or near "SELEC"',
            'unterminated quoted string at or near "\'abc"',
        ],
    }[seeded.split(":")[0]]
    queries = ["SELECT nosuch FROM images", "SELEC 1", "SELECT 'abc"]

    for sql, message in zip(queries, messages, strict=True):
        result = run(seeded, sql)
        assert (result.exit_code, result.stdout, result.stderr) == (
            2,
            "",
            f"inventory: {message}\n",
        )


def test_a_missing_store_is_named_and_not_created(database_url: str) -> None:
    result = run(database_url, "SELECT 1")

    assert result.exit_code == 2
    assert result.stderr.startswith("inventory: No store at ")
    assert result.stderr.endswith(": run `inventory sync` or `inventory demo` first.\n")
    assert not Path("inventory.db").exists()
    if database_url.startswith("sqlite"):
        assert not Path(database_url.removeprefix("sqlite:///")).exists()


def test_no_sql_at_all_is_a_usage_error(seeded: str) -> None:
    result = run(seeded, input="  ;\n")

    assert (result.exit_code, result.stderr) == (
        2,
        "inventory: No SQL to run: the query is empty.\n",
    )


# Output formats.

FORMAT_QUERY = (
    "SELECT id, name, public, regions, created_at, size_gigabytes, description, slug "
    "FROM images ORDER BY id"
)


def test_table_output(seeded: str) -> None:
    result = run(seeded, FORMAT_QUERY)

    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == TABLE


def test_csv_output(seeded: str) -> None:
    result = run(seeded, FORMAT_QUERY, "--format", "csv")

    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == CSV


def test_json_output(seeded: str) -> None:
    result = run(seeded, FORMAT_QUERY, "--format", "json")

    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == JSON_OUTPUT


def test_jsonl_output(seeded: str) -> None:
    result = run(seeded, FORMAT_QUERY, "--format", "jsonl")

    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == JSONL


def test_json_columns_are_nested_and_timestamps_iso_8601(seeded: str) -> None:
    sql = "SELECT id, region, started_at, completed_at FROM image_actions ORDER BY id"

    rows = rows_of(seeded, sql)

    assert [(r["id"], r["started_at"], r["completed_at"]) for r in rows] == [
        (29410565, "2014-07-25T15:04:21+00:00", "2014-07-25T15:10:20+00:00"),
        (36805527, "2014-11-14T16:42:45+00:00", None),
    ]
    assert rows[0]["region"]["slug"] == "nyc2"
    assert list(rows[0]["region"]) == ["available", "features", "name", "sizes", "slug"]


def test_repeated_column_names_stay_apart_in_json(seeded: str) -> None:
    sql = (
        "SELECT a.id, b.id FROM images a JOIN images b ON a.id = b.id WHERE a.id = 1001"
    )

    assert rows_of(seeded, sql) == [{"id": 1001, "id_2": 1001}]


def test_an_empty_answer_prints_headers_and_a_count(seeded: str) -> None:
    result = run(seeded, "SELECT id, name FROM images WHERE id = 0")

    assert result.stdout == "id    name\n----  ------\n(0 rows)\n"


TABLE = """\
     id  name                public    regions          created_at                          size_gigabytes  description    slug
-------  ------------------  --------  ---------------  --------------------------------  ----------------  -------------  ------
   1001  O'Brien's snapshot  true      ["ams3"]         2020-02-29T12:00:00.500000+00:00        1234567.0   NULL           obrien
7555620  Nifty New Snapshot  false     ["nyc2","nyc3"]  2014-11-04T22:23:02+00:00                     2.34                 NULL
7555621  Another Snapshot    false     ["nyc2"]         2014-11-04T22:23:02+00:00                     2.34                 NULL
(3 rows)
"""  # noqa: E501

CSV = """\
id,name,public,regions,created_at,size_gigabytes,description,slug
1001,O'Brien's snapshot,true,"[""ams3""]",2020-02-29T12:00:00.500000+00:00,1234567.0,,obrien
7555620,Nifty New Snapshot,false,"[""nyc2"",""nyc3""]",2014-11-04T22:23:02+00:00,2.34,,
7555621,Another Snapshot,false,"[""nyc2""]",2014-11-04T22:23:02+00:00,2.34,,
"""  # noqa: E501

JSON_OUTPUT = """\
[
  {
    "id": 1001,
    "name": "O'Brien's snapshot",
    "public": true,
    "regions": [
      "ams3"
    ],
    "created_at": "2020-02-29T12:00:00.500000+00:00",
    "size_gigabytes": 1234567.0,
    "description": null,
    "slug": "obrien"
  },
  {
    "id": 7555620,
    "name": "Nifty New Snapshot",
    "public": false,
    "regions": [
      "nyc2",
      "nyc3"
    ],
    "created_at": "2014-11-04T22:23:02+00:00",
    "size_gigabytes": 2.34,
    "description": "",
    "slug": null
  },
  {
    "id": 7555621,
    "name": "Another Snapshot",
    "public": false,
    "regions": [
      "nyc2"
    ],
    "created_at": "2014-11-04T22:23:02+00:00",
    "size_gigabytes": 2.34,
    "description": "",
    "slug": null
  }
]
"""

JSONL = """\
{"id": 1001, "name": "O'Brien's snapshot", "public": true, "regions": ["ams3"], "created_at": "2020-02-29T12:00:00.500000+00:00", "size_gigabytes": 1234567.0, "description": null, "slug": "obrien"}
{"id": 7555620, "name": "Nifty New Snapshot", "public": false, "regions": ["nyc2", "nyc3"], "created_at": "2014-11-04T22:23:02+00:00", "size_gigabytes": 2.34, "description": "", "slug": null}
{"id": 7555621, "name": "Another Snapshot", "public": false, "regions": ["nyc2"], "created_at": "2014-11-04T22:23:02+00:00", "size_gigabytes": 2.34, "description": "", "slug": null}
"""  # noqa: E501


def test_a_sqlite_store_in_a_folder_with_a_hash_opens_read_only(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "a#b"
    folder.mkdir()
    url = f"sqlite:///{folder / 'store.db'}"
    on_store(url, lambda store: store.migrate())
    before = sorted(p.name for p in tmp_path.iterdir())

    assert rows_of(url, "SELECT count(*) AS n FROM images") == [{"n": 0}]
    assert run(url, "DELETE FROM images").exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_json_output_stays_json_with_infinite_floats(seeded: str) -> None:
    sql = (
        "SELECT 1e999 AS up, -1e999 AS down"
        if seeded.startswith("sqlite")
        else "SELECT 'Infinity'::float8 AS up, '-Infinity'::float8 AS down"
    )

    assert rows_of(seeded, sql) == [{"up": "Infinity", "down": "-Infinity"}]


def test_output_types_follow_the_selected_expression_not_the_column_name(
    seeded: str,
) -> None:
    aggregated = (
        "SELECT max(i.created_at) AS latest, '123' AS tags, 'null' AS raw "
        "FROM images i WHERE i.id = 1001"
    )
    renamed = "SELECT i.regions AS r, i.public AS p FROM images i WHERE i.id = 1001"

    assert rows_of(seeded, aggregated) == [
        {"latest": "2020-02-29T12:00:00.500000+00:00", "tags": "123", "raw": "null"}
    ]
    assert rows_of(seeded, renamed) == [{"r": ["ams3"], "p": True}]


async def test_a_long_query_stops_when_cancelled(seeded: str) -> None:
    """Ctrl-C or SIGTERM cancels the command's task: the statement must end too."""
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT count(*) FROM c"
        if seeded.startswith("sqlite")
        else "SELECT pg_sleep(120)"
    )
    running = asyncio.ensure_future(fetch(database_url(seeded), Prepared(endless, {})))
    await asyncio.sleep(0.5)
    running.cancel()

    done, _ = await asyncio.wait({running}, timeout=10)
    assert done and running.cancelled()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM digitalocean.compute.droplets",
        "SELECT * FROM DigitalOcean.images.image",
    ],
)
def test_an_unknown_stackql_resource_names_the_known_ones(sql: str) -> None:
    with pytest.raises(QueryError) as raised:
        prepare(sql, {}, "sqlite", "default")

    message = str(raised.value)
    assert message.startswith("Unknown StackQL resource ")
    assert "digitalocean.images.images" in message
    assert "digitalocean.compute.image_actions" in message


def test_a_placeholder_where_a_name_goes_says_placeholders_are_values(
    seeded: str,
) -> None:
    result = run(seeded, "SELECT * FROM {{ t }}", "--var", "t=images")

    assert result.exit_code == 2  # the query's fault, as every QueryError
    assert result.stderr.startswith("inventory: ")
    assert "syntax error" in result.stderr
    assert result.stderr.endswith(
        " (a {{ name }} placeholder stands for a value; a table or "
        "column name cannot be one)\n"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT " + "(" * 60 + "1" + ")" * 60,
        "SELECT 1 WHERE " + "NOT (" * 60 + "1" + ")" * 60,
    ],
)
def test_a_query_nested_too_deeply_is_one_line_not_a_recursion_error(sql: str) -> None:
    with pytest.raises(QueryError, match="^The query nests too deeply to be read"):
        prepare(sql, {}, "sqlite", "default")


def test_a_store_that_is_down_exits_1_not_the_bad_query_code() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/inventory"

    result = run(url, "SELECT 1")

    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"inventory: Cannot open the store at postgresql://postgres@127.0.0.1:{port}"
        "/inventory: "
    )
    assert len(result.stderr.splitlines()) == 1


def test_a_value_no_time_for_a_timestamp_column_names_its_placeholder(
    seeded: str,
) -> None:
    """Not SQLite comparing text beside PostgreSQL's 'query argument $1'."""
    sql = "SELECT id FROM images WHERE created_at > '{{ since }}'"

    refused = run(seeded, sql, "--var", "since=yesterday")
    taken = run(seeded, sql, "--var", "since=2000-01-01T00:00:00Z", "--format", "csv")

    assert (refused.exit_code, refused.stderr) == (
        2,
        "inventory: --var since='yesterday' is compared with a timestamp column; "
        "give an ISO 8601 time, such as 2026-01-31 or 2026-01-31T12:00:00Z.\n",
    )
    assert (taken.exit_code, len(taken.stdout.splitlines()) > 1) == (0, True)


@pytest.mark.parametrize("value", ["abc", "5.0", "9223372036854775808"])
def test_a_non_integer_value_for_an_integer_column_names_its_placeholder(
    seeded: str, value: str
) -> None:
    """Not SQLite's empty answer beside PostgreSQL's 'query argument $1'."""
    sql = "SELECT id FROM image_actions WHERE image_id = '{{ image_id }}'"

    result = run(seeded, sql, "--var", f"image_id={value}")

    assert (result.exit_code, result.stderr) == (
        2,
        f"inventory: --var image_id={value!r} is compared with an integer column; "
        "give a whole number within 64 bits.\n",
    )


def test_numerics_print_exactly_in_every_format(seeded: str) -> None:
    """PostgreSQL's numeric holds more digits than a float: all 28 are
    printed as given. SQLite's 'numeric' is a float, and prints as one."""
    sql = (
        "SELECT CAST('0.1234567890123456789012345678' AS numeric) AS n, "
        "CAST(2 AS numeric) AS i, CAST(NULL AS numeric) AS z"
    )
    printed = {
        fmt: run(seeded, sql, "--format", fmt).stdout
        for fmt in ("table", "csv", "json", "jsonl")
    }

    n = (
        "0.1234567890123456789012345678"
        if seeded.startswith("postgresql")
        else repr(0.1234567890123456789012345678)
    )
    assert printed["csv"] == f"n,i,z\n{n},2,\n"
    assert printed["jsonl"] == f'{{"n": {n}, "i": 2, "z": null}}\n'
    assert json.loads(printed["json"], parse_float=str) == [{"n": n, "i": 2, "z": None}]
    assert printed["table"].splitlines()[2].split() == [n, "2", "NULL"]


def test_rows_print_as_they_come_and_a_later_failure_is_one_line(seeded: str) -> None:
    """CSV and JSON lines stream in batches (a result bigger than memory goes
    through); a row the database fails on after the first batch stops there."""
    bad = (
        "json_extract('not json', '$')"
        if seeded.startswith("sqlite")
        else "CAST('bad' || x AS integer)"
    )
    sql = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        f"WHERE x < 3000) SELECT CASE WHEN x < 1500 THEN x ELSE {bad} END AS x FROM c"
    )

    result = run(seeded, sql, "--format", "csv")

    assert result.exit_code == 2
    assert result.stdout.splitlines() == ["x", *map(str, range(1, 1001))]
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("inventory: ")
    assert "Traceback" not in result.stderr


def test_json_printed_in_batches_is_the_json_printed_at_once() -> None:
    printer = Printer(["a", "b"], "json")
    streamed = printer.rows([[1, "x"]]) + printer.rows([[2, None]])

    objects = [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    assert streamed + printer.end() == json.dumps(objects, indent=2) + "\n"
    assert render(["a"], [], "json") == "[]\n"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_s_other_types_print_as_postgresql_writes_them(seeded: str) -> None:
    """Not as the Python objects asyncpg makes of them (`1 day, 2:00:00`,
    `asyncpg.pgproto.types.Point((1.0, 2.0))`, `<Range [1, 5)>`), and an
    array of dates or numerics no longer fails to print."""
    sql = (
        "SELECT interval '1 mon 2 days 03:00:00.5' AS i, point(1, 2) AS p, "
        "int4range(1, 5) AS r, 'empty'::int4range AS e, B'101' AS bits, "
        "'{[1,3)}'::int4multirange AS mr, ARRAY[DATE '2026-01-02', NULL] AS dates, "
        "ARRAY[1.25::numeric] AS n, 'infinity'::timestamptz AS t_end, "
        "'-infinity'::timestamp AS t_start, 'infinity'::date AS d_end"
    )

    rows = [
        json.loads(line)
        for line in run(seeded, sql, "--format", "jsonl").stdout.splitlines()
    ]
    table = run(seeded, sql)

    assert rows == [
        {
            "i": "1 mon 2 days 03:00:00.5",
            "p": "(1,2)",
            "r": "[1,5)",
            "e": "empty",
            "bits": "101",
            "mr": ["[1,3)"],
            "dates": ["2026-01-02", None],
            "n": [1.25],
            "t_end": "infinity",
            "t_start": "-infinity",
            "d_end": "infinity",
        }
    ]
    assert (table.exit_code, table.stderr) == (0, "")
    assert table.stdout.splitlines()[2].split() == [
        "1", "mon", "2", "days", "03:00:00.5", "(1,2)", "[1,5)", "empty", "101",
        '["[1,3)"]', '["2026-01-02",null]', "[1.25]", "infinity", "-infinity",
        "infinity",
    ]  # fmt: skip


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_quoted_placeholder_postgresql_takes_for_a_number_says_what_to_write(
    seeded: str,
) -> None:
    result = run(seeded, "SELECT '{{ x }}' + 1 AS y", "--var", "x=5")
    unquoted = run(seeded, "SELECT {{ x }} + 1 AS y", "--var", "x=5", "--format", "csv")

    assert result.exit_code == 2
    assert result.stderr.endswith(
        "(a '{{ name }}' in quotes compared with no column is text; for a number, "
        "write {{ name }} without the quotes)\n"
    )
    assert unquoted.stdout == "y\n6\n"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_numbers_keep_their_digits_and_scale_also_inside_json(seeded: str) -> None:
    sql = (
        """SELECT '{"big": 123456789012345678901234567890.5, "k": 2.50}'::jsonb """
        "AS j, "
        "2.000::numeric AS n, ARRAY[1.10, 2.000] AS a"
    )

    result = run(seeded, sql, "--format", "jsonl")

    assert result.stdout == (
        '{"j": {"k": 2.50, "big": 123456789012345678901234567890.5}, '
        '"n": 2.000, "a": [1.10, 2.000]}\n'
    )
