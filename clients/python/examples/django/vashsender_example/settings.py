"""Settings of the example: what a project calling celeritas and running its own tasks needs."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True

INSTALLED_APPS = [
    # Brings the `celeritas_worker` and `celeritas_follow` management commands.
    "celeritas.django",
    "campaigns",
]
ROOT_URLCONF = "vashsender_example.urls"
# The campaigns' recipients, which the project's tasks read and write. The tests point the
# workers they start at the test database with EXAMPLE_DATABASE.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DATABASE") or BASE_DIR / "db.sqlite3",
        # A file, not memory, so that worker processes see what the tests write.
        "TEST": {"NAME": BASE_DIR / "test-db.sqlite3"},
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Where the coordinator listens, and the token to present (None: send none).
CELERITAS_URL = os.environ.get("CELERITAS_URL", "http://127.0.0.1:50051")
CELERITAS_TOKEN = os.environ.get("CELERITAS_TOKEN") or None
