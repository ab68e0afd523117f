"""Signaling controller: the HTTPS REST API in front of the media engines (see docs/controller.md)."""
