"""Request examples shown in the API documentation (/docs: "Try it out" starts from them), one story across the
operations: a birth registration (free) and a certified extract (8,000 đ) filed at ward Bến Nghé, walked through
their statuses, the extract's fee paid online, a form pre-filled for a father in the population sandbox, a document
sent to the ward's police. The dossier and progress examples are the national portal contract's own golden
messages (contracts/national_portal/examples/). tests/test_api_examples.py sends every one of them, in that
order, to a hub with its sandbox peers: each is accepted as it is written here."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

from hub.sandbox.contracts import contracts_dir

AGENCY = "000.00.17.H56"  # UBND phường Bến Nghé (sandbox)
BIRTH = "000.00.17.H56-241015-0007"  # the contract's example dossier: đăng ký khai sinh, no fee
EXTRACT = "000.00.17.H56-241015-0008"  # cấp bản sao trích lục khai sinh, 8,000 đ
FILED_ON_PORTAL = "000.00.17.H56-241015-0009"
FATHER = "001062938414"  # a married man of the population sandbox (its generator is seeded)


def _golden(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (contracts_dir() / "national_portal" / "examples" / name).read_text(encoding="utf-8")
    )
    return data


def _example(summary: str, value: Any, description: str = "") -> dict[str, Any]:
    return {"summary": summary, "value": value} | ({"description": description} if description else {})


@cache
def dossier() -> dict[str, dict[str, Any]]:
    birth = _golden("dossier.json")
    extract = birth | {
        "MaHoSo": EXTRACT,
        "MaTTHC": "2.000635",
        "TenTTHC": "Thủ tục cấp bản sao trích lục hộ tịch",
        "TrichYeuHoSo": "Cấp bản sao trích lục khai sinh",
        "DanhSachLePhi": [
            {"TenPhiLePhi": "Phí cấp bản sao trích lục", "MaPhiLePhi": "P01", "HinhThucThu": 1, "Gia": 8000,
             "LoaiPhiLePhi": 2}
        ],
    }  # fmt: skip
    return {
        "birth_registration": _example(
            "Đăng ký khai sinh, accepted (status 2)",
            birth,
            "The national portal contract's golden DongBoHoSoMC message. Send it again with changes to update the "
            "dossier; its status must follow the allowed transitions (409 `invalid_transition` otherwise).",
        ),
        "certified_extract": _example("Cấp bản sao trích lục, with a fee of 8,000 đ", extract),
    }


@cache
def filed_on_portal() -> dict[str, dict[str, Any]]:
    filed = _golden("dossier.json") | {
        "MaHoSo": FILED_ON_PORTAL,
        "KenhThucHien": 3,
        "TrangThaiHoSo": 1,
        "ChuHoSo": "Trần Văn Bình",
        "SoGiayToChuHoSo": "079090004321",
    }
    return {"filed_online": _example("Filed online on the national portal (status 1)", filed)}


@cache
def progress() -> dict[str, dict[str, Any]]:
    step = _golden("progress.json")
    fee = step | {"MaHoSo": EXTRACT, "NoiDungXuLy": "Đề nghị nộp phí cấp bản sao", "TrangThai": 6}
    return {
        "processing": _example(
            "Being processed (4)", step, f"The contract's golden CapNhatTienDoHoSoMC step, for dossier {BIRTH}."
        ),
        "supplement_requested": _example(
            "Supplement requested (5)",
            step | {"NoiDungXuLy": "Bổ sung bản sao giấy chứng sinh", "TrangThai": 5},
            "NoiDungXuLy is what the citizen is told to bring (SMS/email when configured).",
        ),
        "processing_again": _example("Processing again after the supplement (4)", step),
        "fee_requested": _example(
            "Fee requested (6)", fee, f"For dossier {EXTRACT}: the citizen can then pay online (POST /v1/payments)."
        ),
    }


@cache
def batch() -> dict[str, dict[str, Any]]:
    base = _golden("dossier.json")
    first = base | {"MaHoSo": "000.00.17.H56-241015-0010", "ChuHoSo": "Lê Thị Mai", "SoGiayToChuHoSo": "079192005678"}
    second = base | {
        "MaHoSo": "000.00.17.H56-241015-0011",
        "ChuHoSo": "Phạm Văn Đức",
        "SoGiayToChuHoSo": "079088002468",
    }
    return {
        "open_dossiers": _example(
            "Two open dossiers, as a one-stop system sends them when it first connects",
            {"data": [first, second]},
            "Each item is taken or refused on its own; the answer gives each one's outcome at its place.",
        )
    }


@cache
def progress_batch() -> dict[str, dict[str, Any]]:
    step = _golden("progress.json")
    opened = ("000.00.17.H56-241015-0010", "000.00.17.H56-241015-0011")  # the batch example's dossiers
    steps = [step | {"MaHoSo": code} for code in opened] + [
        step | {"MaHoSo": opened[0], "NoiDungXuLy": "Đã ký kết quả", "TrangThai": 9, "ThoiDiemXuLy": "20241016090000"}
    ]
    return {
        "catching_up": _example(
            "Three steps of two dossiers, as a one-stop system sends them after an outage of its own",
            {"data": steps},
            "A dossier's steps in their order; each item taken or refused on its own.",
        )
    }


PAYMENT = {"extract_fee": _example(f"The fee of dossier {EXTRACT} (in status 6)", {"MaHoSo": EXTRACT})}

PREFILL = {
    "birth_registration": _example(
        "Birth registration form for a father",
        {
            "procedure": "1.001193",
            "subject_id": FATHER,
            "purpose": "civil_status_registration",
            "requested_by": {"officer": "canbo.hotich", "agency": AGENCY},
        },
        "The mother's fields come from the father's spouse in the population database.",
    )
}

CONSENT = {
    "reuse_documents": _example(
        "The citizen lets earlier documents be reused",
        {"subject_id": FATHER, "purpose": "civil_status_registration", "scope": ["documents"]},
        "Answers a `consent_ref` to send with POST /v1/prefill.",
    )
}

DOCUMENT = {
    "marriage_certificate": _example(
        "A marriage certificate issued earlier",
        {
            "holder_id": FATHER,
            "kind": "giay_chung_nhan_ket_hon",
            "title": "Giấy chứng nhận kết hôn",
            "number": "125/2019",
            "issuer": AGENCY,
            "issued_at": "2019-05-20T09:00:00+07:00",
            "reference": "https://motcua.example.gov.vn/ket-qua/125-2019",
        },
    )
}

DATA_USAGE = {
    "inquiry": _example(
        "Who read this citizen's data",
        {"subject_id": FATHER, "requested_by": {"officer": "thanhtra.01", "agency": AGENCY}},
    )
}

EDOC = {
    "extract_to_police": _example(
        "A birth extract to the ward police, with its file",
        {
            "sender_name": "UBND phường Bến Nghé",
            "to": [{"id": "000.00.17.H29", "name": "Công an phường Bến Nghé"}],
            "code_number": "57",
            "code_notation": "TLKS-UBND",
            "place": "Thành phố Hồ Chí Minh",
            "type": 3,
            "type_name": "Trích lục",
            "subject": "Trích lục khai sinh để đăng ký thường trú cho trẻ",
            "attachments": [
                {
                    "name": "trich-luc-khai-sinh.pdf",
                    "content_type": "application/pdf",
                    "data": base64.b64encode(b"%PDF-1.4\n% trich luc khai sinh\n%%EOF\n").decode(),
                }
            ],
        },
        f"For dossier {BIRTH}: hub signs the envelope as the dossier's agency and relays it.",
    )
}

RECALL = {"sent_by_mistake": _example("Sent by mistake", {"reason": "Gửi nhầm cơ quan nhận"})}
