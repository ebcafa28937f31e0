"""Imported once by the fork server that workers are forked from (see pool.py).

Importing this loads everything a worker needs (the drivers, numpy, the compiled transcoder:
~0.65 s of CPU together), so each forked worker starts warm instead of paying that again.
First, the server asks to die with the coordinator (lifeline.py): workers forked from it die with
it, so nothing the job started outlives a coordinator that was killed.

The package's log records are dropped while this imports: the fork server never ran the CLI,
so a fallback warning here (the compiled transcoder not loading) would be bare text in a
`--log-format json` stream, and it would repeat what the coordinator, which imported the same
install, has said.
Workers configure logging from their WorkerSetup (logs.py) and report their own from then on.
"""

from __future__ import annotations

import logging

# A handler of ours swallows the records; without any, Python's last resort would print them.
_logger, _quiet = logging.getLogger("parallelsync"), logging.NullHandler()
_logger.addHandler(_quiet)
_logger.propagate = False
try:
    from parallelsync.workers.lifeline import in_fork_server
    from parallelsync.workers.worker import warm_up

    in_fork_server()
    warm_up()
finally:
    _logger.removeHandler(_quiet)
    _logger.propagate = True
