"""The gateway: authenticates SDK and API traffic, enforces limits, routes to the services."""
