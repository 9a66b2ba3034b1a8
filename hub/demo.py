"""`hub demo`: the whole up-flow on one machine — sandbox peers, hub in embedded mode, dossiers filed by the
one-stop sandbox walked through their statuses, a short portal outage, a fee paid online through the payment
platform, and a summary of what arrived where."""

from __future__ import annotations

import logging
import random
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from hub.domain.money import dong
from hub.domain.status import VIETNAMESE_NAMES, DossierStatus
from hub.sandbox import national_portal, one_stop, population
from hub.sandbox.common import ServerThread
from hub.settings import load_settings

AGENCY = "000.00.17.H56"
PAY = -1  # in a walk: the citizen pays the fee online, through hub and the payment platform (hub moves 6 → 4)
# Each dossier's walk after filing: (status, what the officer did).
WALKS: list[list[tuple[int, str]]] = [
    [(4, "Thẩm định hồ sơ"), (9, "Ký duyệt kết quả"), (10, "Trả kết quả cho công dân")],
    [
        (5, "Yêu cầu bổ sung bản sao giấy chứng sinh"),
        (4, "Đã nhận giấy tờ bổ sung"),
        (9, "Ký duyệt"),
        (10, "Trả kết quả qua bưu chính"),
    ],
    [(3, "Không được tiếp nhận: không thuộc thẩm quyền")],
    [(4, "Thẩm định"), (6, "Yêu cầu nộp lệ phí"), (PAY, "Công dân nộp lệ phí trực tuyến"), (9, "Ký duyệt")],
    [(4, "Thẩm định hồ sơ"), (9, "Ký duyệt")],
    [(7, "Công dân rút hồ sơ")],
]


class _DemoLog(logging.Handler):
    """hub's warnings (a delivery failed, a peer is down) as lines of the demo's own, with what they are about."""

    KEYS = ("destination", "peer", "error_code", "attempt", "pause_s")

    def __init__(self, out: Console) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        about = ", ".join(f"{k} {getattr(record, k)}" for k in self.KEYS if hasattr(record, k))
        line = f"  · hub {record.levelname.lower()}: {record.getMessage()}" + (f" ({about})" if about else "")
        self.out.print(line, style="dim", highlight=False, markup=False)


