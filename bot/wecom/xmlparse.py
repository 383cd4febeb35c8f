"""Hardened XML parsing for callback bodies: no DTDs, no entities, no external references."""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
from defusedxml.ElementTree import fromstring


class XMLError(ValueError):
    """The body is not acceptable XML (malformed, or uses DTDs or entities)."""


def _to_value(element: Element) -> Any:
    children = list(element)
    if not children:
        return element.text or ""
    result: dict[str, Any] = {}
    for child in children:
        value = _to_value(child)
        if child.tag in result:
            existing = result[child.tag]
            if isinstance(existing, list):
                existing.append(value)
            else:
                result[child.tag] = [existing, value]
        else:
            result[child.tag] = value
    return result


def parse_xml(body: bytes | str) -> dict[str, Any]:
    """Parse a WeCom `<xml>...</xml>` document into a dict of its children; raise XMLError."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (
        ParseError,
        defusedxml.DefusedXmlException,
        ValueError,
        LookupError,
    ) as exc:  # LookupError: unknown encoding
        raise XMLError(f"malformed XML: {type(exc).__name__}") from exc
    if root.tag != "xml":
        raise XMLError("root element must be <xml>")
    value = _to_value(root)
    if not isinstance(value, dict):
        raise XMLError("<xml> has no fields")
    return value
