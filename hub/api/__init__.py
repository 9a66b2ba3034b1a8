"""The HTTP API (FastAPI): /v1 routers, client authentication, problem+json errors, health."""
