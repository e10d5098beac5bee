"""ASGI entry point."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")
application = get_asgi_application()

from catalogue.serving import prepare_for_requests  # noqa: E402 - needs the configured application

prepare_for_requests()
