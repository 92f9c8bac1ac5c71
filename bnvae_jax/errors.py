"""Errors that are the user's to fix: shown as one line, never as a traceback."""


class UserError(Exception):
    """A bad config, file or workdir; the message says what to change."""


class DataError(UserError):
    """A data file that cannot be read as a corpus."""


class ConfigError(UserError):
    """A config value or key that is not valid."""


class WorkdirError(UserError):
    """A workdir that holds a run this config cannot continue."""


class HostError(UserError):
    """Another host of a multi-host run failed; its own log says why."""
