"""Errors raised for bad or missing data: one message that says what is wrong and how to fix it."""


class DatasetError(ValueError):
    """A dataset is unreadable, inconsistent, or cannot be used as asked."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset id or path names nothing on disk."""
