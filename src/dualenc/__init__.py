"""dualenc: dual-encoder response selection for retrieval-based dialog."""

__version__ = "0.1.0"
