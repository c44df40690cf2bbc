"""pixseek: self-hosted semantic image search."""

__version__ = "0.1.0"
