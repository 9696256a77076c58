"""The herald command line and the local development stack."""
