"""One line of an exception's message for a one-line CLI error: TVM and torch messages run to pages."""
from __future__ import annotations


def error_line(error: BaseException, *, last: bool = False) -> str:
    """The first non-blank line of ``error`` (``last``: the last one, where TVM's runtime puts the cause);
    the exception's type name when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if last else lines[0]
