"""The exit codes of every `weir` command, in one table (README "Exit codes").

Why it exists: each entry point used to choose its own numbers (usage errors were 3 in the
client commands and 2 elsewhere, where 2 also meant a model that cannot be served and, in the
client, a timeout). A CI pipeline branches on these numbers, so they mean one thing everywhere:

- 0: done (served and stopped cleanly, promoted, fetched, applied).
- 1: the job failed or was refused: rolled back, failed, a model that cannot be served or
  fetched, a port in use, a request Weir refused.
- 2: a wait ran out (`--wait`/`--timeout`, a request with no answer).
- 3: usage: bad arguments or values, an unknown command, a missing file, an object that is
  not there, a cluster or `weir run` that cannot be reached.
- 130: interrupted (Ctrl-C).
- 141: the reader of the output went away (`weir get | head -0`), as for SIGPIPE.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final, NoReturn

OK: Final = 0
FAILED: Final = 1
TIMED_OUT: Final = 2
USAGE: Final = 3
INTERRUPTED: Final = 130
READER_GONE: Final = 141


def exit_3_on_usage_errors(parser: argparse.ArgumentParser) -> None:
    """argparse exits 2 on bad arguments; Weir's usage errors are 3 (2 means timed out)."""

    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(USAGE, f"{parser.prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]
