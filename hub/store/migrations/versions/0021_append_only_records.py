"""append-only records kept so by the database, as the access log already was: status events, exchanges, payment
callbacks, documents' status notices, operator actions

- `status_events`: never deleted; an UPDATE may change `payload` alone (the retention's removal of personal data,
  ADR 0037) — the dossier, its sequence number, kind, statuses, client, correlation id and time are history;
- `exchanges`: never updated; deleted by `hub jobs purge --history` (the oldest, by age);
- `payment_callbacks`, `edoc_notices`, `operator_actions`: neither updated nor deleted.

Hub's own code only inserts into them (and the two exceptions above); these triggers turn a mistake — a bug, a
hand-typed statement in a console — into an error instead of a rewritten history. A database administrator can
still drop a trigger: the access log's hash chain is what detects that for personal data (ADR 0018).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# table -> the statements refused on it
REFUSED = {
    "exchanges": ("UPDATE",),
    "payment_callbacks": ("UPDATE", "DELETE"),
    "edoc_notices": ("UPDATE", "DELETE"),
    "operator_actions": ("UPDATE", "DELETE"),
    "status_events": ("DELETE",),
}
# what an UPDATE of a status event may not change (all but `payload`)
EVENT_HISTORY = (
    "id", "event_id", "dossier_id", "seq", "kind", "status", "previous_status",
    "client", "correlation_id", "created_at",
)  # fmt: skip


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION hub_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$;
            """
        )
        for name, refused in REFUSED.items():
            op.execute(
                f"CREATE TRIGGER {name}_append_only BEFORE {' OR '.join(refused)} ON {name} "
                "FOR EACH ROW EXECUTE FUNCTION hub_append_only()"
            )
        new, old = (", ".join(f"{row}.{c}" for c in EVENT_HISTORY) for row in ("NEW", "OLD"))
        op.execute(
            f"""
            CREATE FUNCTION status_events_history_kept() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF ({new}) IS DISTINCT FROM ({old}) THEN
                    RAISE EXCEPTION 'status_events is append-only: only its payload may be updated';
                END IF;
                RETURN NEW;
            END $$;
            """
        )
        op.execute(
            "CREATE TRIGGER status_events_history_kept BEFORE UPDATE ON status_events "
            "FOR EACH ROW EXECUTE FUNCTION status_events_history_kept()"
        )
    else:
        for name, refused in REFUSED.items():
            for action in refused:
                op.execute(
                    f"CREATE TRIGGER {name}_no_{action.lower()} BEFORE {action} ON {name} "
                    f"BEGIN SELECT RAISE(ABORT, '{name} is append-only: {action} refused'); END"
                )
        # SQLite fires it when one of these columns is set at all, changed or not: hub's updates set `payload` alone
        op.execute(
            f"CREATE TRIGGER status_events_history_kept BEFORE UPDATE OF {', '.join(EVENT_HISTORY)} ON status_events "
            "BEGIN SELECT RAISE(ABORT, 'status_events is append-only: only its payload may be updated'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in REFUSED:
            op.execute(f"DROP TRIGGER IF EXISTS {name}_append_only ON {name}")
        op.execute("DROP TRIGGER IF EXISTS status_events_history_kept ON status_events")
        op.execute("DROP FUNCTION IF EXISTS hub_append_only()")
        op.execute("DROP FUNCTION IF EXISTS status_events_history_kept()")
    else:
        for name, refused in REFUSED.items():
            for action in refused:
                op.execute(f"DROP TRIGGER IF EXISTS {name}_no_{action.lower()}")
        op.execute("DROP TRIGGER IF EXISTS status_events_history_kept")
