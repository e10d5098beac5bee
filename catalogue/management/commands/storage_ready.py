"""manage.py storage_ready: make the configured storage ready to hold files, and say which it is.

Local disk: MEDIA_ROOT is created. S3 (MORPHOMASS_STORAGE=s3): the bucket is created if it does
not exist (MinIO in docker/compose.yml starts empty), and a small object is written, read back
and deleted, so a wrong endpoint, key or permission fails here, at start, with the reason.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError

from catalogue.services import object_store


class Command(BaseCommand):
    help = "Create MEDIA_ROOT or the S3 bucket if missing, and check a file can be written, read and deleted."

    def handle(self, *args, **options) -> None:  # noqa: ARG002 - Django's signature
        if object_store.has_local_paths():
            where = f"local disk: {settings.MEDIA_ROOT}"
            settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
        else:
            where = f"S3 bucket {default_storage.bucket_name} at {getattr(settings, 'AWS_S3_ENDPOINT_URL', None) or 'AWS'}"
            try:
                created = object_store.ensure_bucket()
            except Exception as exc:
                raise CommandError(f"{where}: {exc}") from exc
            where += " (created)" if created else ""
        probe = f"healthz/{uuid.uuid4().hex}.txt"
        try:
            name = default_storage.save(probe, ContentFile(b"ok"))
            with default_storage.open(name, "rb") as fh:
                assert fh.read() == b"ok"
            default_storage.delete(name)
        except Exception as exc:
            raise CommandError(f"{where}: a file could not be written, read and deleted: {exc}") from exc
        self.stdout.write(f"storage ready: {where}")
