"""The JSON Schema of ``gmail_check --json``, loaded from the file shipped in the package."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["JSON_SCHEMA", "SCHEMA_FILE"]

SCHEMA_FILE = ("schemas", "gmail_check.schema.json")
"""Where the schema lies in the package: ``django_gmail_smtp/schemas/gmail_check.schema.json``."""


def load_schema() -> dict[str, Any]:
    """The schema (draft 2020-12) as a dict, read from the package's file."""
    text = resources.files("django_gmail_smtp").joinpath(*SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


#: JSON Schema (draft 2020-12) of :meth:`~django_gmail_smtp.diagnosis.Diagnosis.to_dict` and
#: ``gmail_check --json``, from the file shipped in the package.
JSON_SCHEMA: dict[str, Any] = load_schema()
