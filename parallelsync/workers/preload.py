"""Imported once by the fork server that workers are forked from (see pool.py).

Importing this loads everything a worker needs (the drivers, numpy, the compiled transcoder:
~0.65 s of CPU together), so each forked worker starts warm instead of paying that again.
"""

from __future__ import annotations

from parallelsync.workers.worker import warm_up

warm_up()
