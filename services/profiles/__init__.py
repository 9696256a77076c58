"""The profiles service."""
