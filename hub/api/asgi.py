"""ASGI entry point for `hub serve` with several uvicorn workers: each builds its app from the environment."""

from __future__ import annotations

from fastapi import FastAPI

from hub.api.app import create_app
from hub.settings import load_settings


def app_factory() -> FastAPI:
    return create_app(load_settings())
