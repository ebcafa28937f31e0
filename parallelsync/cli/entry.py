"""The console script's entry point: the log format is set from the command line before the
package's modules load, because loading them may already warn (the compiled transcoder missing:
transcode/impl.py), and under `--log-format json` that warning must be a JSON event too."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from parallelsync import logs


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logs.configure("json" if logs.json_requested(args, os.environ) else "text")
    from parallelsync.cli.main import main as run  # after configure: see the docstring

    return run(args)
