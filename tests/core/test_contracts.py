"""The wire types' JSON Schemas do not depend on how msgspec formats docstrings."""

from __future__ import annotations

import msgspec

from tocsin.core import contracts


def test_descriptions_are_dedented_whatever_msgspec_kept() -> None:
    indented = {"description": "First line.\n\n    Second line,\n    third line."}
    flush = {"description": "First line.\n\nSecond line,\nthird line."}
    nested = {"$defs": {"A": indented}, "anyOf": [indented]}
    assert contracts._clean_descriptions(indented) == flush
    assert contracts._clean_descriptions(flush) == flush
    assert contracts._clean_descriptions(nested) == {"$defs": {"A": flush}, "anyOf": [flush]}


def test_every_schema_is_valid_json_with_its_subject_as_title() -> None:
    for name, body in contracts.json_schemas().items():
        schema = msgspec.json.decode(body)
        assert f"{schema['title']}.schema.json" == name
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
