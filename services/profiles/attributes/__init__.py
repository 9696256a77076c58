"""Custom attributes: Braze's operations on traits (inc, add, remove), and the workspace's attribute catalogue."""
