"""Herald's benchmark suite: `make bench` (or `python -m bench --size tiny` for a smoke run)."""
