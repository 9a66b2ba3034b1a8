"""Adapter for the inter-agency document exchange platform (trục liên thông văn bản): signed edXML envelopes."""

from hub.adapters.document_exchange.client import PEER, DocumentExchangeClient

__all__ = ["PEER", "DocumentExchangeClient"]
