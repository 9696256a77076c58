"""Campaign results: engagement and conversions counted, statistics, experiments and their winners."""
