"""Errors gradlab reports to people. Pure Python: every layer may import it."""


class GradlabError(Exception):
    """An error a user can act on; the CLI prints its message on one line, exit code 2."""


class ConfigError(GradlabError):
    """A config value is wrong; the message names the key path, the value and what is allowed."""

    def __init__(self, message: str, key_path: str = ""):
        super().__init__(message)
        self.key_path = key_path


class EngineError(GradlabError, ValueError):
    """A bad argument to the numerical engine (``gradlab.engine``): an unknown name, a shape
    that does not fit. The one type the engine raises for them; as a GradlabError the CLI
    prints it on one line, and as a ValueError it is what Python callers of a numpy library
    expect to catch."""
