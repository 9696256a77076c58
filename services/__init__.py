"""Herald services, one package each."""
