"""MorphoMass catalogue service: Django project, data model, services and Celery app."""

from catalogue.celery import app as celery_app

__all__ = ["celery_app"]
