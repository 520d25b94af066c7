"""Tests: real PostgreSQL and real Redis, as `make test` provides them."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-insecure-secret-key-at-least-fifty-characters-long")
os.environ.setdefault("BASE_DOMAIN", "localhost")

from .base import *  # noqa: F403
from .base import env

DEBUG = False
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.locmem.EmailBackend")
# Argon2 stays the hasher, with the cheapest parameters, so tests exercise the
# production code path without paying for its cost on every password.
PASSWORD_HASHERS = ["tests.hashers.FastArgon2PasswordHasher"]
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True

# One id per test run, inherited by the worker and server processes the tests
# start, keeps this run's Redis keys and Celery queue apart from any other's.
TEST_RUN_ID = os.environ.setdefault("HYDRONET_TEST_RUN_ID", os.urandom(4).hex())
CACHE_KEY_PREFIX = f"hntest-{TEST_RUN_ID}"
CACHES["default"]["KEY_PREFIX"] = CACHE_KEY_PREFIX  # noqa: F405
CACHES["platform"]["KEY_PREFIX"] = f"{CACHE_KEY_PREFIX}:platform"  # noqa: F405
CELERY_TASK_DEFAULT_QUEUE = f"hntest-{TEST_RUN_ID}"
SIGNUP_RATE_LIMIT = env("SIGNUP_RATE_LIMIT", default="1000/m")
# Off in tests unless a test's server asks: the test client never closes a streamed response nobody read, so
# the places of one test's unread streams would refuse a later test's requests.
TENANT_MAX_IN_FLIGHT = env.int("TENANT_MAX_IN_FLIGHT", default=0)
if env("EMAIL_FILE_PATH", default=""):
    EMAIL_FILE_PATH = env("EMAIL_FILE_PATH")

# Without FIELD_ENCRYPTION_KEYS, a key derived from SECRET_KEY (prod.py refuses to start without one).
FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or [derived_fernet_key(SECRET_KEY)]  # noqa: F405

# Tenant-supplied URLs may reach the loopback demo servers (apps.core.outbound).
OUTBOUND_ALLOWED_NETWORKS = env.list("OUTBOUND_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
