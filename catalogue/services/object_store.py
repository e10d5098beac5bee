"""Byte ranges and in-place objects on S3, which Django's storage API does not give.

Django's storage API reads whole files and gives each new file a fresh name. The image
store needs two things it lacks: reading a byte range of an object (a preview is one row of
a shard; django-storages' S3 file downloads the whole object on its first read), and
replacing one of its own shard objects in place (a shard's rows are rewritten, as the local
store rewrites rows of its file). Every other file keeps Django's rules: saved under a new
name, never overwritten.
"""

from __future__ import annotations

import os
import threading
import weakref

from django.core.files.storage import Storage, default_storage


def has_local_paths(storage: Storage | None = None) -> bool:
    """Whether the storage keeps files at local paths (a local or shared filesystem)."""
    try:
        (storage or default_storage).path("")
    except NotImplementedError:
        return False
    return True


#: One boto3 client per storage, shared by every thread: clients are thread-safe, and making one (what
#: django-storages does per thread) costs about 200 ms, which a preview read in a new thread paid each time.
_CLIENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CLIENTS_LOCK = threading.Lock()


def _s3(storage: Storage, name: str) -> tuple:
    """The storage's shared boto3 client, and the bucket and key of ``name`` on it (the key with the
    storage's location prefix)."""
    key = storage._normalize_name(name)  # noqa: SLF001 - django-storages' key for a name
    with _CLIENTS_LOCK:
        pid, client = _CLIENTS.get(storage, (None, None))
        if client is None or pid != os.getpid():  # by process: a prefork child takes its own from the storage
            client = storage.connection.meta.client
            _CLIENTS[storage] = (os.getpid(), client)
    return client, {"Bucket": storage.bucket_name, "Key": key}


def read_range(name: str, start: int, length: int, storage: Storage | None = None) -> bytes:
    """``length`` bytes of ``name`` from ``start`` on an S3 storage (fewer past its end; empty when it does not exist)."""
    from botocore.exceptions import ClientError

    if length <= 0:
        return b""
    client, where = _s3(storage or default_storage, name)
    try:
        reply = client.get_object(**where, Range=f"bytes={start}-{start + length - 1}")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "InvalidRange"):
            return b""
        raise
    return reply["Body"].read()


def read_whole(name: str, storage: Storage | None = None) -> bytes:
    """The whole of ``name`` on an S3 storage (empty when it does not exist)."""
    from botocore.exceptions import ClientError

    client, where = _s3(storage or default_storage, name)
    try:
        return client.get_object(**where)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return b""
        raise


def replace(name: str, data: bytes, storage: Storage | None = None) -> None:
    """Write ``data`` as ``name`` on an S3 storage, replacing what was there (a PUT is whole or nothing).
    For the image store's own shards only."""
    client, where = _s3(storage or default_storage, name)
    client.put_object(**where, Body=data)


def delete_many(names: list[str], storage: Storage | None = None) -> None:
    """Delete ``names`` (those that exist), in batches of 1,000 on S3."""
    storage = storage or default_storage
    if has_local_paths(storage):
        for name in names:
            if storage.exists(name):
                storage.delete(name)
        return
    for start in range(0, len(names), 1000):
        keys = [{"Key": _s3(storage, n)[1]["Key"]} for n in names[start : start + 1000]]
        if keys:
            _s3(storage, names[start])[0].delete_objects(Bucket=storage.bucket_name, Delete={"Objects": keys, "Quiet": True})


def ensure_bucket(storage: Storage | None = None) -> bool:
    """Create the S3 storage's bucket if it does not exist; returns whether it did."""
    from botocore.exceptions import ClientError

    storage = storage or default_storage
    client = _s3(storage, "")[0]
    try:
        client.head_bucket(Bucket=storage.bucket_name)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
    client.create_bucket(Bucket=storage.bucket_name)
    return True


def signed_link(storage: Storage, name: str, parameters: dict[str, str]) -> str:
    """A link to ``name`` for a client outside: the storage's own, or one signed for
    ``AWS_S3_PUBLIC_ENDPOINT_URL`` where the bucket's address inside differs from the one outside
    (MinIO at http://minio:9000 for the workers, http://localhost:9000 for a browser)."""
    from django.conf import settings

    public = getattr(settings, "AWS_S3_PUBLIC_ENDPOINT_URL", "")
    if not public:
        return storage.url(name, parameters=parameters)
    params = {"Bucket": storage.bucket_name, "Key": _s3(storage, name)[1]["Key"], **parameters}
    return _public_client(storage, public).generate_presigned_url(
        "get_object", Params=params, ExpiresIn=storage.querystring_expire
    )


_PUBLIC_CLIENTS: dict[tuple[int, str], object] = {}


def _public_client(storage: Storage, endpoint: str):
    """A client that signs for ``endpoint``, made once per process and endpoint (making one costs about 200 ms)."""
    key = (os.getpid(), endpoint)
    with _CLIENTS_LOCK:
        client = _PUBLIC_CLIENTS.get(key)
        if client is None:
            import boto3

            client = _PUBLIC_CLIENTS[key] = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=storage.region_name,
                aws_access_key_id=storage.access_key or None,
                aws_secret_access_key=storage.secret_key or None,
                config=storage.client_config,
            )
    return client
