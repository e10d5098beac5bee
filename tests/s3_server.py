"""An S3 server of the tests' own: moto's server mode on a free port of 127.0.0.1 (no MinIO on PyPI).

Real HTTP, real boto3 and django-storages on top: what the service does against any S3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3

from tests.private_services import _wait_for_port, free_port

REGION = "us-east-1"
KEYS = {"AWS_ACCESS_KEY_ID": "morphomass-test", "AWS_SECRET_ACCESS_KEY": "morphomass-test-secret"}


class S3Server:
    """``moto_server`` on a free port; each :meth:`bucket` is a new, empty bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        program = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(program), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **KEYS},
        )
        _wait_for_port(self.port, up=True)

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, **_lower(KEYS))

    def bucket(self) -> str:
        name = f"morphomass-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def environment(self, bucket: str) -> dict[str, str]:
        """What a process (a worker, the web app) needs to use ``bucket`` as its storage."""
        return {
            "MORPHOMASS_STORAGE": "s3",
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_S3_REGION_NAME": REGION,
            **KEYS,
        }

    def storages_setting(self, bucket: str) -> dict:
        """Django's STORAGES with ``bucket`` as the default storage (for a test's settings)."""
        options = {
            "bucket_name": bucket,
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "access_key": KEYS["AWS_ACCESS_KEY_ID"],
            "secret_key": KEYS["AWS_SECRET_ACCESS_KEY"],
            "file_overwrite": False,
            "default_acl": None,
        }
        return {
            "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _lower(keys: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": keys["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": keys["AWS_SECRET_ACCESS_KEY"]}
