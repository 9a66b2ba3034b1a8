"""Distributed mode for real: PostgreSQL + Redis + Celery worker processes. A worker killed with SIGKILL in the
middle of a batch, a 30 s portal outage, and Redis restarted mid-run: every event reaches the portal exactly
once in effect and in order per dossier."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from hub.api.app import create_app
from hub.runtime import Runtime
from hub.sandbox.common import ServerThread
from hub.store.models import OutboxMessage
from hub.sync.outbox import counts
from tests.conftest import PORTAL_USER, Creds, create_pg_database, drop_pg_database, listen_port, make_settings
from tests.helpers import dossier, step
from tests.test_rates import closer_than_the_pace

pytestmark = pytest.mark.slow
WALK = [4, 4, 5, 4, 6, 4, 4, 9, 10]  # after filing in status 2: ten events per dossier
HUB_BIN = str(Path(sys.executable).with_name("hub"))


class RedisServer:
    """A private redis-server for this test, so it can be killed and restarted without touching others."""

    def __init__(self, tmp: Path) -> None:
        self.port = listen_port()
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [HUB_BIN, "worker", "--concurrency", "2"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # the main process and its pool children, mid-batch
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Cluster:
    def __init__(self, tmp: Path, creds: Creds, portal_url: str) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp)
        self.redis.start()
        self.db_url = create_pg_database()
        overrides: dict[str, Any] = {
            "database_url": self.db_url,
            "broker_url": self.redis.url,
            "relay_lease_seconds": 3.0,
            "relay_batch_size": 25,
            "relay_backoff_base": 0.1,
            "relay_backoff_cap": 1.0,
            "relay_poll_interval": 0.2,
        }
        self.settings = make_settings(tmp, creds, portal_url, **overrides)
        self.runtime = Runtime(self.settings, role="api")
        self.api = ServerThread(create_app(self.settings, self.runtime)).start()
        self.http = httpx.Client(base_url=self.api.url, headers={"X-API-Key": creds.api_key}, timeout=10)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            "HUB_VAR_DIR": str(tmp),
            "HUB_DATABASE_URL": self.db_url,
            "HUB_BROKER_URL": self.redis.url,
            "HUB_NATIONAL_PORTAL_URL": portal_url,
            "HUB_NATIONAL_PORTAL_USERNAME": PORTAL_USER,
            "HUB_NATIONAL_PORTAL_PASSWORD": creds.portal_password,
            "HUB_SECRET_KEY": creds.secret_key,
            "HUB_CLIENTS": json.dumps([{"name": "w", "api_key": creds.api_key, "agencies": ["*"]}]),
            "HUB_RELAY_LEASE_SECONDS": "3",
            "HUB_RELAY_BATCH_SIZE": "25",
            "HUB_RELAY_BACKOFF_BASE": "0.1",
            "HUB_RELAY_BACKOFF_CAP": "1",
            "HUB_RELAY_POLL_INTERVAL": "0.2",
            "HUB_READ_TIMEOUT": "2",
        }
        self.workers: list[Worker] = []

    def worker(self, **env: str) -> Worker:
        w = Worker({**self.env, **env}, self.tmp / f"worker-{len(self.workers)}.log").start()
        self.workers.append(w)
        return w

    def post(self, n_dossiers: int, first: int = 1, walk: list[int] = WALK) -> list[str]:
        codes = []
        for i in range(first, first + n_dossiers):
            d = dossier(i)
            r = self.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": f"f-{i}"})
            assert r.status_code == 202, r.text
            codes.append(d["MaHoSo"])
        for k, status in enumerate(walk):
            for code in codes:
                r = self.http.post(
                    f"/v1/dossiers/{code}/progress", json=step(code, status), headers={"Idempotency-Key": f"{code}-{k}"}
                )
                assert r.status_code == 202, r.text
        return codes

    def hub(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the `hub` CLI against this cluster."""
        return subprocess.run([HUB_BIN, *args], check=False, env=self.env, capture_output=True, text=True, timeout=60)

    def states(self) -> dict[str, int]:
        with self.runtime.sessions() as s:
            return counts(s)

    def wait_delivered(self, total: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.states() != {"delivered": total}:
            if time.monotonic() > deadline:
                raise AssertionError(f"not delivered in {timeout}s: {self.states()}\n{self.trouble()}")
            time.sleep(0.2)

    def trouble(self) -> str:
        """What a failure message needs: the rows that are not delivered and the workers' last words."""
        with self.runtime.sessions() as s:
            rows = s.scalars(select(OutboxMessage).where(OutboxMessage.state != "delivered").limit(20)).all()
            lines = [
                f"#{r.id} {r.operation} dossier={r.dossier_id} seq={r.seq} {r.state} attempts={r.attempts} "
                f"{r.last_error_code}: {r.last_error} reply={r.peer_reply}"
                for r in rows
            ]
        logs = "\n".join(w.log.read_text(errors="replace")[-2000:] for w in self.workers)
        return "\n".join(lines) + "\n" + logs

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.http.close()
        self.api.stop()
        self.runtime.close()
        self.redis.kill()
        drop_pg_database(self.db_url)


@pytest.fixture
def cluster(tmp_path: Path, creds: Creds, portal_server: ServerThread, portal: httpx.Client) -> Iterator[Cluster]:
    c = Cluster(tmp_path, creds, portal_server.url)
    yield c
    c.close()


def applied(portal: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = portal.get("/_sandbox/received", params={"outcome": "applied"}).json()["items"]
    return items


def assert_exactly_once_in_order(portal: httpx.Client, codes: list[str], walk: list[int] = WALK) -> None:
    keys = Counter(i["idempotency_key"] for i in applied(portal))
    assert len(keys) == len(codes) * (len(walk) + 1)
    assert set(keys.values()) == {1}, "some event took effect twice"
    for code in codes:
        history = portal.get(f"/_sandbox/dossiers/{code}").json()["history"]
        assert [h["status"] for h in history] == [2, *walk], code


def wait_until(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_burst_of_commits_asks_for_one_drain_at_a_time(cluster: Cluster, portal: httpx.Client) -> None:
    """Sixty commits while no worker runs leave one drain request in the broker, not one per commit; a commit
    made after a worker's drain has begun asks again; a worker then delivers everything."""
    queue = redis.Redis.from_url(cluster.redis.url)
    assert cluster.http.get("/readyz").json()["workers"] == []  # none started yet: operators can see it
    assert cluster.hub("workers").returncode == 1
    codes = cluster.post(6)  # 6 dossiers × 10 events
    wait_until(lambda: queue.llen("hub") >= 1, 5)
    time.sleep(0.3)  # longer than the wake-ups' coalescing: any further request would be there by now
    assert queue.llen("hub") == 1
    cluster.runtime.doorbell.answer()  # what a worker's drain task does before it claims
    codes += cluster.post(1, first=50, walk=[])
    wait_until(lambda: queue.llen("hub") == 2, 5)
    worker = cluster.worker()
    cluster.wait_delivered(61, timeout=60)
    keys = Counter(i["idempotency_key"] for i in applied(portal))
    assert len(keys) == 61 and set(keys.values()) == {1}
    # the worker is listed, with its pool and a recent drain: in /readyz, `hub workers` and the metrics
    assert worker.proc is not None
    (seen,) = cluster.http.get("/readyz").json()["workers"]
    assert seen["pid"] == worker.proc.pid and seen["processes"] == 2 and seen["last_drain_age_s"] < 5
    listed = cluster.hub("workers", "--json")
    assert listed.returncode == 0 and [w["pid"] for w in json.loads(listed.stdout)] == [worker.proc.pid]
    assert "hub_workers_alive 1.0" in cluster.http.get("/metrics").text
    for code in codes[:6]:
        assert [h["status"] for h in portal.get(f"/_sandbox/dossiers/{code}").json()["history"]] == [2, *WALK]
    # an operator's "run now" (the console's sync-jobs page) goes to the workers as the job's task; its run is
    # recorded as a scheduled one's (not due for minutes yet)
    from hub.sync.jobs import last_run

    def anchored() -> bool:
        with cluster.runtime.sessions() as s:
            run = last_run(s, "anchor_audit_log")
            return run is not None and run.outcome == "ok"

    assert not anchored() and cluster.runtime.run_job_soon("anchor_audit_log")
    wait_until(anchored, 15)


def test_a_worker_whose_consumer_is_stuck_stops_for_its_supervisor(cluster: Cluster, portal: httpx.Client) -> None:
    """The worker is up and beating, but its consumer takes no task (here: told by Celery's remote control to stop
    consuming hub's queue — what a wedged consumer looks like from outside). Past HUB_WORKER_STUCK_SECONDS it stops
    with exit 75, saying why, for its supervisor to start it again; an idle worker that is fine does not."""
    from celery import Celery

    from hub.sync.workers import Roster, beat_ttl

    worker = cluster.worker(HUB_WORKER_STUCK_SECONDS="2")
    assert worker.proc is not None
    roster = Roster(redis.Redis.from_url(cluster.redis.url), ttl=beat_ttl(0.2))
    wait_until(lambda: [w.last_drain_age_s is not None for w in roster.seen()] == [True], 30)
    time.sleep(3)  # idle, longer than the limit: its ticker's drains keep it fresh
    assert worker.proc.poll() is None, cluster.trouble()
    (name,) = [w.name for w in roster.seen()]
    control = Celery(broker=cluster.redis.url)
    control.control.cancel_consumer("hub", destination=[name], reply=True, timeout=5)
    try:
        assert worker.proc.wait(timeout=30) == 75, cluster.trouble()
    finally:
        control.close()
    log = worker.log.read_text(errors="replace")
    assert "consumer stuck" in log and "exit 75" in log
    # its supervisor starts it again: what came in meanwhile is delivered
    codes = cluster.post(3, walk=[4])
    cluster.worker()
    cluster.wait_delivered(6, timeout=60)
    assert_exactly_once_in_order(portal, codes, walk=[4])


def test_the_consumer_watch_counts_only_an_idle_pool_with_the_broker_up() -> None:
    from hub.sync.workers import ConsumerWatch

    watch = ConsumerWatch(300, now=0)
    assert not watch.beat(None, busy=False, now=200)  # no drain yet, not for long
    assert watch.beat(None, busy=False, now=301)  # none since the worker started, 301 s ago
    watch = ConsumerWatch(300, now=0)
    assert not watch.beat(10, busy=False, now=400)  # a drain 10 s ago
    assert not watch.beat(None, busy=False, now=500)  # Redis lost the mark (restarted): the last one seen counts
    assert watch.beat(None, busy=False, now=700.1)
    watch = ConsumerWatch(300, now=0)
    assert not watch.beat(None, busy=True, now=1000)  # every pool process on a long task: not stuck
    assert not watch.beat(None, busy=False, now=1200)
    watch.broker_down(now=1250)  # the broker did not answer: the consumer reconnects after it, the clock restarts
    assert not watch.beat(None, busy=False, now=1500) and watch.beat(None, busy=False, now=1551)
    assert not ConsumerWatch(0, now=0).beat(None, busy=False, now=10**6)  # 0: never


def test_worker_killed_mid_batch_loses_and_doubles_nothing(cluster: Cluster, portal: httpx.Client) -> None:
    codes = cluster.post(100)  # 1,000 events
    portal.post("/_sandbox/faults", json={"latency_ms": 15})
    victim = cluster.worker()
    wait_until(lambda: len(applied(portal)) >= 250, timeout=120)
    victim.kill9()
    assert len(applied(portal)) < 1000
    successor = cluster.worker()
    cluster.wait_delivered(1000, timeout=180)
    assert_exactly_once_in_order(portal, codes)
    # the killed worker said no goodbye: it drops out of the roster once its beat expires
    assert successor.proc is not None
    wait_until(lambda: [w["pid"] for w in cluster.http.get("/readyz").json()["workers"]] == [successor.proc.pid], 15)


def test_portal_outage_of_30_seconds(cluster: Cluster, portal: httpx.Client) -> None:
    cluster.worker()
    portal.post("/_sandbox/faults", json={"outage_seconds": 30})
    started = time.monotonic()
    codes = cluster.post(20)  # 200 events
    time.sleep(max(0.0, 25 - (time.monotonic() - started)))
    assert applied(portal) == []
    assert cluster.states().get("delivered", 0) == 0 and cluster.states().get("dead", 0) == 0
    cluster.wait_delivered(200, timeout=90)
    assert time.monotonic() - started >= 30
    assert_exactly_once_in_order(portal, codes)


def test_two_workers_keep_the_portals_pace_together(cluster: Cluster, portal: httpx.Client) -> None:
    """HUB_PEER_RATE_LIMITS with two Celery workers (two processes each): a backlog of 60 reaches the portal at
    its agreed rate however many workers share it — each message once, in order, one attempt each. The ticks are
    slow (2 s) here: a worker whose paced claim came full drains on at once, not at the next tick."""
    rate = {"HUB_PEER_RATE_LIMITS": json.dumps({"national_portal": 20}), "HUB_RELAY_POLL_INTERVAL": "2"}
    codes = cluster.post(30, walk=[4])  # 60 events
    for _ in range(2):
        cluster.worker(**rate)
    cluster.wait_delivered(60, timeout=60)
    assert_exactly_once_in_order(portal, codes, walk=[4])
    times = sorted(x["at"] for x in applied(portal))
    assert closer_than_the_pace(times, 20, slack=0.5) == []
    with cluster.runtime.sessions() as s:
        assert set(s.scalars(select(OutboxMessage.attempts))) == {1}  # what waited its turn was not tried
    print(f"60 messages at 20/s: {59 / (times[-1] - times[0]):.1f}/s from the first to the last")


def test_redis_restarted_mid_run_loses_nothing(cluster: Cluster, portal: httpx.Client) -> None:
    codes = cluster.post(30)  # 300 events
    portal.post("/_sandbox/faults", json={"latency_ms": 10})
    worker = cluster.worker()
    wait_until(lambda: len(applied(portal)) >= 50, timeout=60)
    cluster.redis.kill()
    down = cluster.http.get("/readyz")
    assert down.status_code == 503 and down.json()["checks"]["broker"].startswith("error")
    more = cluster.post(10, first=31)  # ingest goes on without Redis
    time.sleep(2)
    cluster.redis.start()
    for _ in range(4):  # and Redis drops again just after each reconnect, with drains in flight
        goal = min(len(applied(portal)) + 10, 400)
        wait_until(lambda goal=goal: len(applied(portal)) >= goal, timeout=60)
        cluster.redis.kill()
        time.sleep(0.3)
        cluster.redis.start()
    cluster.wait_delivered(400, timeout=180)
    assert_exactly_once_in_order(portal, codes + more)
    assert worker.proc is not None and worker.proc.poll() is None, cluster.trouble()  # still consuming
    cluster.post(2, first=41)
    cluster.wait_delivered(420, timeout=60)
    ready = cluster.http.get("/readyz").json()
    assert ready["status"] == "ok" and ready["peers"]["national_portal"]["last_ok"]


def test_a_channel_whose_broker_connection_is_gone_fails_as_a_connection_error() -> None:
    """The state kombu leaves when Redis drops again right after a reconnect: a channel with a message the pool
    has not finished, on a transport that has let go of its connection. Closing it must be a connection error,
    which kombu and Celery handle by reconnecting; kombu's own transport raised AttributeError there and the
    worker stopped for good ("Unrecoverable error", celery/celery#10302)."""
    from kombu import Connection

    from hub.sync.broker import TRANSPORT

    conn = Connection("redis://127.0.0.1:6379/0", transport=TRANSPORT)
    channel = conn.default_channel
    channel.qos._delivered["unfinished"] = object()
    errors = conn.connection_errors
    conn._do_close_transport()
    with pytest.raises(errors):
        channel.qos.restore_unacked()
    conn.maybe_close_channel(channel)  # what kombu does with it: ignored as a connection error
    assert channel.closed


def test_the_roster_lists_the_workers_that_beat_and_when_they_last_drained() -> None:
    """Real Redis: a beat lists a worker until it expires or the worker leaves; a drain's mark gives its age."""
    import uuid

    import redis

    from hub.sync.workers import NAMES, PREFIX, Roster, mark_drained

    client = redis.Redis(host="127.0.0.1", port=6379)
    roster = Roster(client, ttl=0.6)
    a, b = f"celery@a-{uuid.uuid4().hex}", f"celery@b-{uuid.uuid4().hex}"
    mine = lambda: [w for w in roster.seen() if w.name in (a, b)]  # noqa: E731 - other tests' workers may beat too
    try:
        roster.beat(a, host="may-01", pid=101, processes=2)
        roster.beat(b, host="may-02", pid=202, processes=4)
        client.set(PREFIX + "junk", b"not json")  # another version's beat, or garbage: skipped, not an error
        client.sadd(NAMES, "junk")
        pipe = client.pipeline()
        mark_drained(pipe, a)
        pipe.execute()
        seen = {w.name: w for w in mine()}
        assert set(seen) == {a, b}
        assert (seen[a].host, seen[a].pid, seen[a].processes) == ("may-01", 101, 2)
        assert seen[a].last_drain_age_s is not None and seen[a].last_drain_age_s < 1
        assert seen[b].last_drain_age_s is None and seen[b].beat_age_s < 0.5
        roster.leave(b)
        assert [w.name for w in mine()] == [a]
        time.sleep(0.8)  # no beat for longer than the time-to-live: a worker killed with SIGKILL drops out
        assert mine() == []
        assert not {a.encode(), b"junk"} & client.smembers(NAMES)  # and is forgotten
    finally:
        client.delete(PREFIX + a, PREFIX + b, PREFIX + a + ":drained", PREFIX + "junk")
        client.srem(NAMES, a, b, "junk")


def test_scheduled_jobs_run_once_per_interval_across_workers() -> None:
    """Every worker's ticker asks; one claim per interval wins (real Redis), and the slot comes back after it."""
    import uuid

    import redis

    from hub.sync import schedule

    client = redis.Redis(host="127.0.0.1", port=6379)
    job = f"test-job-{uuid.uuid4().hex}"
    try:
        wins = [schedule.claim(client, job, 0.5) for _ in range(5)]  # five workers' tickers in the same round
        assert wins == [True, False, False, False, False]
        time.sleep(0.5)
        assert schedule.claim(client, job, 0.5) is True  # the next round
    finally:
        client.delete(schedule.PREFIX + job)
