"""Differential privacy and secure aggregation (not yet implemented)."""
