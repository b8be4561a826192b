"""The main job on the embedded defaults (being built)."""

from tunesmith.errors import ConfigError


def demo() -> None:
    """Train a role adapter on the default model, evaluate it against the base and show the result."""
    raise ConfigError("the demo is not built yet")
