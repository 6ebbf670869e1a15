"""The one exception type for bad user input: the CLI prints its message as a single line."""


class UserError(ValueError):
    """Bad input (file, config, argument) with a message that says what is wrong and how to fix it."""
