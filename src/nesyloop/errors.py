"""Errors a user can act on: each carries a one-line message naming the file, line or field."""


class NesyloopError(Exception):
    """A user-facing error; the CLI prints ``str(err)`` on one line and exits non-zero."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(NesyloopError):
    """A config file is missing, malformed, or has an unknown/wrong-typed key."""


class DataError(NesyloopError):
    """An input data file is malformed (names the file and line)."""
