"""WSGI entry point (gunicorn catalogue.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
application = get_wsgi_application()

from catalogue.serving import prepare_for_requests  # noqa: E402 - needs the configured application

prepare_for_requests()
