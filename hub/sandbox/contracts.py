"""Load the JSON Schemas of contracts/ (from the source tree, or from the installed package's copy)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `contracts_dir` alone (hub's start-up) needs neither
    from jsonschema import Draft202012Validator, ValidationError
    from referencing import Registry


def contracts_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "_contracts", here.parents[2] / "contracts"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("contracts/ not found beside the hub package")


def population_wsdl() -> str:
    """The population database's WSDL (what hub's zeep client reads and the sandbox serves)."""
    return str(contracts_dir() / "population" / "population.wsdl")


@cache
def _registry() -> tuple[Registry, dict[str, str]]:
    from referencing import Registry, Resource

    registry: Registry = Registry()
    by_path: dict[str, str] = {}
    root = contracts_dir()
    for path in sorted(root.glob("*/*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        uri = schema["$id"]
        registry = registry.with_resource(uri, Resource.from_contents(schema))
        by_path[path.relative_to(root).as_posix()] = uri
    return registry, by_path


@cache
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as JSON Schema means it (ECMA-262): an unescaped `$` outside a class is the end of the string.
    Python's `$` also matches before a final newline, so jsonschema's own `pattern` (re.search) lets
    "000.00.17.H56\n" pass "^[0-9]{3}...[0-9]{2}$"."""
    out, escaped, in_class = [], False, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "$" and not in_class:
            out.append(r"\Z")
            continue
        out.append(ch)
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and ecma_regex(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator for `contracts/<name>` (e.g. "national_portal/service.request.schema.json")."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import extend

    registry, by_path = _registry()
    schema = registry.contents(by_path[name])
    contract = extend(Draft202012Validator, {"pattern": _pattern})  # type: ignore[no-untyped-call]
    return contract(schema, registry=registry)  # type: ignore[no-any-return]


def errors(name: str, instance: Any) -> list[str]:
    """Human-readable contract violations of `instance` (empty when it conforms)."""
    found = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in found[:10]]


@cache
def load_json(name: str) -> Any:
    return json.loads((contracts_dir() / name).read_text(encoding="utf-8"))
