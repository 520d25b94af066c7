"""Development: `make run`. The embedded PostgreSQL and Redis set DATABASE_URL and REDIS_URL."""

import os

os.environ.setdefault("SECRET_KEY", "dev-only-insecure-secret-key-never-use-this-one-in-production")

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

# Without FIELD_ENCRYPTION_KEYS, a key derived from SECRET_KEY (prod.py refuses to start without one).
FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or [derived_fernet_key(SECRET_KEY)]  # noqa: F405

# Tenant-supplied URLs may reach the loopback demo servers (apps.core.outbound).
OUTBOUND_ALLOWED_NETWORKS = env.list("OUTBOUND_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
