"""Every /v1 operation, fed what its OpenAPI document allows and what it does not (schemathesis generates both,
from the schema hub serves), over real HTTP to a running hub with its sandbox peers, on SQLite and on PostgreSQL
(which refuses what SQLite takes), the citizens' own operations signed in: hub never answers 5xx and never an
unstructured error — a 4xx is problem+json with a stable `code`."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import SecretStr
from schemathesis.generation import GenerationMode

from hub.api.app import create_app
from hub.runtime import Runtime
from hub.sandbox.common import ServerThread
from hub.settings import ClientSystem
from tests.api_helpers import as_documented
from tests.conftest import Creds, create_pg_database, drop_pg_database, make_settings
from tests.pki_helpers import Trust

FUZZ_KEY = secrets.token_urlsafe(24)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed_hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    creds: Creds,
    portal_server: ServerThread,
    population_server: ServerThread,
    pay_server: ServerThread,
    trust: Trust,
) -> Iterator[str]:
    from tests.conftest import PAY_PARTNER, PAY_SECRET

    tmp: Path = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(trust.dir, tmp / "sandbox-pki")  # the dev default: the sandbox PKI's roots are the anchors
    everything = ClientSystem(
        name="fuzz",
        api_key=SecretStr(FUZZ_KEY),
        agencies=["*"],
        roles=["onestop", "national_portal", "auditor"],
        prefill_procedures=["*"],
        prefill_purposes=["civil_status_registration"],
    )
    # PostgreSQL refuses what SQLite takes (a NUL in a string, say): both are fuzzed
    database = create_pg_database() if request.param == "postgresql" else None
    settings_ = make_settings(
        tmp,
        creds,
        portal_server.url,
        **({"database_url": database} if database else {}),
        citizen_views_per_minute=1_000_000,  # the citizens' operations are fuzzed signed in, not held at 429
        population_url=f"{population_server.url}/ws/congdan",
        payment_dvc_url=pay_server.url,
        payment_dvc_partner=PAY_PARTNER,
        payment_dvc_secret=SecretStr(PAY_SECRET),
        citizen_idp_issuer=f"{trust.server.url}/idp",
        # the documented examples reach a dossier that exists: a document of it is signed and time-stamped for real
        signing_key=trust.dir / "official.key",
        signing_cert=trust.dir / "official-chain.pem",
        signing_tsa_url=f"{trust.server.url}/pki/tsa",
    )
    settings_.clients.append(everything)
    runtime = Runtime(settings_, role="api", start_worker=True)
    server = ServerThread(create_app(settings_, runtime)).start()
    yield server.url
    server.stop()
    runtime.close()
    if database:
        drop_pg_database(database)


@pytest.fixture(scope="module")
def citizen_bearer(trust: Trust) -> str:
    """A citizen's ID token from the sandbox identity provider: the citizens' own operations are fuzzed signed in."""
    r = httpx.post(f"{trust.server.url}/_sandbox/idp/token", json={"subject_id": "079190000123"})
    r.raise_for_status()
    return f"Bearer {r.json()['id_token']}"


def _cases() -> list[tuple[str, GenerationMode]]:
    """(METHOD /path, mode) for every documented operation, from the schema the app serves (built without starting
    it): valid input for each, and invalid input for each that takes any beyond its path (a path segment is any
    string, so it cannot be made invalid)."""
    import tempfile

    from hub.settings import Settings

    spec = create_app(Settings(var_dir=Path(tempfile.mkdtemp()))).openapi()
    cases = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            label = f"{method.upper()} {path}"
            cases.append((label, GenerationMode.POSITIVE))
            if "requestBody" in op or any(p["in"] == "query" for p in op.get("parameters", [])):
                cases.append((label, GenerationMode.NEGATIVE))
    return cases


@pytest.fixture(scope="module")
def api_schema(fuzzed_hub: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_hub}/openapi.json")


@pytest.fixture(scope="module")
def spec(fuzzed_hub: str) -> dict[str, Any]:
    """The OpenAPI document hub serves: what every answer of a /v1 operation is documented to be."""
    served: dict[str, Any] = httpx.get(f"{fuzzed_hub}/openapi.json").json()
    return served


def _fuzz(
    data: st.DataObject,
    label: str,
    mode: GenerationMode,
    api_schema: Any,
    spec: dict[str, Any],
    url: str,
    bearer: str,
) -> None:
    operation = api_schema.find_operation_by_label(label)
    case = data.draw(operation.as_strategy(generation_mode=mode))
    headers = {"X-API-Key": FUZZ_KEY}
    if label.split(" ", 1)[1].startswith("/v1/citizens/me/"):
        headers["Authorization"] = bearer
    response = case.call(base_url=url, headers=headers, timeout=20)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
        assert content_type[0].startswith("application/problem+json"), where
        body = response.json()
        assert isinstance(body.get("code"), str) and body["code"], where
        assert body.get("status") == response.status_code, where
        problem = spec["components"]["schemas"]["Problem"]
        assert list(Draft202012Validator(problem).iter_errors(body)) == [], where  # as documented
    method, path = label.split(" ", 1)
    as_documented(spec, method, path, response)  # what a client generated from the document reads


FUZZ = {"deadline": None, "suppress_health_check": list(HealthCheck), "derandomize": True, "database": None}
CASES = pytest.mark.parametrize(
    ("label", "mode"), _cases(), ids=lambda v: v.value if isinstance(v, GenerationMode) else v
)


@pytest.mark.parametrize("fuzzed_hub", ["sqlite"], indirect=True)
@CASES
@settings(max_examples=25, **FUZZ)
@given(data=st.data())
def test_no_operation_answers_5xx_or_an_unstructured_error(
    data: st.DataObject,
    label: str,
    mode: GenerationMode,
    api_schema: Any,
    spec: dict[str, Any],
    fuzzed_hub: str,
    citizen_bearer: str,
) -> None:
    _fuzz(data, label, mode, api_schema, spec, fuzzed_hub, citizen_bearer)


@pytest.mark.parametrize("fuzzed_hub", ["postgresql"], indirect=True)
@CASES
@settings(max_examples=10, **FUZZ)  # what PostgreSQL refuses and SQLite takes shows in fewer cases
@given(data=st.data())
def test_no_operation_answers_5xx_on_postgresql_either(
    data: st.DataObject,
    label: str,
    mode: GenerationMode,
    api_schema: Any,
    spec: dict[str, Any],
    fuzzed_hub: str,
    citizen_bearer: str,
) -> None:
    _fuzz(data, label, mode, api_schema, spec, fuzzed_hub, citizen_bearer)


def test_the_fuzzed_schema_reaches_every_operation(fuzzed_hub: str) -> None:
    """The generated cases above cover what hub documents: every /v1 operation is in the served schema."""
    paths = httpx.get(f"{fuzzed_hub}/openapi.json").json()["paths"]
    assert {"/v1/dossiers", "/v1/prefill", "/v1/payments", "/v1/signatures/verify"} <= set(paths)
