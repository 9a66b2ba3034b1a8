"""The one hardened parser for untrusted XML: no DTD (a DOCTYPE is refused outright, so no entity can be declared,
let alone expanded), no entity resolution, no network, a size limit, and libxml2's limits for non-huge trees
(nesting deeper than 256 levels, text nodes over 10 MB and similar are refused by the parser itself)."""

from __future__ import annotations

import threading
from typing import Any

from lxml import etree

MAX_BYTES = 10 * 1024 * 1024


class UnsafeXml(ValueError):
    """The document is not well-formed, too large or too deep, or uses features hub refuses (DTDs, entities)."""


def _parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=False,
        collect_ids=False,
    )


def parse_untrusted(data: bytes, *, max_bytes: int = MAX_BYTES) -> Any:
    """Parse `data` (bytes) into an lxml root element, or raise UnsafeXml with a reason fit for a report."""
    if not isinstance(data, bytes | bytearray):
        raise UnsafeXml("XML must be given as bytes")
    if len(data) > max_bytes:
        raise UnsafeXml(f"document is larger than {max_bytes} bytes")
    if b"<!DOCTYPE" in data or b"<!doctype" in data:  # cheap pre-check; the parsed docinfo is checked too
        raise UnsafeXml("document type declarations (DTD) are not accepted")
    if b"<!ENTITY" in data:
        raise UnsafeXml("entity declarations are not accepted")
    try:
        root = etree.fromstring(bytes(data), _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {exc}") from None
    if root is None:
        raise UnsafeXml("empty document")
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise UnsafeXml("document type declarations (DTD) are not accepted")
    return root


_REPARSERS = threading.local()


def reparse(data: bytes) -> Any:
    """Parse XML that hub serialized itself from a tree parse_untrusted already accepted (a standalone copy of an
    element, a signature library's intermediate form): the same hardened settings, without parse_untrusted's
    checks, with this thread's parser (lxml parsers must not be shared between threads)."""
    parser = getattr(_REPARSERS, "parser", None)
    if parser is None:
        parser = _REPARSERS.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
        )
    return etree.fromstring(data, parser=parser)
