"""One error type for every external tool the project drives (linker, OpenCL compiler, RPC server).

Why: a missing or failing tool must reach the user as one message naming the tool and what to install or do,
never as a ``FileNotFoundError`` traceback from deep inside ``subprocess``; scripts catch this type and print it.
"""


class ExternalToolError(RuntimeError):
    """An external tool is missing or failed; the message names it, says what to install and carries its output."""
