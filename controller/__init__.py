"""Signaling controller (REST over TLS). Not built yet: see README "Status"."""
