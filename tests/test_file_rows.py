"""The per-file shortcuts for changing a catalog row give what `dataclasses.replace` gives."""

from __future__ import annotations

from dataclasses import fields, replace

from pixseek.catalog import INDEXED, FileRow


def _every_field_set() -> FileRow:
    """A row whose every field holds its own value, so a shortcut that drops one shows."""
    samples = {int: 7, float: 1.5, bool: True, str: "x"}
    values = {}
    for number, field in enumerate(fields(FileRow)):
        kind = next(t for t in (bool, int, float, str) if t.__name__ in str(field.type))
        values[field.name] = f"{field.name}-{number}" if kind is str else samples[kind] + number
    return FileRow(**values)


def test_with_hash_changes_only_the_hash():
    row = _every_field_set()
    assert row.with_hash("abc") == replace(row, content_hash="abc")


def test_indexed_sets_the_image_facts_and_clears_the_failure():
    row = _every_field_set()
    expected = replace(
        row, status=INDEXED, reason=None, retryable=False,
        width=640, height=480, format="JPEG", taken_at=12.5, camera="X-T5",
    )  # fmt: skip
    assert row.indexed(640, 480, "JPEG", 12.5, "X-T5") == expected
