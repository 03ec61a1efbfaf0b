"""The gridwise trainer: a compression-enabled PyTorch loop that pauses without losing work."""
