"""Tests of the session tree: persister, signal store, connection actor, runtime entry points."""
