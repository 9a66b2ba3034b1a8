"""The operator console at /ops: Vietnamese by default, English on request; login with roles; CSRF-protected
actions (replay of dead letters)."""