def run_demo(count: int, out: Console) -> int:
    root = logging.getLogger()
    root.handlers[:] = [_DemoLog(out)]
    root.setLevel(logging.WARNING)
    var = Path("var/demo")
    shutil.rmtree(var, ignore_errors=True)
    settings = load_settings(
        var_dir=var, relay_backoff_base=0.2, relay_backoff_cap=1.0, relay_poll_interval=0.2, read_timeout=3.0
    )
    password = settings.national_portal_password.get_secret_value() if settings.national_portal_password else ""
    portal = ServerThread(national_portal.create_app({settings.national_portal_username: password})).start()
    onestop = ServerThread(one_stop.create_app()).start()
    people = ServerThread(population.create_app()).start()
    from pydantic import SecretStr

    from hub.sandbox.notify import SmtpSink, create_sms_app

    sms_key = secrets.token_urlsafe(16)
    smtp = SmtpSink().start()
    sms = ServerThread(create_sms_app({sms_key})).start()
    # trust services (a fresh test PKI with its TSA) and the inter-agency document exchange, which takes signed
    # documents only; hub signs with the sandbox key it finds in var/demo/sandbox-pki (the dev default)
    from hub.sandbox import document_exchange, pki

    trust_state = pki.PkiState()
    trust = ServerThread(pki.create_app(trust_state)).start()
    trust_state.pki = pki.TestPki(trust.url)
    trust_state.pki.write(var / "sandbox-pki")
    exchange_key = secrets.token_urlsafe(16)
    roots = [trust_state.pki.issued[r].cert for r in ("national_root", "gov_root")]
    notary = trust_state.pki.signer("receiver")
    exchange = ServerThread(document_exchange.create_app(roots, {exchange_key}, notary=notary)).start()
    from hub.sandbox import payment_dvc

    pay_secret = secrets.token_urlsafe(32)
    payments = ServerThread(payment_dvc.create_app({settings.payment_dvc_partner: pay_secret})).start()
    settings = settings.model_copy(
        update={
            "national_portal_url": portal.url,
            "population_url": f"{people.url}/ws/congdan",
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "sms_gateway_url": sms.url,
            "sms_api_key": SecretStr(sms_key),
            "signing_tsa_url": f"{trust.url}/pki/tsa",
            "citizen_idp_issuer": f"{trust.url}/idp",
            "document_exchange_url": exchange.url,
            "document_exchange_api_key": SecretStr(exchange_key),
            "payment_dvc_url": payments.url,
            "payment_dvc_secret": SecretStr(pay_secret),
        }
    )
    from hub.api.app import create_app
    from hub.runtime import Runtime

    runtime = Runtime(settings, role="api")
    api = ServerThread(create_app(settings, runtime)).start()
    # the platform calls hub back on the port it got just now
    runtime.payments.callback_url = lambda name: f"{api.url}/v1/payments/callbacks/{name}"
    api_key = settings.clients[0].api_key  # the demo's own client, made with a key just above
    key = api_key.get_secret_value() if api_key is not None else ""
    client = one_stop.OneStopClient(api.url, key)
    control = httpx.Client(base_url=portal.url, timeout=10)
    out.rule("[bold]hub demo[/bold] — embedded mode (SQLite + in-process worker), sandbox peers on loopback")
    out.print(f"national portal sandbox {portal.url} · one-stop sandbox {onestop.url} · hub {api.url}")
    synced = runtime.catalogue.sync(
        runtime.portal, correlation_id="demo-catalogue", on_exchange=runtime.record_exchange
    )
    out.print(f"procedure catalogue synced from the portal: {synced['stored']} procedures (time limits and fees)")
    try:
        rng = random.Random(20241015)
        codes: list[str] = []
        walks: dict[str, list[tuple[int, str]]] = {}
        owners: dict[str, str] = {}
        for i in range(count):
            walk = WALKS[i % len(WALKS)]
            start_status = 1 if walk[0][0] in (3, 7) else 2
            fee = "2.000635" if any(status == PAY for status, _ in walk) else None  # a procedure with a fee
            dossier = one_stop.make_dossier(
                AGENCY, i + 1, rng, status=start_status, when=datetime.now(UTC), procedure=fee
            )
            r = client.file(dossier, key=f"demo-file-{i}")
            r.raise_for_status()
            codes.append(dossier["MaHoSo"])
            walks[dossier["MaHoSo"]] = walk
            owners[dossier["MaHoSo"]] = dossier["SoGiayToChuHoSo"]
            out.print(f"filed  {dossier['MaHoSo']}  {dossier['TenTTHC']}  → event {r.json()['event_id'][:8]}…")
        _step_all(client, codes, walks, 0, out)
        out.print("[yellow]injecting a 3-second national portal outage[/yellow]")
        control.post("/_sandbox/faults", json={"outage_seconds": 3})
        for step in range(1, max(len(w) for w in walks.values())):
            _step_all(client, codes, walks, step, out)
        ok = _wait_delivered(client, codes, timeout=60)
        _summary(out, client, control, codes)
        retried = control.get("/_sandbox/received", params={"outcome": "applied"}).json()["count"]
        out.print(f"portal applied {retried} messages; during the outage hub kept them and retried with backoff.")
        _report(out, client)
        _notifications(out, sms.url)
        paid = next((c for c in codes if any(status == PAY for status, _ in walks[c])), codes[0])
        _my_dossiers(out, api.url, trust.url, owners[paid])
        citizen = _prefill(out, client, people.url)
        _my_data(out, api.url, trust.url, citizen)
        _signed_document(out, client, codes[0], exchange.url, runtime)
        _portal_protocol(out, api.url, settings.clients[0].name, key, rng)
        out.print(
            "Explore: [bold]hub serve[/bold] then open http://127.0.0.1:8000/docs (API) — "
            "[bold]hub jobs list[/bold] shows the outbox."
        )
        return 0 if ok else 1
    finally:
        client.close()
        control.close()
        api.stop()
        runtime.close()
        portal.stop()
        onestop.stop()
        people.stop()
        sms.stop()
        smtp.stop()
        exchange.stop()
        trust.stop()
        payments.stop()


