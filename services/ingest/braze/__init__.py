"""Braze-compatible user API: /users/track and /users/identify translated to Herald events."""
