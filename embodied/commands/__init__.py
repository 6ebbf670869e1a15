"""The `embodied` subcommands, one module each: ``add_arguments(parser)`` and ``run(args) -> int``.

The top floor: a command parses its config (:mod:`embodied.config`), calls the
library below it and prints one summary line; bad input is one line, exit 2.
"""
