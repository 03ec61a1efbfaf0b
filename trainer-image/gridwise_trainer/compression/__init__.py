"""Compression techniques, each switched on by the CarbonAwareJob's compression settings."""
