"""Sandbox of the population database's citizen look-up: a real SOAP 1.1 service over HTTP, built with lxml on a
small ASGI app and driven by contracts/population/population.wsdl (ADR 0005). Every request is parsed with
entity resolution, DTDs and network access off, size-limited, and validated against the WSDL's schema. Fault
knobs: latency, SOAP Faults, outages, hangs past the client's timeout, malformed XML, partial records."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import random
import time
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from lxml import etree

from hub.sandbox import contracts
from hub.sandbox.common import Faults, PeerState, add_control_routes, rate_limited
from hub.sandbox.population_data import Population

TNS = "http://dancuquocgia.bca"  # the request's (and the fault detail's) namespace
DC = "http://www.mic.gov.vn/dancu/1.0"  # the reply's: CongdanCollection and the citizens in it
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
XS = "http://www.w3.org/2001/XMLSchema"
MAX_REQUEST_BYTES = 64 * 1024
OPTIONAL_FIELDS = ["SoCMND", "DanToc", "TonGiao", "NhomMau", "NoiDangKyKhaiSinh", "QueQuan", "NoiOHienTai",
                   "ChuHo", "SoSoHoKhau", "Cha", "Me", "VoChong"]  # fmt: skip


@dataclass
class PopulationFaults(Faults):
    fault_rate: float = 0.0  # fraction of calls answered with a SOAP Server fault (HTTP 500)
    partial_rate: float = 0.0  # fraction of records returned with optional fields left out
    year_only_rate: float = 0.0  # fraction of records whose birth date is the year alone (the day not known)


@dataclass
class PopulationState(PeerState):
    faults: PopulationFaults = field(default_factory=PopulationFaults)
    population: Population = field(default_factory=Population)


wsdl_path = contracts.population_wsdl


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )


@cache
def _schema() -> etree.XMLSchema:
    wsdl = etree.parse(wsdl_path(), _parser())
    schema_el = wsdl.find(f"{{{WSDL_NS}}}types/{{{XS}}}schema[@targetNamespace='{TNS}']")
    if schema_el is None:
        raise RuntimeError("the population WSDL has no schema of the request")
    standalone = etree.Element(schema_el.tag, dict(schema_el.attrib), nsmap=schema_el.nsmap)  # keeps tns: in scope
    standalone.extend(copy.deepcopy(child) for child in schema_el)
    return etree.XMLSchema(standalone)


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _envelope(body: etree._Element) -> bytes:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "dan": TNS, "ns1": DC})
    etree.SubElement(env, f"{{{SOAP_ENV}}}Body").append(body)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def soap_fault(code: str, message: str, error_code: str, status: int) -> Response:
    fault = etree.Element(f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = message
    detail = etree.SubElement(fault, "detail")
    err = etree.SubElement(detail, f"{{{TNS}}}LoiXuLy")
    etree.SubElement(err, f"{{{TNS}}}MaLoi").text = error_code
    etree.SubElement(err, f"{{{TNS}}}MoTa").text = message
    return Response(_envelope(fault), status_code=status, media_type="text/xml; charset=utf-8")


def _append(parent: etree._Element, name: str, value: Any) -> None:
    if value is None:
        return
    el = etree.SubElement(parent, f"{{{DC}}}{name}")
    if isinstance(value, dict):
        for k, v in value.items():
            _append(el, k, v)
    else:
        el.text = str(value)


def signed_in(request: Request, credentials: tuple[str, str, str]) -> bool:
    """The register's sign-in (HTTP Basic, the password SHA-256 of service URL + username + Unix time + secret,
    that time in a `timestamp` header: seconds, or milliseconds as a newer integration writes it), within five
    minutes of the sandbox's clock."""
    username, secret, service_url = credentials
    stamp = request.headers.get("timestamp", "")
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not stamp.isascii() or not stamp.isdigit() or len(stamp) > 16:
        return False
    seconds = int(stamp) / 1000 if len(stamp) >= 13 else int(stamp)  # 13 digits: milliseconds (from 2001 on)
    if abs(time.time() - seconds) > 300:
        return False
    try:
        user, _, proof = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    expected = hashlib.sha256(f"{service_url}{username}{stamp}{secret}".encode()).hexdigest()
    return hmac.compare_digest(user.encode(), username.encode()) & hmac.compare_digest(
        proof.encode(), expected.encode()
    )


