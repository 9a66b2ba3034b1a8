"""A problem's `type` is where an integrator learns what its code means and what to do: hub serves the catalogue
of its problem types (ADR 0050), and the catalogue holds every code hub answers with, and no code it never does."""

from __future__ import annotations

import ast
import importlib
import itertools
import pkgutil
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx

import hub
from hub.adapters.errors import PeerError
from hub.api import problems
from hub.api.problem_types import PEER_ERRORS, PROBLEM_TYPES, REMEDIES
from hub.domain.errors import DomainError
from hub.signing.sign import PASSED_ON
from tests.api_helpers import as_documented, assert_problem
from tests.conftest import HubFactory
from tests.helpers import dossier, step

HUB = Path(hub.__file__).parent
BUILDERS = {"problem", "problem_body", "_reject", "_problem_bytes"}  # (…, status, code, …): a problem built by hand
E = TypeVar("E", bound=Exception)
SIGNING = {"SigningError", "TimestampError"}  # their code reaches the answer when it is one hub passes on


def _subclasses(base: type[E]) -> dict[str, type[E]]:
    """`base` and every class derived from it anywhere in hub (but its sandboxes), by name."""
    for module in pkgutil.walk_packages(hub.__path__, "hub."):
        if ".sandbox" not in module.name:
            importlib.import_module(module.name)
    found: dict[str, type[E]] = {}
    todo: list[type[E]] = [base]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _constant(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def answered_codes() -> dict[str, set[int | None]]:
    """Every problem code hub's code can answer with, read from its source: the domain errors' own codes and those
    they are raised with, the signing errors' codes it passes on, the problems built by hand, and the codes the
    validation answers by field and by HTTP status. By code: the statuses it comes with, where the source says."""
    errors = _subclasses(DomainError)
    codes: dict[str, set[int | None]] = {}

    def add(code: str | None, status: int | None) -> None:
        if code is not None:
            codes.setdefault(code, set()).add(status)

    for cls in errors.values():
        add(vars(cls).get("code"), cls.status)
    for path in HUB.rglob("*.py"):
        if "sandbox" in path.relative_to(HUB).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            keyword = next((k.value for k in node.keywords if k.arg == "code"), None)
            if name in errors:
                add(_constant(keyword), errors[name].status)
            elif name in SIGNING:
                code = _constant(keyword) or (_constant(node.args[1]) if len(node.args) > 1 else None)
                if code is not None and code.startswith(PASSED_ON):
                    add(code, 503)  # as SigningUnavailable
            elif name in BUILDERS:
                for status, code in itertools.pairwise(node.args):
                    if isinstance(status, ast.Constant) and isinstance(status.value, int) and _constant(code):
                        add(_constant(code), status.value)
    for node in ast.walk(ast.parse(Path(problems.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "code" for t in node.targets):
            add(_constant(node.value), 422)  # validation_problem's own codes
    for code in problems.FIELD_CODES.values():
        add(code, 422)
    for status, code in problems.STATUS_CODES.items():
        add(code, status)
    return codes


def recorded_peer_codes() -> dict[str, set[bool]]:
    """Every code hub records of a failed call to another system, read from its source: the peer errors' own
    codes and those they are raised with, and the tables that turn a peer's numeric error_code into one (with
    their fallbacks). By code: whether hub tries again (the error's `retryable`), where the source says."""
    classes = _subclasses(PeerError)
    codes: dict[str, set[bool]] = {}
    for cls in classes.values():
        if isinstance(vars(cls).get("code"), str):
            codes.setdefault(vars(cls)["code"], set()).add(cls.retryable)
    for path in HUB.rglob("*.py"):
        if "sandbox" in path.relative_to(HUB).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {
            a.asname: a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.asname
        }
        constants = {  # module-level NAME = "code"
            t.id: n.value.value
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                name = aliases.get(name, name)
                keyword = next((k.value for k in node.keywords if k.arg == "code"), None)
                if name in classes and keyword is not None:
                    code = _constant(keyword) or (constants.get(keyword.id) if isinstance(keyword, ast.Name) else None)
                    if code is not None:
                        codes.setdefault(code, set()).add(classes[name].retryable)
                if (
                    name == "get"
                    and getattr(node.func, "value", None) is not None
                    and "MEANING" in ast.unparse(node.func)
                ):
                    fallback = node.args[1] if len(node.args) > 1 else None
                    if isinstance(fallback, ast.Tuple) and _constant(fallback.elts[0]):
                        retried = fallback.elts[1]
                        known = {retried.value} if isinstance(retried, ast.Constant) else {True, False}
                        codes.setdefault(str(_constant(fallback.elts[0])), set()).update(known)
    from hub.adapters.document_exchange.client import MEANING as EDOC
    from hub.adapters.national_portal.codes import MEANING as PORTAL
    from hub.adapters.one_stop.client import PERMANENT

    for code, retried in [*PORTAL.values(), *EDOC.values()]:
        codes.setdefault(code, set()).add(retried)
    for code in PERMANENT.values():
        codes.setdefault(code, set()).add(False)
    return codes


def test_the_peers_errors_are_each_explained_with_whether_hub_tries_again() -> None:
    recorded = recorded_peer_codes()
    assert len(recorded) > 40  # the scan found them
    missing = sorted(set(recorded) - set(PEER_ERRORS))
    assert not missing, f"peer error codes hub records and /peer-errors does not explain: {missing}"
    stale = sorted(set(PEER_ERRORS) - set(recorded))
    assert not stale, f"codes /peer-errors explains and hub never records: {stale}"
    wrong = {c: r for c, r in recorded.items() if len(r) == 1 and PEER_ERRORS[c].retried not in r}
    assert not wrong, f"`retried` says otherwise than the source: {wrong}"
    for code, entry in PEER_ERRORS.items():
        assert entry.meaning.endswith((".", ")")) and entry.action.endswith("."), code


def test_the_catalogue_holds_every_code_hub_answers_with_and_no_other() -> None:
    answered = answered_codes()
    assert len(answered) > 80  # the scan found the codes (a scan that finds none would make this test hollow)
    missing = sorted(set(answered) - set(PROBLEM_TYPES))
    assert not missing, f"codes hub answers with and the catalogue does not explain: {missing}"
    stale = sorted(set(PROBLEM_TYPES) - set(answered))
    assert not stale, f"codes the catalogue explains and hub never answers with: {stale}"
    wrong = {
        code: (sorted(s for s in statuses if s is not None), PROBLEM_TYPES[code].statuses)
        for code, statuses in answered.items()
        if not {s for s in statuses if s is not None} <= set(PROBLEM_TYPES[code].statuses)
    }
    assert not wrong, f"statuses the source answers with that the catalogue does not give: {wrong}"
    for code, entry in PROBLEM_TYPES.items():
        assert entry.title and entry.meaning.endswith(".") and entry.action.endswith("."), code
        assert entry.remedy in REMEDIES and all(400 <= s <= 599 for s in entry.statuses), code
        assert (entry.remedy == "retry_later") <= any(s in (409, 429) or s >= 500 for s in entry.statuses), code


def test_a_problems_type_leads_to_what_it_means_and_what_to_do(hub_factory: HubFactory) -> None:
    """A one-stop system is refused a transition; its developer follows the problem's `type` (resolved against
    the request's address, RFC 3986) — a program gets the entry as JSON, a browser a page — and the list of every
    type is there for writing the client's error handling up front."""
    hub = hub_factory(start_worker=False)
    spec: dict[str, Any] = hub.http.get("/openapi.json").json()
    d = dossier(1)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    refused = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 10))
    body = assert_problem(refused, 409, "invalid_transition")
    where = urljoin(str(refused.request.url), body["type"])
    assert where == f"{hub.url}/problems/invalid_transition"
    with httpx.Client(timeout=10) as developer:  # no API key: it is documentation, of nobody's data
        entry = developer.get(where)
        assert entry.status_code == 200 and entry.headers["content-type"] == "application/json"
        got = entry.json()
        assert got["code"] == body["code"] and body["status"] in got["statuses"] and got["type"] == body["type"]
        assert got["remedy"] == "fix_request" and got["retry"] is False and "transition" in got["meaning"]
        as_documented(spec, "GET", "/problems/{code}", entry)
        page = developer.get(where, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<code>invalid_transition</code>" in page.text and "What to do" in page.text
        listed = developer.get(f"{hub.url}/problems")
        as_documented(spec, "GET", "/problems", listed)
        items = {i["code"]: i for i in listed.json()["items"]}
        assert set(items) == set(PROBLEM_TYPES) and items["database_unavailable"]["retry"] is True
        assert items["signing_not_configured"]["remedy"] == "ask_operators"
        # a code hub never answers with: 404, itself a problem whose type leads to its own entry
        unknown = developer.get(f"{hub.url}/problems/no_such_code")
        assert_problem(unknown, 404, "not_found")
        assert developer.get(urljoin(str(unknown.request.url), unknown.json()["type"])).json()["code"] == "not_found"
        hostile = developer.get(f"{hub.url}/problems/%3Cscript%3E", headers={"Accept": "text/html"})
        assert hostile.status_code == 404 and "<script>" not in hostile.text
        # a delivery's last_error_code has its page too: what the portal's refusal means, and that hub will not
        # send it again by itself
        peer = developer.get(f"{hub.url}/peer-errors/portal_invalid_transition")
        as_documented(spec, "GET", "/peer-errors/{code}", peer)
        assert peer.json()["retried"] is False and peer.json()["peer"] == "national_portal"
        listed_peers = developer.get(f"{hub.url}/peer-errors")
        as_documented(spec, "GET", "/peer-errors", listed_peers)
        assert {i["code"] for i in listed_peers.json()["items"]} == set(PEER_ERRORS)
        assert_problem(developer.get(f"{hub.url}/peer-errors/invalid_transition"), 404, "not_found")  # not a peer's
