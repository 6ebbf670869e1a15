"""The `embodied` subcommands, one module each: ``add_arguments(parser)`` and ``run(args) -> int``.

The top floor: a command parses its config (:mod:`embodied.config`), calls the
library below it and prints one summary line; bad input is one line, exit 2.
"""

from contextlib import contextmanager


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads (0 leaves torch's setting), restoring it afterwards."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
