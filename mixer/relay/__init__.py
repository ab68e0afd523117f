"""Relay mode: a conference that forwards 1:1 calls and mixes when it must (issue 17)."""
