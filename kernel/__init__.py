"""Herald's shared kernel: infrastructure and bus contracts only, no domain logic."""
