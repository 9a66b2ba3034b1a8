"""The baseline: a bare FastAPI POST that accepts the same JSON body and answers 202."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/bare", status_code=202)
async def bare(request: Request) -> JSONResponse:
    body: Any = await request.json()
    return JSONResponse({"MaHoSo": body["MaHoSo"]}, status_code=202)


@app.post("/bare-batch")
async def bare_batch(request: Request) -> JSONResponse:
    """The baseline of a batch (bench/relay.py): parse the same `data` array and answer how many it holds."""
    body: Any = await request.json()
    return JSONResponse({"accepted": len(body["data"])})


@app.post("/bare-callback")
async def bare_callback(request: Request) -> JSONResponse:
    """The baseline of bench/payments.py: parse the callback's JSON and answer the platform's "00"."""
    body: Any = await request.json()
    return JSONResponse({"MaLoi": "00", "MoTaLoi": body["MaThamChieu"]})
