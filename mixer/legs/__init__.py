"""Legs: one participant's media on one port (transport, SRTP, RTP/RTCP, stats).

Both conference modes (`mixer.mcu`, `mixer.sfu`) and the engine's media services use legs, so they
live below all of them; nothing here imports a conference mode or the engine process.
"""
