"""The delivery policy applied when each send is released: caps, holdouts, windows, rate limits, variants, locales."""
