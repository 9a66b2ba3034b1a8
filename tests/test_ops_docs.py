"""The sample alert rules and Grafana dashboard in docs/ops/ speak only of metrics hub actually exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import HubFactory

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ops"
METRIC = re.compile(r"\bhub_[a-z_]+")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_alerts_and_dashboard_use_exported_metrics(hub_factory: HubFactory, backend: str) -> None:
    hub = hub_factory()
    exported = set(re.findall(r"^# TYPE (hub_[a-z_]+) (\w+)", hub.http.get("/metrics").text, re.MULTILINE))
    names = {name for name, _ in exported}
    # a counter is scraped as <name>_total, a histogram as <name>_bucket/_sum/_count
    names |= {f"{n}_total" for n, kind in exported if kind == "counter"}
    names |= {f"{n}_{s}" for n, kind in exported if kind == "histogram" for s in ("bucket", "sum", "count")}
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used and used <= names, sorted(used - names)


SYSTEMD = DOCS / "systemd"


def _exec_starts() -> list[tuple[str, list[str]]]:
    """(unit, the hub command it runs) for every ExecStart= of the sample units, systemd's %-specifiers filled."""
    import shlex

    found = []
    for unit in sorted(SYSTEMD.glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", "1").replace("%%", "%"))
                found.append((unit.name, argv))
    return found


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian's systemd) is not installed"
)
def test_the_sample_systemd_units_are_valid_units(tmp_path: Path) -> None:
    """systemd itself reads the units (unknown keys, bad values, a command that is not there are findings), the
    installed `hub` standing in for /opt/hub's."""
    hub = str(Path(sys.executable).with_name("hub"))
    for unit in [*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.timer")]:
        text = unit.read_text().replace("/opt/hub/.venv/bin/hub", hub)
        (tmp_path / unit.name.replace("@.", "@1.")).write_text(text)
    units = sorted(str(p) for p in [*tmp_path.glob("*.service"), *tmp_path.glob("*.timer")])
    assert len(units) == 5
    checked = subprocess.run(
        ["systemd-analyze", "verify", *units],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )  # fmt: skip
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr


def test_the_sample_units_run_hub_commands_with_options_it_has() -> None:
    """Each ExecStart is a `hub` command whose options the CLI takes (asked with --help after them: an option it
    does not know is an error, exit 2)."""
    starts = _exec_starts()
    assert {unit for unit, _ in starts} == {
        "hub-serve.service", "hub-worker@.service", "hub-migrate.service", "hub-purge.service"
    }  # fmt: skip
    hub = str(Path(sys.executable).with_name("hub"))
    for unit, argv in starts:
        assert argv[0] == "/opt/hub/.venv/bin/hub", unit
        asked = subprocess.run([hub, *argv[1:], "--help"], check=False, capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0, (unit, asked.stdout[-2000:], asked.stderr[-2000:])


def test_the_sample_environment_file_names_real_settings_and_starts_in_production() -> None:
    """Every HUB_ variable of the sample /etc/hub/hub.env is a setting hub reads; filled in (its secrets left empty
    there), it passes production mode's checks."""
    from pydantic import SecretStr

    from hub.settings import Settings

    values = {}
    for line in (SYSTEMD / "hub.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    fields = {f"HUB_{name.upper()}" for name in Settings.model_fields}
    assert set(values) <= fields, sorted(set(values) - fields)
    assert values["HUB_MODE"] == "production"
    env_file = SYSTEMD / "hub.env"  # read as hub reads its .env
    with pytest.raises(ValueError, match="HUB_SECRET_KEY must be set"):  # as shipped: the secrets are to be set
        Settings(_env_file=env_file)
    clients = json.loads(values["HUB_CLIENTS"])
    clients[0]["api_key"] = "k" * 32
    settings = Settings(
        _env_file=env_file,
        secret_key=SecretStr("s" * 48),
        national_portal_password=SecretStr("portal-password"),
        clients=clients,
    )
    assert settings.mode == "production" and settings.effective_database_url.startswith("postgresql")
    assert settings.var_dir == Path("/var/lib/hub")  # where the units let hub write (StateDirectory=hub)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_dashboard_counts_what_the_database_says_once_however_many_processes_say_it(
    hub_factory: HubFactory, backend: str
) -> None:
    """The series read from the database (the store's collector) are the same at every hub process Prometheus
    scrapes: the dashboard takes one of them (max without instance) before it adds across labels — a plain sum
    counted everything twice with two API instances."""
    from hub.metrics import StoreCollector

    hub = hub_factory()
    from_database = {family.name for family in StoreCollector(hub.runtime.sessions).collect()}
    assert {"hub_outbox_messages", "hub_exchanges", "hub_payments"} <= from_database
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in METRIC.findall(target["expr"])}
            if used & from_database and "sum" in target["expr"]:
                checked += 1
                assert "max without (instance, job)" in target["expr"], (panel["title"], target["expr"])
    assert checked >= 5
