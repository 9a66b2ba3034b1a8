"""Start the sandbox peers on loopback (for `hub sandbox`, `hub serve` in the embedded default and the demo)."""

from __future__ import annotations

from dataclasses import dataclass

from hub.sandbox import national_portal, one_stop, population
from hub.sandbox.common import ServerThread


@dataclass
class Sandboxes:
    national: ServerThread
    one_stop: ServerThread
    population: ServerThread

    def stop(self) -> None:
        self.national.stop()
        self.one_stop.stop()
        self.population.stop()


def start(
    host: str, national_port: int, one_stop_port: int, credentials: dict[str, str], population_port: int = 0
) -> Sandboxes:
    national = ServerThread(national_portal.create_app(credentials), host, national_port).start()
    onestop = ServerThread(one_stop.create_app(), host, one_stop_port).start()
    people = ServerThread(population.create_app(), host, population_port).start()
    return Sandboxes(national, onestop, people)
