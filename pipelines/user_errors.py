"""Failures the command ends with their message and exit 2, no stack trace. This module
imports nothing, so catching them loads nothing that raises them."""


class UserError(Exception):
    """A failure the user can act on; its message says what is wrong and what to do."""
