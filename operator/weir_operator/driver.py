"""The one reconcile driver (being written)."""
