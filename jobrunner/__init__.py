"""jobrunner: create Genesys Cloud users from a CSV, exactly once, through crashes and limits."""

__version__ = "0.1.0"
