"""Command entry points (being built)."""

from tunesmith.errors import ConfigError


def train() -> None:
    """Not built yet."""
    raise ConfigError("this command is not built yet")


def export() -> None:
    """Not built yet."""
    raise ConfigError("this command is not built yet")
