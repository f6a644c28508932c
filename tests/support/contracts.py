"""Validating real payloads against the documents in docs/ (OpenAPI 3.0 and AsyncAPI 2.6)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DOCS = Path(__file__).resolve().parents[2] / "docs"


@functools.cache
def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DOCS / name).read_text())
    return doc


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    """Inline $refs and turn OpenAPI's `nullable` into JSON Schema's null type."""
    if isinstance(node, list):
        return [_resolve(n, root) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _resolve(target, root)
    out = {k: _resolve(v, root) for k, v in node.items() if k not in ("nullable", "example", "examples")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def openapi_schema(name: str) -> dict[str, Any]:
    doc = load("openapi.yaml")
    resolved: dict[str, Any] = _resolve(doc["components"]["schemas"][name], doc)
    return resolved


def asyncapi_message_schema(name: str) -> dict[str, Any]:
    doc = load("asyncapi.yaml")
    resolved: dict[str, Any] = _resolve(doc["components"]["messages"][name]["payload"], doc)
    return resolved


def check_openapi(name: str, instance: Any) -> None:
    jsonschema.validate(instance, openapi_schema(name))


def check_asyncapi(name: str, instance: Any) -> None:
    jsonschema.validate(instance, asyncapi_message_schema(name))
