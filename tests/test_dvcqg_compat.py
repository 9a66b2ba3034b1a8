"""A one-stop system written for the national portal talks to hub as it talks to the portal (ADR 0040): `auth`
for a session, then `service` calls, replies with the portal's `error_code` — pointed at hub by its adapter URL
alone. What it sends reaches the portal as hub's own API would relay it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from hub.api import dvcqg
from hub.sandbox import contracts
from tests.conftest import OTHER_AGENCY, Creds, HubFactory
from tests.helpers import as_one_stop_writes_it, dossier, step
from tests.test_relay import applied_keys, portal_history

CLIENT = "onestop-hcm"


class PortalClient:
    """What a one-stop system's DVCQG integration does (OpenCPS's, for one): sign in, keep the session, call."""

    def __init__(self, http: httpx.Client, username: str, password: str) -> None:
        self.http = http
        self.username = username
        self.password = password
        self.session = ""

    def sign_in(self) -> dict[str, Any]:
        signing_in = json.dumps({"username": self.username, "password": self.password})  # \u-escaped, as Java's
        r = self.http.post("/dvcqg/api/auth", content=signing_in, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        if answer["error_code"] == "00":
            self.session = answer["session"]
        return answer

    def call(self, service: str, **payload: Any) -> dict[str, Any]:
        body = {"session": self.session, "madonvi": "000.00.17.H56", "service": service, **payload}
        sent = json.dumps(body)  # \u-escaped, as Java's JSON libraries write what is not ASCII
        r = self.http.post("/dvcqg/api/service", content=sent, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer


def test_a_one_stop_system_written_for_the_portal_files_walks_and_looks_up_through_hub(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds
) -> None:
    hub = hub_factory()
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    signed = one_stop.sign_in()
    assert signed["error_code"] == "00" and signed["session"]
    d = dossier(11)
    code = d["MaHoSo"]
    assert one_stop.call("DongBoHoSoMC", isUpdating="False", data=[as_one_stop_writes_it(d)]) == {
        "error_code": "00",
        "message": "Thành công",
    }
    progress = {**step(code, 4), "TrangThai": "4", "ChucDanh": "", "PhongBanXuLy": "", "NgayBatDau": ""}
    assert one_stop.call("CapNhatTienDoHoSoMC", data=[progress])["error_code"] == "00"
    # the same message sent again (a one-stop system retries what it is unsure of): nothing new
    assert one_stop.call("CapNhatTienDoHoSoMC", data=[progress])["error_code"] == "00"
    assert hub.wait_idle() == {"delivered": 2}
    assert portal_history(portal, code) == [2, 4]
    assert set(applied_keys(portal).values()) == {1}
    looked_up = one_stop.call("TraCuuHoSo", MaHoSo=code)
    assert looked_up["error_code"] == "00" and looked_up["data"]["TrangThaiHoSo"] == 4
    for answer in (signed, looked_up, one_stop.call("TraCuuHoSo", MaHoSo=7)):  # the portal's reply contract
        assert contracts.errors("national_portal/reply.schema.json", answer) == []
    assert looked_up["data"]["MaHoSo"] == code and looked_up["data"]["ChuHoSo"] == d["ChuHoSo"]
    assert looked_up["result"] == [looked_up["data"]]  # where one-stop systems read a look-up's answer
    assert one_stop.call("TraCuuHoSo", mahoso=dossier(12)["MaHoSo"])["error_code"] == "05"  # unknown
    # counted under the labels HubOneStopItemsRefused leaves out: a one-stop system asks so before each new dossier
    metrics = hub.http.get("/metrics").text
    assert 'hub_dvcqg_replies_total{error_code="05",service="TraCuuHoSo"} 1.0' in metrics
    rules = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs" / "ops" / "alerts.yml").read_text())
    [refused] = [r["expr"] for g in rules["groups"] for r in g["rules"] if r["alert"] == "HubOneStopItemsRefused"]
    assert 'service="TraCuuHoSo",error_code=~"03|04"' in refused and 'service!="TraCuuHoSo"' in refused


def test_a_one_stop_system_asks_for_a_procedure_as_it_does_before_pushing_a_dossier(
    hub_factory: HubFactory, creds: Creds
) -> None:
    """OpenCPS asks LayThuTuc for the procedure's name and field (TENTTHC, LINHVUCTHUCHIEN[0].MALINHVUC) before it
    builds a dossier; unanswered, it would push TenTTHC "" and have the dossier refused."""
    hub = hub_factory()
    hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t")
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    one_stop.sign_in()
    answer = one_stop.call("LayThuTuc", maTTHC="1.001193")
    assert answer["error_code"] == "00" and answer["data"]["TenTTHC"] == "Đăng ký khai sinh"
    [procedure] = answer["result"]
    assert procedure["TENTTHC"] == "Đăng ký khai sinh" and procedure["MATTHC"] == "1.001193"
    assert procedure["LINHVUCTHUCHIEN"] == [{"MALINHVUC": "HT", "TENLINHVUC": "Hộ tịch"}]
    assert one_stop.call("LayThuTuc", maTTHC="9.999999") == {
        "error_code": "05",
        "message": "Không tìm thấy thủ tục 9.999999",
        "result": [],
    }
    for malformed in (["1.001193"], "1.001193\x00", "1.00119\ud800", "", None):  # never reaching the database
        assert one_stop.call("LayThuTuc", maTTHC=malformed)["error_code"] == "03", malformed


def test_a_batch_with_refused_items_says_which_and_takes_the_rest(hub_factory: HubFactory, creds: Creds) -> None:
    hub = hub_factory()
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    one_stop.sign_in()
    known = dossier(20, status=2)
    assert one_stop.call("DongBoHoSoMC", isUpdating=False, data=[known])["error_code"] == "00"
    good = dossier(21, status=2)
    items = [
        good,
        {**known, "TrangThaiHoSo": 10},
        {**dossier(22), "MaHoSo": "not-a-code"},
        dossier(23, agency=OTHER_AGENCY),
    ]
    answer = one_stop.call("DongBoHoSoMC", isUpdating=True, data=items)
    assert answer["error_code"] == "04"  # the first refusal's: 2 -> 10 is no transition
    message = answer["message"]
    assert "3/4" in message and "[1]" in message and "[2]" in message and "[3]" in message and "[0]" not in message
    assert "invalid_transition" in message and "agency_not_allowed" in message
    assert hub.http.get(f"/v1/dossiers/{good['MaHoSo']}").json()["TrangThaiHoSo"] == 2  # taken
    assert hub.http.get(f"/v1/dossiers/{known['MaHoSo']}").json()["TrangThaiHoSo"] == 2  # unchanged
    events = len(hub.http.get(f"/v1/dossiers/{good['MaHoSo']}").json()["events"])
    assert one_stop.call("DongBoHoSoMC", isUpdating=True, data=items)["error_code"] == "04"  # sent again whole
    assert len(hub.http.get(f"/v1/dossiers/{good['MaHoSo']}").json()["events"]) == events  # nothing new for it
    only_bad = one_stop.call("CapNhatTienDoHoSoMC", data=[{**step(good["MaHoSo"], 4), "ThoiDiemXuLy": ""}])
    assert only_bad["error_code"] == "03" and "ThoiDiemXuLy" in only_bad["message"]
    # HTTP said 200 to all of them: operators see the refusals in the metrics
    metrics = hub.http.get("/metrics").text
    assert 'hub_dvcqg_replies_total{error_code="04",service="DongBoHoSoMC"} 2.0' in metrics
    assert 'hub_dvcqg_replies_total{error_code="03",service="CapNhatTienDoHoSoMC"} 1.0' in metrics
    assert 'hub_dvcqg_replies_total{error_code="00",service="auth"} 1.0' in metrics


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("onestop-hcm", "not-the-key"),
        ("onestop-other", None),
        ("", None),
        ("dvcqg-unknown", None),
        ("onestop-hcm", "\ud800"),  # a lone surrogate, which JSON lets through: no key, not a 500
        ("onestop-hcm\ud800", None),
    ],
)
def test_a_sign_in_with_the_wrong_name_or_key_is_refused(
    hub_factory: HubFactory, creds: Creds, username: str, password: str | None
) -> None:
    """The username is the client system's name and the password its API key: another client's key under this
    name, or this key under another name, opens nothing."""
    hub = hub_factory()
    one_stop = PortalClient(hub.http, username, password or creds.api_key)
    assert one_stop.sign_in()["error_code"] == "01"
    assert one_stop.call("DongBoHoSoMC", isUpdating=False, data=[dossier(30)])["error_code"] == "02"


def test_a_session_forged_expired_or_of_a_key_rotated_out_is_refused(
    hub_factory: HubFactory, creds: Creds, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_factory()
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    one_stop.sign_in()
    good = one_stop.session
    for forged in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "", "x" * 600, None, 42):
        one_stop.session = forged  # type: ignore[assignment]
        assert one_stop.call("TraCuuHoSo", MaHoSo=dossier(40)["MaHoSo"])["error_code"] == "02", forged
    one_stop.session = good
    assert one_stop.call("TraCuuHoSo", MaHoSo=dossier(40)["MaHoSo"])["error_code"] == "05"  # the session holds
    monkeypatch.setattr(dvcqg, "SESSION_SECONDS", -1)  # half an hour later
    assert one_stop.call("TraCuuHoSo", MaHoSo=dossier(40)["MaHoSo"])["error_code"] == "02"
    monkeypatch.undo()
    client = next(c for c in hub.settings.clients if c.name == CLIENT)
    new_key = SecretStr("a-new-key-" + "k" * 20)
    monkeypatch.setattr(client, "next_api_key", new_key)  # a rotation begins: both keys are taken
    assert one_stop.call("TraCuuHoSo", MaHoSo=dossier(40)["MaHoSo"])["error_code"] == "05"  # still open
    monkeypatch.setattr(client, "api_key", new_key)  # and ends: the old key is no more
    monkeypatch.setattr(client, "next_api_key", None)
    assert one_stop.call("TraCuuHoSo", MaHoSo=dossier(40)["MaHoSo"])["error_code"] == "02"
    assert PortalClient(hub.http, CLIENT, creds.api_key).sign_in()["error_code"] == "01"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"service": "DongBoHoSoMC"}',  # no session
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_what_is_not_a_portal_message_gets_the_portals_answer_not_a_500(
    hub_factory: HubFactory, creds: Creds, body: bytes
) -> None:
    hub = hub_factory()
    for path in ("/dvcqg/api/auth", "/dvcqg/api/service"):
        r = hub.http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["error_code"] in ("02", "03"), (path, r.text)
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    one_stop.sign_in()
    assert one_stop.call("LayDanhMucCoQuan")["error_code"] == "03"  # a service hub does not offer
    assert one_stop.call("DongBoHoSoMC", isUpdating=False, data=[])["error_code"] == "03"
    assert one_stop.call("DongBoHoSoMC", isUpdating=False, data="x")["error_code"] == "03"
    assert one_stop.call("DongBoHoSoMC", isUpdating=False, data=[7])["error_code"] == "03"
    assert one_stop.call("TraCuuHoSo", MaHoSo=["x"])["error_code"] == "03"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# text as hostile as JSON lets it be: NUL, lone surrogates, codes one character off
TEXT = st.sampled_from(["\x00", "\ud800", "1.001193\x00", "000.00.17.H56-261207-0001\x00", "9" * 40, ""]) | st.text(
    alphabet=st.characters(codec=None), max_size=24
)
VALUE = JSON | TEXT
ITEM = st.dictionaries(st.sampled_from(["MaHoSo", "TrangThaiHoSo", "TrangThai", "NgayTiepNhan"]) | TEXT, VALUE)
MESSAGES = st.one_of(
    st.tuples(st.just("LayThuTuc"), st.fixed_dictionaries({"maTTHC": VALUE})),
    st.tuples(st.just("TraCuuHoSo"), st.fixed_dictionaries({"MaHoSo": VALUE})),
    st.tuples(st.just("TraCuuHoSo"), st.fixed_dictionaries({"mahoso": VALUE})),
    st.tuples(
        st.sampled_from(["DongBoHoSoMC", "CapNhatTienDoHoSoMC"]),
        st.fixed_dictionaries({"data": VALUE | st.lists(ITEM | VALUE, max_size=3)}),
    ),
    st.tuples(TEXT, st.dictionaries(TEXT, VALUE, max_size=3)),
)


def test_no_portal_message_gets_a_500_whatever_it_holds(hub_factory: HubFactory, creds: Creds) -> None:
    """Hostile or broken messages from a client signed in: every answer is the portal's JSON reply (HTTP 200), never
    a server error — a NUL or a lone surrogate in a code, numbers no database holds, shapes of every kind."""
    hub = hub_factory()
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    one_stop.sign_in()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(message=MESSAGES)
    def check(message: tuple[str, dict[str, Any]]) -> None:
        service, fields = message
        sent = {k: v for k, v in fields.items() if k not in ("service", "session", "self")}
        answer = one_stop.call(service, **sent)
        assert answer["error_code"] in {"00", "03", "04", "05"}, answer

    check()
