"""Adapter for provincial one-stop systems (hệ thống một cửa điện tử): down-flow deliveries."""

from hub.adapters.one_stop.client import OneStopClient

__all__ = ["OneStopClient"]
