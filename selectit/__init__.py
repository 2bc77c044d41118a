"""SelectIT: selective instruction tuning via uncertainty-aware self-reflection (arXiv 2402.16705)."""

__version__ = "0.1.0"
