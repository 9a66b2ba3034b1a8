"""Settings: env prefix, production refuses default or missing secrets, dev secrets live outside the code."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.settings import Settings, load_settings


def test_env_prefix_and_clients_from_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql+psycopg://h@db/hub")
    monkeypatch.setenv("HUB_CLIENTS", json.dumps([{"name": "a", "api_key": "k" * 30, "agencies": ["000.00.17.*"]}]))
    s = Settings(var_dir=tmp_path)
    assert s.effective_database_url == "postgresql+psycopg://h@db/hub"
    client = s.client_for_key("k" * 30)
    assert client is not None and client.may_act_for("000.00.17.H56") and not client.may_act_for("000.00.12.H29")
    assert s.client_for_key("k" * 29) is None


def test_embedded_default_is_sqlite_under_var(tmp_path: Path) -> None:
    s = load_settings(var_dir=tmp_path)
    assert s.embedded
    assert s.effective_database_url == f"sqlite:///{tmp_path.as_posix()}/hub.db"


def test_dev_secrets_are_generated_once_private_and_random(tmp_path: Path) -> None:
    a = load_settings(var_dir=tmp_path)
    b = load_settings(var_dir=tmp_path)
    assert a.secret_key is not None and b.secret_key is not None
    assert a.secret_key.get_secret_value() == b.secret_key.get_secret_value()
    assert len(a.secret_key.get_secret_value()) >= 32
    mode = (tmp_path / "dev-secrets.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    other = load_settings(var_dir=tmp_path / "other")
    assert other.secret_key is not None
    assert other.secret_key.get_secret_value() != a.secret_key.get_secret_value()


def test_processes_starting_together_on_a_fresh_machine_share_one_set_of_dev_secrets(tmp_path: Path) -> None:
    """`hub serve --workers 4` and a `hub worker` on a fresh var/: each process makes the secrets it lacks at the
    same moment. Every one of them must end up with the same keys (the API key one process printed must work on
    the others), and none may read a file another is still writing."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(6) as pool:
        keys = pool.map(_dev_keys, [tmp_path] * 24)
    assert len(set(keys)) == 1 and keys[0][0] and keys[0][1]
    assert json.loads((tmp_path / "dev-secrets.json").read_text())["client_api_key"] == keys[0][1]
    assert [p.name for p in tmp_path.iterdir()] == ["dev-secrets.json"]  # nothing half-written left beside it


def _dev_keys(var_dir: Path) -> tuple[str, str]:
    settings = load_settings(var_dir=var_dir)
    assert settings.secret_key is not None and settings.clients[0].api_key is not None
    return settings.secret_key.get_secret_value(), settings.clients[0].api_key.get_secret_value()


def test_a_damaged_dev_secrets_file_is_said_plainly_and_secrets_from_an_earlier_version_are_completed(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    (tmp_path / "dev-secrets.json").write_text('{"secret_key": "abc')  # a crash of an earlier version mid-write
    with pytest.raises(ValueError, match="is damaged"):
        load_settings(var_dir=tmp_path)
    hub = str(Path(sys.executable).with_name("hub"))
    env = {"PATH": str(Path(sys.executable).parent), "HUB_VAR_DIR": str(tmp_path)}
    said = subprocess.run([hub, "jobs", "list"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert said.returncode == 2 and "is damaged" in said.stderr and "Traceback" not in said.stderr
    old = {"secret_key": "s" * 43, "client_api_key": "c" * 32, "national_portal_password": "p" * 22}
    (tmp_path / "dev-secrets.json").write_text(json.dumps(old))
    first, again = load_settings(var_dir=tmp_path), load_settings(var_dir=tmp_path)
    assert first.payment_dvc_secret == again.payment_dvc_secret and first.payment_dvc_secret
    assert json.loads((tmp_path / "dev-secrets.json").read_text())["secret_key"] == "s" * 43


def test_production_refuses_missing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_MODE", "production")
    with pytest.raises(ValidationError) as exc:
        load_settings()
    text = str(exc.value)
    for name in ("HUB_SECRET_KEY", "HUB_CLIENTS", "HUB_NATIONAL_PORTAL_PASSWORD", "HUB_DATABASE_URL"):
        assert name in text


def test_production_accepts_real_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_MODE", "production")
    monkeypatch.setenv("HUB_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("HUB_CLIENTS", json.dumps([{"name": "a", "api_key": "k" * 30, "agencies": ["*"]}]))
    monkeypatch.setenv("HUB_NATIONAL_PORTAL_PASSWORD", "p" * 20)
    monkeypatch.setenv("HUB_NATIONAL_PORTAL_URL", "https://portal.example")
    monkeypatch.setenv("HUB_POPULATION_URL", "https://dancu.example/ws/congdan")
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql+psycopg://h@db/hub")
    s = load_settings()
    assert s.mode == "production"
    monkeypatch.setenv("HUB_CLIENTS", json.dumps([{"name": "a", "api_key": "short", "agencies": ["*"]}]))
    with pytest.raises(ValidationError):
        load_settings()
