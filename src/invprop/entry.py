"""The ``invprop`` command's entry point: loads the command line, and says one line, not a traceback, when Ctrl-C
arrives while it loads (importing torch takes seconds)."""

from __future__ import annotations

import sys
from typing import Sequence

#: The exit code of a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (:func:`invprop.cli.main`) on ``argv`` (default: ``sys.argv[1:]``)."""
    try:
        from invprop.cli import main as command_line
    except KeyboardInterrupt:
        print("invprop: interrupted while starting; nothing was done", file=sys.stderr)
        return EXIT_INTERRUPTED
    return command_line(None if argv is None else list(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
