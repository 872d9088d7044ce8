"""Public test toolkit: real clusters on 127.0.0.1 and transport conformance checks."""
