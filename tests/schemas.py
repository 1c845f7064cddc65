"""Check a published document against its committed JSON Schema (``schemas/``)."""

from __future__ import annotations

import functools
import json
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from patchpilot.app.documents import DOCUMENTS, schema_file


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The validator of the committed schema ``name`` (e.g. ``patchpilot.run/v1``)."""
    schema = json.loads(schema_file(name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def assert_matches_schema(document: dict[str, Any]) -> None:
    """``document`` (as emitted: JSON types) validates against the schema it names."""
    name = document["schema"]
    assert name in DOCUMENTS, f"{name!r} has no committed schema"
    plain = json.loads(json.dumps(document, default=str))  # what the CLI prints
    errors = sorted(validator(name).iter_errors(plain), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    DOCUMENTS[name].model_validate(plain)  # and the model reads it back
