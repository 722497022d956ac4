"""Errors a user can cause. The CLI prints them as one line and exits non-zero; tracebacks are for our bugs."""


class ConvemergeError(Exception):
    """Base class: the message is one line naming the thing that was wrong and what to do."""


class DataError(ConvemergeError):
    """A dataset file is missing, unreadable, malformed or corrupt."""


class ChecksumError(DataError):
    """A file's digest does not match the published one. ``detail`` says how (expected vs got), without the
    advice of the message, for callers that give their own."""

    def __init__(self, message: str, *, detail: str | None = None):
        super().__init__(message)
        self.detail = detail if detail is not None else message


class ConfigError(ConvemergeError, ValueError):
    """A configuration value or combination of options is invalid."""


class GeometryError(ConfigError):
    """A model cannot take images of this size (e.g. an odd side under a stride-2 layer); padding may fix it."""


class DivergenceError(ConvemergeError):
    """Training produced a non-finite loss."""