def create_app(state: PopulationState | None = None, credentials: tuple[str, str, str] | None = None) -> FastAPI:
    """`credentials`: (username, secret, service URL) the register requires every request to sign in with."""
    st = state or PopulationState()
    app = FastAPIOffline(redoc_url=None, title="Sandbox: population database (SOAP)", docs_url="/_sandbox/docs")
    app.state.peer = st
    add_control_routes(app, st)
    wsdl_template = open(wsdl_path(), encoding="utf-8").read()  # noqa: SIM115 - read once at start

    @app.get("/ws/congdan")
    def wsdl(request: Request) -> Response:
        here = str(request.url.replace(query=""))
        text = wsdl_template.replace("http://127.0.0.1:8083/ws/congdan", here)
        return Response(text, media_type="text/xml; charset=utf-8")

    @app.get("/_sandbox/people")
    def people(limit: int = 20, married: bool | None = None, with_parents: bool | None = None) -> dict[str, Any]:
        """Records to try the service with (tests, the demo): filter by marriage and known parents."""
        conditions: dict[str, Any] = {}
        if married is not None:
            conditions["has_VoChong"] = married
        if with_parents is not None:
            conditions["has_Cha"] = with_parents
            conditions["has_Me"] = with_parents
        found = st.population.find(**conditions)
        return {"count": len(found), "items": found[:limit]}

    @app.post("/ws/congdan")
    async def call(request: Request) -> Response:
        f = st.faults
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        if f.outage_until > time.time():
            return Response(b"<html><body>503 Service Unavailable</body></html>", status_code=503)
        if (wait := rate_limited(st)) is not None:
            page = b"<html><body>429 Too Many Requests</body></html>"
            return Response(page, status_code=429, headers={"Retry-After": wait})
        if f.timeout_rate and random.random() < f.timeout_rate:
            await asyncio.sleep(f.hang_seconds)
        if credentials is not None and not signed_in(request, credentials):
            return Response(b"401 Unauthorized", status_code=401, headers={"WWW-Authenticate": 'Basic realm="dancu"'})
        raw = await request.body()
        if len(raw) > MAX_REQUEST_BYTES:
            return soap_fault("Client", "Yêu cầu quá lớn", "01", 413)
        try:
            doc = etree.fromstring(raw, _parser())
        except etree.XMLSyntaxError as exc:
            return soap_fault("Client", f"XML không hợp lệ: {exc}", "01", 400)
        if doc.getroottree().docinfo.doctype:
            return soap_fault("Client", "Không chấp nhận DTD", "01", 400)
        if doc.tag != f"{{{SOAP_ENV}}}Envelope":  # SOAP 1.2's envelope (the binding is SOAP 1.1's), or no envelope
            if etree.QName(doc).localname == "Envelope":
                return soap_fault("VersionMismatch", "Chỉ nhận phong bì SOAP 1.1 (SOAP 1.1 only)", "01", 500)
            return soap_fault("Client", "Không phải phong bì SOAP (not a SOAP envelope)", "01", 400)
        body = doc.find(f"{{{SOAP_ENV}}}Body")
        op = body[0] if body is not None and len(body) else None
        if op is None or op.tag != f"{{{TNS}}}TraCuuThongTinCongDan":
            return soap_fault("Client", "Thao tác không được hỗ trợ", "01", 500)
        schema = _schema()
        if not schema.validate(op):
            return soap_fault("Client", f"Yêu cầu sai cấu trúc: {schema.error_log.last_error}", "01", 500)
        req = {etree.QName(child).localname: (child.text or "") for child in op}
        born = op.find(f"{{{TNS}}}NgayThangNamSinh")  # the whole date, or the year alone
        day = born.findtext(f"{{{TNS}}}NgayThangNam") if born is not None else None
        year = born.findtext(f"{{{TNS}}}Nam") if born is not None else None
        if f.fault_rate and random.random() < f.fault_rate:
            st.record("TraCuuThongTinCongDan", req["MaYeuCau"], _summary(req), "fault", None)
            return soap_fault("Server", "Lỗi hệ thống (sandbox)", "99", 500)
        with st.lock:
            if f.storm_5xx > 0:
                f.storm_5xx -= 1
                return soap_fault("Server", "Lỗi hệ thống (sandbox storm)", "99", 500)
        if f.malformed_rate and random.random() < f.malformed_rate:
            return Response(b"<soap:Envelope><unclosed>", media_type="text/xml")
        record = st.population.records.get(req["SoDinhDanh"])
        if record is not None and req.get("HoVaTen"):
            name = record["HoVaTen"]
            full = " ".join(p for p in (name["Ho"], name["ChuDem"], name["Ten"]) if p)
            if _fold(full) != _fold(req["HoVaTen"]):
                record = None  # a partial match is no match: the three keys must agree
        recorded = (record.get("NgayThangNamSinh") or {}) if record is not None else {}
        if (day and day != recorded.get("NgayThangNam")) or (year and year != recorded.get("Nam")):
            record = None
        # the reply is CongdanCollection itself, as the register answers (no wrapper, no MaYeuCau echoed)
        reply = collection = etree.Element(f"{{{DC}}}CongdanCollection")
        if record is not None:
            if f.partial_rate and random.random() < f.partial_rate:
                dropped = set(random.sample(OPTIONAL_FIELDS, k=4))
                record = {k: v for k, v in record.items() if k not in dropped}
            if f.year_only_rate and random.random() < f.year_only_rate and record.get("NgayThangNamSinh"):
                record = {**record, "NgayThangNamSinh": {"Nam": record["NgayThangNamSinh"]["Nam"]}}
            _append(collection, "CongDan", record)
        st.record(
            "TraCuuThongTinCongDan",
            req["MaYeuCau"],
            _summary(req),
            "found" if record is not None else "not_found",
            None,
        )
        return Response(_envelope(reply), media_type="text/xml; charset=utf-8")

    return app


def _summary(req: dict[str, str]) -> dict[str, str]:
    """What the sandbox keeps of a request: who asked, for which agency and service (never the ID itself)."""
    return {"MaCanBo": req.get("MaCanBo", ""), "MaDonVi": req.get("MaDonVi", ""), "MaDVC": req.get("MaDVC", "")}
