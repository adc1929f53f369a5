"""Parsing API objects into records: every example payload, every odd field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from inventory.records import PayloadError, parse_action, parse_image, parse_timestamp

from conftest import EXAMPLES


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


IMAGE_LISTS = sorted(p.name for p in EXAMPLES.glob("*images-list*.json"))


@pytest.mark.parametrize("name", IMAGE_LISTS)
def test_every_example_image_list_parses(name: str) -> None:
    for obj in load(name)["images"]:
        image = parse_image(obj)
        assert image.id == obj["id"]
        assert image.raw is obj


def test_the_spec_image_with_a_duplicate_region_lists_it_once() -> None:
    image = parse_image(load("spec-image-get.json")["image"])
    assert image.type is None
    assert image.regions.count("nyc3") == 2
    assert image.region_slugs == [
        "nyc1",
        "ams1",
        "sfo1",
        "nyc2",
        "ams2",
        "sgp1",
        "lon1",
        "nyc3",
        "ams3",
    ]


def test_a_new_custom_image_lacks_slug_public_and_sizes() -> None:
    image = parse_image(load("spec-image-create-custom-new-status.json")["image"])
    assert (image.slug, image.public, image.min_disk_size, image.size_gigabytes) == (
        None,
        None,
        None,
        None,
    )
    assert image.status == "NEW"
    assert image.regions == []


def test_a_minimal_godo_image_has_only_an_id() -> None:
    image = parse_image(
        load("godo-images-list-middle-page-all-links.json")["images"][0]
    )
    assert image.id == 1
    assert image.name is None and image.regions == [] and image.tags is None


@pytest.mark.parametrize(
    "name",
    [
        "spec-image-action-get.json",
        "spec-image-action-post-response-201.json",
        "godo-action-get-sparse-fields.json",
    ],
)
def test_every_example_single_action_parses(name: str) -> None:
    obj = load(name)["action"]
    assert parse_action(obj).raw is obj


def test_an_in_progress_action_has_no_completed_at() -> None:
    action = parse_action(load("spec-image-action-get.json")["action"])
    assert action.status == "in-progress"
    assert action.completed_at is None


def test_an_action_with_only_a_status_is_refused_for_lack_of_an_id() -> None:
    with pytest.raises(PayloadError, match="no integer id"):
        parse_action(load("godo-image-action-get-status-only.json"))


def test_an_empty_region_object_is_kept_as_given() -> None:
    action = parse_action(
        load("pydo-actions-list-empty-region-object.json")["actions"][0]
    )
    assert action.region == {}
    assert action.region_slug == "string"


@pytest.mark.parametrize(
    ("obj", "region", "region_slug"),
    [
        ({"id": 1}, None, None),
        ({"id": 1, "region": None, "region_slug": None}, None, None),
        ({"id": 1, "region": "nyc3"}, "nyc3", None),
        ({"id": 1, "region": {}, "region_slug": "ams3"}, {}, "ams3"),
    ],
)
def test_region_may_be_absent_null_a_string_or_empty(
    obj: dict, region: object, region_slug: str | None
) -> None:
    action = parse_action(obj)
    assert (action.region, action.region_slug) == (region, region_slug)


def test_ids_above_two_to_the_31_stay_exact() -> None:
    action = parse_action({"id": 3_169_590_176, "resource_id": 2**40 + 1})
    assert (action.id, action.resource_id) == (3_169_590_176, 2**40 + 1)


def test_an_integral_float_id_is_an_integer_and_a_boolean_is_not() -> None:
    assert parse_image({"id": 7555620.0}).id == 7555620
    with pytest.raises(PayloadError):
        parse_image({"id": True})
    with pytest.raises(PayloadError, match="not a JSON object"):
        parse_image(["id", 1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2014-11-14T16:42:45Z", datetime(2014, 11, 14, 16, 42, 45, tzinfo=UTC)),
        (
            "2025-10-14T11:55:31.615157397Z",
            datetime(2025, 10, 14, 11, 55, 31, 615157, tzinfo=UTC),
        ),
        ("2014-11-14T18:42:45+02:00", datetime(2014, 11, 14, 16, 42, 45, tzinfo=UTC)),
        ("2014-11-14T16:42:45", datetime(2014, 11, 14, 16, 42, 45, tzinfo=UTC)),
        (1415983365, datetime(2014, 11, 14, 16, 42, 45, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("yesterday", None),
        (10**20, None),
        (float("nan"), None),
    ],
)
def test_timestamps_parse_with_fractions_z_offsets_or_unix_seconds(
    text: object, expected: datetime | None
) -> None:
    assert parse_timestamp(text) == expected


def test_nullable_image_fields_may_be_null_or_absent() -> None:
    image = parse_image(
        {
            "id": 5,
            "slug": None,
            "min_disk_size": None,
            "size_gigabytes": None,
            "tags": None,
        }
    )
    assert (image.slug, image.min_disk_size, image.size_gigabytes, image.tags) == (
        None,
        None,
        None,
        None,
    )
    assert parse_image({"id": 5, "size_gigabytes": 2}).size_gigabytes == 2.0


def test_a_field_of_an_undocumented_type_is_left_empty_and_said_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("inventory.records._warned", set())
    odd = {"id": 1, "tags": "base", "min_disk_size": "20", "regions": ["nyc3", 7]}

    first = parse_image(odd)
    parse_image({**odd, "id": 2})

    assert (first.tags, first.min_disk_size, first.regions) == (None, None, ["nyc3"])
    assert first.raw == odd
    warnings = sorted(r.getMessage().split(",")[0] for r in caplog.records)
    assert warnings == [
        "Field 'min_disk_size' came as str '20'",
        "Field 'regions[]' came as int 7",
        "Field 'tags' came as str 'base'",
    ]


def test_absent_and_null_fields_are_no_cause_for_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parse_image({"id": 1, "slug": None, "tags": None})
    parse_action({"id": 2, "resource_id": None})

    assert caplog.records == []


def test_an_id_beyond_64_bits_is_refused_and_other_fields_beyond_their_column_kept_raw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A BIGINT holds 2**63 - 1 at most: beyond it the store would fail the
    whole run, so the image is left out as one without a usable id."""
    monkeypatch.setattr("inventory.records._warned", set())
    assert parse_image({"id": 2**63 - 1}).id == 2**63 - 1
    with pytest.raises(PayloadError, match="an id beyond 64 bits: 9223372036854775808"):
        parse_image({"id": 2**63})
    with pytest.raises(PayloadError, match="beyond 64 bits"):
        parse_action({"id": -(2**63) - 1})

    image = parse_image({"id": 1, "min_disk_size": 2**31})
    action = parse_action({"id": 2, "resource_id": 2**64})
    assert (image.min_disk_size, image.raw["min_disk_size"]) == (None, 2**31)
    assert (action.resource_id, action.raw["resource_id"]) == (None, 2**64)
