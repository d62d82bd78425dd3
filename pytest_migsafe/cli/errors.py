"""The error every ``migsafe`` command raises for a user mistake."""


class CommandError(Exception):
    """A user-facing error: printed as ``migsafe: <message>``, exit code 2."""
