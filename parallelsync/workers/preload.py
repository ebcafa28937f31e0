"""Imported once by the fork server that workers are forked from (see pool.py).

Importing this loads everything a worker needs (the drivers, numpy, the compiled transcoder:
~0.65 s of CPU together), so each forked worker starts warm instead of paying that again.
First, the server asks to die with the coordinator (lifeline.py): workers forked from it die with
it, so nothing the job started outlives a coordinator that was killed.
"""

from __future__ import annotations

from parallelsync.workers.lifeline import in_fork_server
from parallelsync.workers.worker import warm_up

in_fork_server()
warm_up()
