"""Celery's Redis transport, with one repair: a channel whose connection is already closed says so with a
connection error instead of an AttributeError.

kombu closes the channels of a lost connection and, on the way, puts their unacknowledged messages back (and acks
what the pool finished). When the broker drops again within a moment of a reconnect, that work can run on a channel
whose transport has already let go of its connection (`transport.client is None`); kombu then fails with
`AttributeError: 'NoneType' object has no attribute 'hostname'`, which none of its error handlers expect, and the
worker's consumer stops for good ("Unrecoverable error", celery/celery#10302, still in kombu 5.7). A connection
error is what kombu and Celery handle there: they log it, skip the restore (the messages stay in Redis's unacked
set, restored after the visibility timeout) and reconnect. hub's tasks carry no data anyway: the outbox in the
database is the source of truth and a worker's ticker asks for a drain again. See ADR 0022."""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

TRANSPORT = "hub.sync.broker:Transport"


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel
