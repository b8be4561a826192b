"""Command entry points (being built)."""

from tunesmith.errors import ConfigError


def serve() -> None:
    """Not built yet."""
    raise ConfigError("this command is not built yet")