def _report(out: Console, client: one_stop.OneStopClient) -> None:
    """This month's report on procedures resolved, as the one-stop system (its agencies) reads it (ADR 0048)."""
    from hub.domain.dates import VN_TZ

    today = datetime.now(VN_TZ).date()
    month = {"from": today.replace(day=1).isoformat(), "to": today.isoformat()}
    r = client.http.get("/v1/reports/resolution", params=month)
    r.raise_for_status()
    t = r.json()["total"]
    rate = "—" if t["on_time_rate"] is None else f"{t['on_time_rate']:.0f} % on time"
    out.print(
        f"this month's report on procedures resolved: {t['received']} received ({t['received_online']} online), "
        f"{t['resolved']} resolved ({rate}), {t['ended']} withdrawn or stopped, {t['in_progress']} in progress — "
        "[bold]hub dossiers report[/bold], or the console's Báo cáo giải quyết TTHC page"
    )


def _notifications(out: Console, sms_url: str) -> None:
    """What the citizens were told (the SMS gateway sandbox kept every message)."""
    deadline = time.monotonic() + 10
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = httpx.get(f"{sms_url}/_sandbox/sms").json()["items"]
        if len(items) >= 8:
            break
        time.sleep(0.2)
    shown = f"{len(items)}, the first 8 shown" if len(items) > 8 else str(len(items))
    table = Table(title=f"Tin nhắn SMS gửi công dân (SMS sent to citizens): {shown}")
    table.add_column("phone")
    table.add_column("message")
    for m in items[:8]:
        table.add_row("*" * 7 + m["phone"][-3:], m["message"])
    out.print(table)


def _prefill(out: Console, client: one_stop.OneStopClient, population_url: str) -> str:
    """Once-only: a father asks to register his child's birth; hub fills the form from the population database."""
    fathers = [
        p
        for p in httpx.get(f"{population_url}/_sandbox/people", params={"limit": 400, "married": True}).json()["items"]
        if p["GioiTinh"] == "1"
    ]
    # one whose residence the register still writes in the units before 1 July 2025, if there is one
    father = next((p for p in fathers if (p.get("NoiOHienTai") or {}).get("MaQuanHuyen")), fathers[0])
    r = client.http.post(
        "/v1/prefill",
        json={
            "procedure": "1.001193",
            "subject_id": father["SoDinhDanh"],
            "purpose": "civil_status_registration",
            "requested_by": {"officer": "demo-officer", "agency": AGENCY},
        },
    )
    r.raise_for_status()
    form = r.json()
    table = Table(title=f"Pre-filled: {form['title']} (population database sandbox, SOAP via zeep)")
    for col in ("field", "value", "from"):
        table.add_column(col)
    for f in form["fields"]:
        if f["value"] is not None:
            table.add_row(f["label"], str(f["value"]), f["source"]["record"])
    out.print(table)
    out.print(f"left for the citizen (required): {', '.join(form['missing_required'])}")
    for f in form["fields"]:
        units = f.get("administrative_units")
        if units and units["recorded_before_reorganisation"]:
            then = units.get("province_recorded")
            out.print(
                f"for the citizen to check: {f['label']} is written in the units before 1 July 2025"
                f"{' (' + then['name'] + ')' if then else ''}; it is in {units['province']['name']} now"
            )
    out.print(
        "every read is in the hash-chained access log: [bold]hub audit usage[/bold] (asks for the ID), hub audit verify"
    )
    return str(father["SoDinhDanh"])


def _portal_protocol(out: Console, api_url: str, client_name: str, key: str, rng: random.Random) -> None:
    """A one-stop system written for the national portal (OpenCPS and the like) moves to hub by its adapter URL:
    the portal's sign-in and DongBoHoSoMC, its codes written as strings, answered as the portal answers (ADR 0040)."""
    d = one_stop.make_dossier(AGENCY, 90, rng, status=2, when=datetime.now(UTC))
    item = {**d, "TrangThaiHoSo": "2", "LoaiDoiTuong": str(d["LoaiDoiTuong"]), "NgayTra": "", "ThongTinTra": ""}
    with httpx.Client(base_url=f"{api_url}/dvcqg/api", timeout=10) as as_portal:
        signed = as_portal.post("/auth", json={"username": client_name, "password": key}).json()
        pushed = as_portal.post(
            "/service",
            json={"session": signed.get("session"), "madonvi": AGENCY, "service": "DongBoHoSoMC", "data": [item]},
        ).json()
        # a dossier it was already processing before it was pointed at hub, sent as an update (ADR 0041)
        busy = one_stop.make_dossier(AGENCY, 91, rng, status=4, when=datetime.now(UTC))
        taken = as_portal.post(
            "/service",
            json={
                "session": signed.get("session"), "madonvi": AGENCY, "service": "DongBoHoSoMC", "isUpdating": "True",
                "data": [{**busy, "TrangThaiHoSo": "4"}],
            },
        ).json()  # fmt: skip
    out.print(
        f"a one-stop system written for the national portal, pointed at {api_url}/dvcqg: sign-in "
        f"{signed['error_code']}, DongBoHoSoMC {pushed['error_code']} ({d['MaHoSo']}, its codes sent as strings); "
        f"one it was already processing, sent as an update, taken over at status 4: {taken['error_code']} "
        f"({busy['MaHoSo']})"
    )


