"""Send Django mail through Gmail, reliably."""

__version__ = "0.1.0"
