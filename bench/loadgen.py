"""A small HTTP/1.1 keep-alive load generator (asyncio + uvloop), run as its own process so it does not share
a GIL with the server it measures. Prints one JSON line: requests, seconds, rps, statuses, p50/p99 ms.

Modes:
  ingest  every request files a new dossier (POST /v1/dossiers)
  push    every request pushes a new portal-filed dossier down (POST /v1/national/dossiers, status 1)
  bare    the same bodies to a bare FastAPI POST endpoint
  walk    dossiers filed and walked through 10 events each, in order per dossier
  batch   every request files --batch new dossiers at once (POST /v1/dossiers/batch, DongBoHoSoMC's data array)
  bare-batch  the same batches to a bare FastAPI POST endpoint
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

WALK = [4, 4, 5, 4, 6, 4, 4, 9, 10]
AGENCY = "000.00.17.H56"


def dossier(i: int, *, prefix: int = 0) -> dict[str, Any]:
    # each prefix its own 400 days of codes, every one in the past (hub refuses a dossier received in the future)
    day = date(2012, 1, 1) + timedelta(days=prefix * 400 + i // 9000)
    seq = i % 9000 + 1
    code = f"{AGENCY}-{day:%y%m%d}-{seq:04d}"
    return {
        "MaHoSo": code,
        "MaTTHC": "1.001193",
        "TenTTHC": "Thủ tục đăng ký khai sinh",
        "MaLinhVuc": "HT",
        "TenLinhVuc": "Hộ tịch",
        "KenhThucHien": 2,
        "ChuHoSo": "Nguyễn Thị Hồng Nhung",
        "SoGiayToChuHoSo": "079195001234",
        "LoaiDoiTuong": 1,
        "SoDienThoai": "0912345678",
        "Email": "nhung.nguyen@example.vn",
        "TrichYeuHoSo": "Đăng ký khai sinh cho con: Trần Minh Khang",
        "NgayTiepNhan": f"{day:%Y%m%d}083000",
        "NgayHenTra": f"{day:%Y%m%d}163000",
        "TrangThaiHoSo": 2,
        "DonViXuLy": "UBND phường Bến Nghé",
        "DanhSachLePhi": [
            {
                "TenPhiLePhi": "Lệ phí đăng ký khai sinh",
                "MaPhiLePhi": "LP01",
                "HinhThucThu": 1,
                "Gia": 8000,
                "LoaiPhiLePhi": 1,
            }
        ],
        "DuocThanhToanTrucTuyen": 1,
    }


def progress(code: str, status: int, k: int) -> dict[str, Any]:
    return {
        "MaHoSo": code,
        "NguoiXuLy": "Lê Văn Tâm",
        "ChucDanh": "Công chức Tư pháp - Hộ tịch",
        "ThoiDiemXuLy": f"2024101514{k:02d}00",
        "PhongBanXuLy": "Bộ phận Tư pháp - Hộ tịch",
        "NoiDungXuLy": "Xử lý hồ sơ",
        "TrangThai": status,
    }


def request_bytes(host: str, path: str, body: dict[str, Any], key: str, api_key: str) -> bytes:
    raw = json.dumps(body, ensure_ascii=False).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\nX-API-Key: {api_key}\r\nIdempotency-Key: {key}\r\n\r\n"
    )
    return head.encode() + raw


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def main(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.host, args.port
    plans: list[list[bytes]] = [[] for _ in range(args.connections)]
    if args.mode in ("ingest", "bare", "push"):
        path = {"ingest": "/v1/dossiers", "bare": "/bare", "push": "/v1/national/dossiers"}[args.mode]
        for i in range(args.requests):
            body = dossier(i, prefix=args.prefix)
            if args.mode == "push":
                body["TrangThaiHoSo"] = 1  # filed on the portal, not yet received by the province
            plans[i % args.connections].append(request_bytes(host, path, body, f"b{args.prefix}-{i}", args.api_key))
    elif args.mode in ("batch", "bare-batch"):
        path = "/v1/dossiers/batch" if args.mode == "batch" else "/bare-batch"
        for i in range(args.requests):
            body = {"data": [dossier(i * args.batch + j, prefix=args.prefix) for j in range(args.batch)]}
            plans[i % args.connections].append(request_bytes(host, path, body, f"B{args.prefix}-{i}", args.api_key))
    else:
        for n in range(args.dossiers):
            d = dossier(n, prefix=args.prefix)
            code = d["MaHoSo"]
            plan = plans[n % args.connections]
            plan.append(request_bytes(host, "/v1/dossiers", d, f"w{args.prefix}-{n}", args.api_key))
            for k, status in enumerate(WALK):
                plan.append(
                    request_bytes(
                        host,
                        f"/v1/dossiers/{code}/progress",
                        progress(code, status, k),
                        f"w{args.prefix}-{n}-{k}",
                        args.api_key,
                    )
                )
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def run(plan: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        for req in plan:
            t = time.perf_counter()
            writer.write(req)
            statuses[await read_response(reader)] += 1
            latencies.append(time.perf_counter() - t)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(run(p) for p in plans if p))
    seconds = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "seconds": seconds,
        "rps": n / seconds,
        "statuses": dict(statuses),
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["ingest", "bare", "walk", "push", "batch", "bare-batch"], required=True)
    p.add_argument("--batch", type=int, default=100, help="dossiers per request in the batch modes")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--dossiers", type=int, default=500)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--api-key", default="")
    p.add_argument("--prefix", type=int, default=0, help="varies dossier codes between runs")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(args))))
