"""gridwise: run GPU training jobs when the electricity grid is clean."""

__version__ = "0.1.0"
