"""The unmetered variant of ``bench/metering.py --gunicorn``: production's WSGI application, metering swapped out.

Only that benchmark starts it (``gunicorn bench.unmetered_wsgi``); nothing else imports it.
"""

from bench.metering import metering_switched_off
from config.wsgi import application

for _patch in metering_switched_off():
    _patch.start()

__all__ = ["application"]
