"""XML signatures: the only package that parses untrusted XML for signatures or touches keys."""
