"""A user's own model and data for the shipped gridwise trainer (see ../README.md)."""