def _vn(at: str) -> str:
    """An answer's ISO 8601 time (UTC or Vietnam's, with its offset) as a reader in Vietnam reads it."""
    from hub.domain.dates import VN_TZ

    return datetime.fromisoformat(at).astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S")


def _my_data(out: Console, api_url: str, idp_url: str, personal_id: str) -> None:
    """The citizen signs in at the identity provider (the sandbox's, in place of VNeID) and asks who used their
    data."""
    token = httpx.post(f"{idp_url}/_sandbox/idp/token", json={"subject_id": personal_id}).json()["id_token"]
    r = httpx.get(f"{api_url}/v1/citizens/me/data-usage", headers={"Authorization": f"Bearer {token}"})
    r.raise_for_status()
    for use in r.json()["items"]:
        out.print(
            f"the citizen, signed in, sees: {_vn(use['at'])} agency {use['agency']} ({use['client']}, officer "
            f"{use['officer']}) read {len(use['fields'])} fields as {use['as']} for {use['purpose']} — {use['outcome']}"
        )


def _my_dossiers(out: Console, api_url: str, idp_url: str, personal_id: str) -> None:
    """A dossier's owner signs in and looks their dossiers up (tra cứu hồ sơ), as a provincial portal's page would."""
    token = httpx.post(f"{idp_url}/_sandbox/idp/token", json={"subject_id": personal_id}).json()["id_token"]
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.get(f"{api_url}/v1/citizens/me/dossiers", headers=auth)
    r.raise_for_status()
    for item in r.json()["items"]:
        one = httpx.get(f"{api_url}/v1/citizens/me/dossiers/{item['MaHoSo']}", headers=auth).json()
        paid = [p for p in one["payments"] if p["state"] == "paid"]
        out.print(
            f"its owner, signed in, looks it up: {item['MaHoSo']} {item['TenTTHC']} — {item['status_name']}, "
            f"{len(one['history'])} steps"
            + (f", fee {paid[0]['amount']:,} VND paid {_vn(paid[0]['paid_at'])}" if paid else "")
            + (f", waiting for {item['waiting_for']}" if item["waiting_for"] else "")
        )


def _signed_document(out: Console, client: one_stop.OneStopClient, code: str, exchange_url: str, runtime: Any) -> None:
    """A document of the dossier for another agency: signed by hub as the agency, time-stamped, relayed; then
    what the receiving agency said of it (its signed status notices, taken by hub from the platform)."""
    r = client.http.post(
        f"/v1/dossiers/{code}/edocs",
        json={
            "sender_name": "UBND phường Bến Nghé",
            "to": [{"id": "000.00.17.H29", "name": "Công an phường Bến Nghé"}],
            "code_number": "57", "code_notation": "TLKS-UBND", "place": "Thành phố Hồ Chí Minh", "type": 3,
            "type_name": "Trích lục", "subject": "Trích lục khai sinh để đăng ký thường trú cho trẻ",
        },
        headers={"Idempotency-Key": f"demo-edoc-{code}"},
    )  # fmt: skip
    r.raise_for_status()
    deadline = time.monotonic() + 20
    docs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not docs:
        docs = httpx.get(f"{exchange_url}/_sandbox/documents").json()["items"]
        time.sleep(0.2)
    if not docs:
        out.print("[red]the signed document did not reach the document exchange sandbox[/red]")
        return
    doc = docs[0]
    out.print(
        f"signed document {doc['header']['code']} ({doc['header']['type']}) sent to "
        f"{doc['header']['to'][0]['name']}: edXML, {doc['signature_format']}, time-stamped {doc['timestamp']}, "
        "verified and accepted by the document exchange sandbox (it takes signed documents only)"
    )
    document_id = doc["header"]["document_id"]
    httpx.post(
        f"{exchange_url}/_sandbox/documents/{document_id}/status",
        json={"status": "03", "description": "Vào sổ văn bản đến", "staff": "Văn thư Công an phường"},
    ).raise_for_status()
    taken = runtime.poll_edoc_status()  # what the workers do every HUB_EDOC_STATUS_INTERVAL seconds
    [sent] = client.http.get(f"/v1/dossiers/{code}").json()["documents"]
    for receiver in sent.get("receivers", []):
        said = ", ".join(f"{h['status']} {h['meaning_vi']}" for h in receiver["history"]) or "nothing yet"
        out.print(f"{receiver['name']} reported (signed status notices, {taken.get('applied', 0)} taken): {said}")


