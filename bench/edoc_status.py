"""Status notices benchmark: hub taking the receivers' signed status notices from the document exchange platform
(list over HTTP, verify each against the anchors with revocation, match it to the document hub sent, record it
with its envelope, acknowledge), beside verifying the same envelopes alone with hub's verifier in the same run —
the part no implementation can skip. The platform and the test PKI (CRL/OCSP) run on loopback in this process.

    .venv/bin/python bench/edoc_status.py [--notices 1000] [--database postgresql]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from pydantic import SecretStr

from hub.runtime import Runtime
from hub.sandbox import document_exchange, pki
from hub.sandbox.common import ServerThread
from hub.services.edocs import record_sent
from hub.settings import ClientSystem, Settings
from hub.signing import edxml

KEY = "bench-edoc-key-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notices", type=int, default=1000)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    n = args.notices

    state = pki.PkiState()
    trust = ServerThread(pki.create_app(state)).start()
    state.pki = pki.TestPki(trust.url)
    roots = [state.pki.issued[r].cert for r in ("national_root", "gov_root")]
    exchange = ServerThread(document_exchange.create_app(roots, {KEY})).start()
    receiver = state.pki.signer("receiver")
    with tempfile.TemporaryDirectory() as tmp_dir, contextlib.ExitStack() as stack:
        tmp = Path(tmp_dir)
        state.pki.write(tmp / "pki")
        db_url = ""
        if args.database == "postgresql":
            from bench.common import pg_database
            from hub.store import db

            db_url = stack.enter_context(pg_database())
            db.upgrade(db_url)
        settings = Settings(
            var_dir=tmp,
            database_url=db_url,
            secret_key=SecretStr("bench-secret-key-0123456789abcdef"),
            clients=[ClientSystem(name="bench", api_key=SecretStr("bench-key-0123456789"), agencies=["*"])],
            national_portal_password=SecretStr("unused"),
            national_portal_url="http://127.0.0.1:9",
            document_exchange_url=exchange.url,
            document_exchange_api_key=SecretStr(KEY),
            signing_trust_anchors=[tmp / "pki" / "national_root.pem", tmp / "pki" / "gov_root.pem"],
            worker_enabled=False,
        )
        rt = Runtime(settings, role="cli", start_worker=False)
        try:
            # n documents hub sent (one receiver each), and one signed notice about each, waiting at the platform
            envelopes: list[bytes] = []
            sender, to = "000.00.17.H56", {"id": "000.00.17.H29", "name": "Công an phường Bến Nghé"}
            with rt.sessions.begin() as s:
                for i in range(n):
                    document_id = f"bench-document-{i:06d}"
                    request = {"to": [to], "code_number": str(i), "code_notation": "CV-UBND", "subject": "bench",
                               "sender_name": "UBND"}  # fmt: skip
                    record_sent(s, document_id=document_id, event_id=f"bench-{i}", dossier_code=f"{sender}-261204-0001",
                                agency=sender, promulgation_date="2026-12-04", request=request)  # fmt: skip
                    notice = edxml.StatusNotice(
                        sender=sender, document_code=f"{i}/CV-UBND", promulgation_date=date(2026, 12, 4),
                        document_id=document_id, author=edxml.Organ(to["id"], to["name"]), status="03",
                        at=datetime.now(UTC),
                    )  # fmt: skip
                    envelopes.append(edxml.sign_status(notice, receiver))
            rt.signatures.verify(envelopes[0])  # the same warm start for both: revocation evidence fetched once

            started = time.perf_counter()
            for e in envelopes:
                report = rt.signatures.verify(e)
                assert report.indication == "TOTAL-PASSED", report.detail
            bare = n / (time.perf_counter() - started)

            with httpx.Client(base_url=exchange.url) as c:
                for e in envelopes:
                    c.post("/_sandbox/notices", json={"key": KEY, "envelope": base64.b64encode(e).decode()})
            started = time.perf_counter()
            counts = rt.poll_edoc_status()
            taken = n / (time.perf_counter() - started)
            assert counts == {"applied": n}, counts
        finally:
            rt.close()
            exchange.stop()
            trust.stop()
    size = sum(len(e) for e in envelopes) / n
    print(f"status notices ({args.database}, {n}, {size / 1024:.1f} KiB each, XAdES, EC P-256 receiver key)")
    print(f"{'measure':<58}{'per second':>12}")
    print(f"{'hub takes them (list, verify, match, record, acknowledge)':<58}{taken:>12,.0f}")
    print(f"{'baseline: the same envelopes verified alone (hub verifier)':<58}{bare:>12,.0f}")
    print(f"ratio {taken / bare:.2f}")


if __name__ == "__main__":
    main()
