"""Use cases that tie domain, store and relay together."""
