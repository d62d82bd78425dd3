"""The error every ``migsafe`` command raises for a user mistake (a bad URL or file, an
unreachable server): one line on stderr, no traceback, passwords masked by the raiser."""


class CommandError(Exception):
    """A user-facing error: :func:`pytest_migsafe.cli.main.main` prints it as
    ``migsafe: <message>`` on stderr and returns exit code 2. The message is one line;
    the raiser masks any password in it."""
