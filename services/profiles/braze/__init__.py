"""What the Braze-compatible user API (services/ingest/braze) asks the profiles service: who exists."""
