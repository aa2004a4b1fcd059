"""Errors a user can act on: the CLI prints their message as one sentence, without a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
