"""What the role hub's processes connect to PostgreSQL as may do to each table (least privilege, ADR 0044).

The tables' owner runs the migrations (`hub db upgrade`) and `hub db grant ROLE`; `hub serve` and `hub worker`
connect as ROLE, which may read every table and write as hub writes — nothing more: no DDL (it cannot drop the
append-only records' triggers, ADR 0042), no TRUNCATE, and on the records hub keeps as history only what hub does
to them — the personal-data access log, payment callbacks, documents' status notices and operator actions are
only ever inserted; the exchange record is inserted and purged (`hub jobs purge --history`); a status event is
inserted and, of its columns, only its payload updated (the retention's removal of personal data, ADR 0037)."""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from hub.store.models import Base

INSERT_ONLY = frozenset({"access_log", "payment_callbacks", "edoc_notices", "operator_actions"})
PURGED = frozenset({"exchanges"})  # and deleted, oldest first
SCRUBBED = {"status_events": "payload"}  # and that column updated
READ_ONLY = frozenset({"alembic_version"})  # the schema's revision, read at every start
# an unquoted PostgreSQL identifier, lower case: the role is put in statements as a name, never a value
ROLE = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


def statements(role: str) -> list[str]:
    """The statements that give `role` hub's privileges on the tables the code declares, and no others (run again
    after each upgrade: a new table is given its own)."""
    if not ROLE.fullmatch(role):
        raise ValueError(f"{role!r} is not a role name (lower-case letters, digits and _, at most 63)")
    out = [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
    ]
    for table in [*(t.name for t in Base.metadata.sorted_tables), *READ_ONLY]:
        if table in READ_ONLY:
            out.append(f"GRANT SELECT ON {table} TO {role}")
        elif table in INSERT_ONLY:
            out.append(f"GRANT SELECT, INSERT ON {table} TO {role}")
        elif table in PURGED:
            out.append(f"GRANT SELECT, INSERT, DELETE ON {table} TO {role}")
        elif table in SCRUBBED:
            out.append(f"GRANT SELECT, INSERT, UPDATE ({SCRUBBED[table]}) ON {table} TO {role}")
        else:
            out.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
    out.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")  # the tables' ids
    return out


def grant(engine: Engine, role: str) -> list[str]:
    """Run `statements(role)` in one transaction on `engine` (connected as the tables' owner); returns them."""
    done = statements(role)
    with engine.begin() as conn:
        for statement in done:
            conn.execute(text(statement))
    return done


def connected_role(engine: Engine) -> tuple[str, bool, bool]:
    """(the role hub is connected as, whether it owns hub's tables, whether it may rewrite the access log)."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT current_user, (SELECT tableowner FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename = 'outbox') = current_user, has_table_privilege(current_user, 'access_log', 'UPDATE')"
            )
        ).one()
    return str(row[0]), bool(row[1]), bool(row[2])
