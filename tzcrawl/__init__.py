"""tzcrawl: back up AI personalities from a hosted service to plain JSON on your own disk."""

__version__ = "0.1.0"
