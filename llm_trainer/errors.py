"""Errors that the CLI turns into one clear line and exit status 2."""


class UserError(Exception):
    """A mistake the user can fix (config, paths, data); shown without a traceback."""


class ConfigError(UserError):
    """The configuration is invalid; the message names the key path."""


class DataError(UserError):
    """The data cannot be used (missing source, no usable row, a bad row in strict mode)."""
