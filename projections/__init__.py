"""The Redis projection of the timer table and its reconciliation."""
