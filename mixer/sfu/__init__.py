"""SFU conferences (selective forwarding). Not built yet: see README "Status"."""
