"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class InvpropError(Exception):
    """Base class for errors caused by input (settings, files, data) rather than by a bug."""


class ConfigError(InvpropError, ValueError):
    """An invalid setting."""


class DataError(InvpropError):
    """A dataset that cannot be found or read."""


class CheckpointError(InvpropError):
    """A checkpoint or run directory that cannot be used."""
