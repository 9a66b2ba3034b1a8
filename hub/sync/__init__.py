"""The relay: outbox claiming and delivery, retry policy, per-dossier order, dead letters, replay, workers."""
