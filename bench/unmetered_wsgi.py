"""The unmetered variant of ``bench/metering.py --http``: production's WSGI application, metering swapped out.

Only that benchmark serves it (``deploy.web``'s command with ``bench.unmetered_wsgi:application``).
"""

from bench.metering import metering_switched_off
from config.wsgi import application

for _patch in metering_switched_off():
    _patch.start()

__all__ = ["application"]
