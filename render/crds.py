"""JSON schemas for the custom resources the program emits, written from each CRD.

kubernetes-validate knows only built-in kinds; a custom resource is checked against the schema
registered here for its `(apiVersion, kind)`, and one with no schema here is a violation.
"""

from __future__ import annotations

from typing import Any

CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {}
