"""Adapter for the national public-service portal (DVCQG)."""

from hub.adapters.national_portal.base import NationalPortal
from hub.adapters.national_portal.client import NationalPortalClient

__all__ = ["NationalPortal", "NationalPortalClient"]
