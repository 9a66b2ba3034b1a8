"""Sandbox peers: real servers on loopback that implement contracts/. They never import hub internals."""
