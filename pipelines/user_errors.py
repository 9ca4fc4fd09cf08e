"""The failures a user can act on: each message says what is wrong and what to do.

The command line ends any of them with that message and exit 2, no stack trace. A module of
its own, importing nothing, so the command can catch them without loading what raises them.
"""


class UserError(Exception):
    """A failure the user can act on; its message is all they need to see."""
