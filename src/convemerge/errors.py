"""Errors a user can cause. The CLI prints them as one line and exits non-zero; tracebacks are for our bugs."""


class ConvemergeError(Exception):
    """Base class: the message is one line naming the thing that was wrong and what to do."""


class DataError(ConvemergeError):
    """A dataset file is missing, unreadable, malformed or corrupt."""


class ChecksumError(DataError):
    """A file's digest does not match the published one."""


class ConfigError(ConvemergeError, ValueError):
    """A configuration value or combination of options is invalid."""


class DivergenceError(ConvemergeError):
    """Training produced a non-finite loss."""
