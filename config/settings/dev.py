"""Development: `make run`. The embedded PostgreSQL and Redis set DATABASE_URL and REDIS_URL."""

import os

os.environ.setdefault("SECRET_KEY", "dev-only-insecure-secret-key-never-use-this-one-in-production")

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
