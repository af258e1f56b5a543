"""User-facing errors: one clear line saying what is wrong and how to fix it."""


class RaywaveError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line and exits 2."""


class ConfigError(RaywaveError):
    """A configuration value is invalid."""
