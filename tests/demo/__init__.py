"""Tests of `baileys-trio demo`."""
