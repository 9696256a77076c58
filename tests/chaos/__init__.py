"""Chaos tier: kill -9 and restart the parts of a real stack under load; nothing accepted is lost or doubled."""
