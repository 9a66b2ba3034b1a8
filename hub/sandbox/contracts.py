"""Load the JSON Schemas of contracts/ (from the source tree, or from the installed package's copy)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `contracts_dir` alone (hub's start-up) needs neither
    from jsonschema_rs import Registry, Validator


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
def _registry() -> tuple[Registry, dict[str, Any]]:
    """Every schema of contracts/ by its `$id`, so that one contract's `$ref` to another resolves offline."""
    from jsonschema_rs import Registry

    resources: list[tuple[str, Any]] = []
    by_path: dict[str, Any] = {}
    root = contracts_dir()
    for path in sorted(root.glob("*/*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], schema))
        by_path[path.relative_to(root).as_posix()] = schema
    return Registry(resources), by_path


@cache
def validator(name: str) -> Validator:
    """A validator for `contracts/<name>` (e.g. "national_portal/service.request.schema.json").

    jsonschema-rs (ADR 0031): `pattern` as JSON Schema means it (ECMA-262: `$` is the end of the string — Python's
    `re` also matches before a final newline, so "000.00.17.H56\n" would pass "^[0-9]{3}...[0-9]{2}$"), through
    `$ref`s into other contracts too; and a sandbox judges a message in microseconds, not the ~0.5 ms of
    CPU a DongBoHoSoMC took in pure Python — the portal sandbox shares the cores of everything it is tested with."""
    from jsonschema_rs import validator_for

    registry, by_path = _registry()
    return validator_for(by_path[name], registry=registry)


def errors(name: str, instance: Any) -> list[str]:
    """Human-readable contract violations of `instance` (empty when it conforms)."""
    v = validator(name)
    if v.is_valid(instance):
        return []
    found = sorted(v.iter_errors(instance), key=lambda e: [str(p) for p in e.instance_path])
    return [f"{'/'.join(str(p) for p in e.instance_path) or '(root)'}: {e.message}" for e in found[:10]]


@cache
def load_json(name: str) -> Any:
    return json.loads((contracts_dir() / name).read_text(encoding="utf-8"))
