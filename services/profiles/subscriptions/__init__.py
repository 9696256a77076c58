"""Subscriptions and consent: per-channel and per-group states, subscription groups, consent records."""