def _step_all(
    client: one_stop.OneStopClient,
    codes: list[str],
    walks: dict[str, list[tuple[int, str]]],
    step: int,
    out: Console,
) -> None:
    for code in codes:
        walk = walks[code]
        if step >= len(walk):
            continue
        status, note = walk[step]
        if status == PAY:
            _pay(client, code, note, out)
            continue
        r = client.progress(one_stop.make_progress(code, status, note), key=f"demo-{code}-{step}")
        mark = "[green]202[/green]" if r.status_code == 202 else f"[red]{r.status_code}[/red]"
        out.print(f"{mark}  {code}  → {status} {VIETNAMESE_NAMES[DossierStatus(status)]}: {note}")


def _pay(client: one_stop.OneStopClient, code: str, note: str, out: Console) -> None:
    """The citizen pays the fee: the one-stop asks hub for a payment, the citizen pays on the platform's page, the
    platform's signed callback reaches hub, which credits it once and moves the dossier out of 6 by itself."""
    r = client.http.post("/v1/payments", json={"MaHoSo": code}, headers={"Idempotency-Key": f"demo-pay-{code}"})
    if r.status_code not in (200, 201):
        out.print(f"[red]{r.status_code}[/red]  {code}  payment not created: {r.text[:200]}")
        return
    payment = r.json()
    httpx.post(payment["pay_url"], timeout=10).raise_for_status()  # on the platform's pay page
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        state = client.http.get(f"/v1/payments/{payment['reference']}").json()
        if state["status"] != "pending":
            break
        time.sleep(0.1)
    amount = dong(payment["amount"])
    if state["status"] == "paid":
        out.print(
            f"[green]paid[/green] {code}  {note}: {amount} đồng, payment {payment['reference']}, platform transaction "
            f"{state['transaction_id']} — its signed callback credited once; hub moved the dossier to 4 by itself"
        )
    else:
        out.print(f"[red]{state['status']}[/red] {code}  payment {payment['reference']} of {amount} đồng")


def _wait_delivered(client: one_stop.OneStopClient, codes: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [
            d["state"]
            for code in codes
            for e in client.http.get(f"/v1/dossiers/{code}").json()["events"]
            for d in e["deliveries"]
        ]
        if all(s == "delivered" for s in states):
            return True
        if any(s == "dead" for s in states):
            return False
        time.sleep(0.2)
    return False


def _summary(out: Console, client: one_stop.OneStopClient, control: httpx.Client, codes: list[str]) -> None:
    table = Table(title="What arrived where")
    for col in ("MaHoSo", "procedure", "hub status", "portal status", "events delivered", "attempts"):
        table.add_column(col)
    for code in codes:
        d: dict[str, Any] = client.http.get(f"/v1/dossiers/{code}").json()
        portal = control.get(f"/_sandbox/dossiers/{code}")
        p_status = portal.json()["status"] if portal.status_code == 200 else "—"
        deliveries = [x for e in d["events"] for x in e["deliveries"]]
        delivered = sum(1 for x in deliveries if x["state"] == "delivered")
        attempts = sum(x["attempts"] for x in deliveries)
        table.add_row(
            code,
            d["dossier"]["TenTTHC"][:40],
            f"{d['TrangThaiHoSo']} {d['status_name']}",
            str(p_status),
            f"{delivered}/{len(deliveries)}",
            str(attempts),
        )
    out.print(table)
