"""Settings of the example: only what a project calling celeritas needs."""

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True

INSTALLED_APPS = [
    # Brings the `celeritas_follow` management command.
    "celeritas.django",
    "campaigns",
]
ROOT_URLCONF = "vashsender_example.urls"
# The example keeps no data of its own.
DATABASES: dict[str, dict[str, str]] = {}

# Where the coordinator listens, and the token to present (None: send none).
CELERITAS_URL = os.environ.get("CELERITAS_URL", "http://127.0.0.1:50051")
CELERITAS_TOKEN = os.environ.get("CELERITAS_TOKEN") or None
