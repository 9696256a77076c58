"""In-app messages and content cards: rendered when sent, kept per user, fetched and reported on by apps."""
