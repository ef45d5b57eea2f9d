"""S3-compatible object store: key layout, put/get/delete, listing, tags, presigned GETs for clients. The one
I/O path to the store: every call goes through this boto3 client (blocking; async callers go through
:class:`shared.transfer.ObjectTransfer`, which runs these in threads within a deadline, or
``asyncio.to_thread``). boto3 reads ``AWS_CA_BUNDLE`` and ``HTTP(S)_PROXY`` / ``NO_PROXY`` itself.
Why boto3 and not presigned URLs over aiohttp or aiobotocore: docs/decisions.md, "S3"."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import NotFoundError, PayloadTooLargeError, StoreUnavailableError, ValidationError
from shared.settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import TagTypeDef

T = TypeVar("T")
log = logging.getLogger(__name__)

ATTEMPTS = 3  # tries per store call, the first included (boto3's "standard" retry mode)
MAX_CONNECTIONS = 32  # the client's connection pool; shared.transfer runs as many calls at once
MAX_TAGS = 10  # S3's limit per object
FILE_CHUNK_BYTES = 1024 * 1024  # a download to a file is written in pieces of this size
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})


def attempt_timeout(settings: S3Settings) -> float:
    """One attempt's share of ``request_timeout_seconds``: the longest wait to connect, and for each read
    of the store's answer, so that every attempt of a call stalling still ends within the setting."""
    return settings.request_timeout_seconds / ATTEMPTS


def _session(settings: S3Settings) -> boto3.session.Session:
    """Keys from the settings, else boto3's usual chain (environment, config files, instance role)."""
    return boto3.session.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
    )


def _client(session: boto3.session.Session, endpoint_url: str | None, settings: S3Settings) -> S3Client:
    # Bounded by settings.request_timeout_seconds: each of the ATTEMPTS waits at most its share to connect
    # and for each read, so a store that stops answering fails the call within the setting plus boto3's
    # retry backoff (under a second, then under two). boto3 has no deadline for a whole call; async
    # callers (shared.transfer) hold theirs to the setting exactly.
    per_attempt = attempt_timeout(settings)
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=per_attempt,
        read_timeout=per_attempt,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
        max_pool_connections=MAX_CONNECTIONS,
        # botocore >= 1.36 computes a CRC32 of every PUT body (sent as a header the store verifies) and
        # validates one on GETs. SigV4 already hashes the body (SHA-256 over HTTP; TLS protects HTTPS), so
        # that was an extra pass over each image on both sides: checksum only where S3 requires one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)
    return client


def _unavailable(what: str, exc: Exception) -> StoreUnavailableError:
    # Clients see what failed; boto's text (endpoint URLs, bucket names, request ids) goes to the log only.
    log.warning("%s: %s", what, exc)
    return StoreUnavailableError(f"{what}; try again later")


def _not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


@dataclass(frozen=True)
class Listed:
    """One object of a listing: its key, version (ETag) and last-modified time."""

    key: str
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    content_type: str | None


class ObjectStore:
    """The one place that speaks S3. Raises :class:`StoreUnavailableError` when the store is unreachable."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        if settings.presigned_transfers is not None:
            log.warning(
                "VEIL_S3__PRESIGNED_TRANSFERS is ignored and will be removed: every store call goes "
                "through boto3 (docs/decisions.md, S3)"
            )
        session = _session(settings)
        public_endpoint = settings.public_endpoint_url or settings.endpoint_url
        self._s3 = _client(session, settings.endpoint_url, settings)
        # Presign against the endpoint clients can reach; signing is offline, so this costs nothing.
        self._presigner = _client(session, public_endpoint, settings)

    # -- key layout -------------------------------------------------------------------------------------
    def upload_key(self, job_id: str) -> str:
        return f"{self.settings.uploads_prefix}{job_id}"

    def result_key(self, job_id: str, extension: str) -> str:
        return f"{self.settings.results_prefix}{job_id}.{extension}"

    # -- operations -------------------------------------------------------------------------------------
    def create_bucket_if_missing(self, bucket: str) -> None:
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if not _not_found(exc):
                raise _unavailable("object store refused head-bucket", exc) from exc
            self._call(lambda: self._s3.create_bucket(Bucket=bucket))
        except BotoCoreError as exc:
            raise _unavailable("object store unreachable", exc) from exc

    def ensure_bucket(self) -> None:
        """Create Veil's bucket if needed and ask the store to expire results after a day."""
        self.create_bucket_if_missing(self.bucket)
        days = max(1, self.settings.result_ttl_seconds // 86400)
        # Some stores lack lifecycle rules; the worker's hourly sweep deletes expired results anyway.
        with contextlib.suppress(ClientError, BotoCoreError):
            self._s3.put_bucket_lifecycle_configuration(
                Bucket=self.bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "veil-results-expire",
                            "Filter": {"Prefix": self.settings.results_prefix},
                            "Status": "Enabled",
                            "Expiration": {"Days": days},
                        },
                        {
                            "ID": "veil-uploads-expire",
                            "Filter": {"Prefix": self.settings.uploads_prefix},
                            "Status": "Enabled",
                            "Expiration": {"Days": 1},
                        },
                    ]
                },
            )

    def ping(self) -> None:
        self._call(lambda: self._s3.head_bucket(Bucket=self.bucket))

    def put(self, key: str, body: bytes, content_type: str, bucket: str | None = None) -> None:
        self._call(
            lambda: self._s3.put_object(
                Bucket=bucket or self.bucket, Key=key, Body=body, ContentType=content_type
            )
        )

    def get(self, key: str, bucket: str | None = None, max_bytes: int | None = None) -> StoredObject:
        def fetch() -> StoredObject:
            response = self._s3.get_object(Bucket=bucket or self.bucket, Key=key)
            length = int(response.get("ContentLength", 0))
            if max_bytes is not None and length > max_bytes:
                response["Body"].close()
                raise PayloadTooLargeError(f"the object is {length} bytes, over the limit of {max_bytes}")
            return StoredObject(response["Body"].read(), response.get("ContentType"))

        return self._call(fetch)

    def download_file(
        self, key: str, path: Path, bucket: str | None = None, max_bytes: int | None = None
    ) -> int:
        """Stream an object into the file at ``path`` (videos: never whole in memory); returns its size.
        :class:`PayloadTooLargeError` for one over ``max_bytes``, before a byte is written."""

        def fetch() -> int:
            response = self._s3.get_object(Bucket=bucket or self.bucket, Key=key)
            body = response["Body"]
            length = int(response.get("ContentLength", 0))
            if max_bytes is not None and length > max_bytes:
                body.close()
                raise PayloadTooLargeError(f"the object is {length} bytes, over the limit of {max_bytes}")
            written = 0
            with path.open("wb") as handle:
                for chunk in body.iter_chunks(FILE_CHUNK_BYTES):
                    handle.write(chunk)
                    written += len(chunk)
            return written

        return self._call(fetch)

    def upload_file(self, key: str, path: Path, content_type: str, bucket: str | None = None) -> None:
        """Store the file at ``path`` (boto3's managed transfer: multipart for large files)."""
        try:
            self._call(
                lambda: self._s3.upload_file(
                    str(path), bucket or self.bucket, key, ExtraArgs={"ContentType": content_type}
                )
            )
        except S3UploadFailedError as exc:  # the managed transfer's own error, wrapping the store's
            raise _unavailable("object store refused the upload", exc) from exc

    def get_prefix(self, key: str, nbytes: int, bucket: str | None = None) -> bytes:
        """The first ``nbytes`` of an object (a ranged GET): enough to read an image header."""

        def fetch() -> bytes:
            response = self._s3.get_object(
                Bucket=bucket or self.bucket, Key=key, Range=f"bytes=0-{nbytes - 1}"
            )
            return response["Body"].read()

        return self._call(fetch)

    def head(self, key: str, bucket: str | None = None) -> dict[str, Any]:
        return dict(self._call(lambda: self._s3.head_object(Bucket=bucket or self.bucket, Key=key)))

    def exists(self, key: str, bucket: str | None = None) -> bool:
        try:
            self.head(key, bucket)
        except NotFoundError:
            return False
        return True

    def delete(self, key: str, bucket: str | None = None) -> None:
        self._call(lambda: self._s3.delete_object(Bucket=bucket or self.bucket, Key=key))

    def presign_get(self, key: str, expires_in: int) -> str:
        """A GET URL for clients, on ``public_endpoint_url`` (else the endpoint), valid ``expires_in`` s."""
        url: str = self._presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )
        return url

    def list_keys(
        self, bucket: str, prefix: str, limit: int, start_after: str | None = None
    ) -> tuple[list[str], bool]:
        """Up to ``limit`` keys under ``prefix`` in key order (after ``start_after``), and whether more
        were left out."""
        listed, more = self.list_objects(bucket, prefix, limit, start_after)
        return [item.key for item in listed], more

    def list_objects(
        self, bucket: str, prefix: str, limit: int, start_after: str | None = None
    ) -> tuple[list[Listed], bool]:
        """As :meth:`list_keys`, with each object's version (ETag) and last-modified time."""
        found: list[Listed] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            pages = paginator.paginate(
                Bucket=bucket,
                Prefix=prefix,
                StartAfter=start_after or "",
                PaginationConfig={"PageSize": min(limit + 1, 1000)},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if len(found) == limit:
                        return found, True
                    found.append(Listed(item["Key"], item["ETag"], item["LastModified"]))
        except ClientError as exc:
            if _not_found(exc):
                raise NotFoundError(f"bucket {bucket} not found") from exc
            raise _unavailable("object store listing failed", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("object store unreachable", exc) from exc
        return found, False

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        reply = self._call(lambda: self._s3.get_object_tagging(Bucket=bucket, Key=key))
        return {tag["Key"]: tag["Value"] for tag in reply.get("TagSet", [])}

    def tag(self, bucket: str, key: str, name: str, value: str) -> None:
        """Set one tag, keeping the object's others (S3 replaces the whole set; at most 10)."""
        tags = {**self.tags(bucket, key), name: value}
        if len(tags) > MAX_TAGS:
            raise ValidationError(f"the object already has {MAX_TAGS} tags; {name} cannot be added")
        tag_set: list[TagTypeDef] = [{"Key": k, "Value": v} for k, v in tags.items()]
        self._call(lambda: self._s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tag_set}))

    def delete_version(self, bucket: str, key: str, etag: str) -> bool:
        """Delete the object only if it is still the version with ``etag`` (S3's conditional delete):
        True once it is gone, False if a new upload replaced it meanwhile (that one is new work)."""

        def attempt() -> bool:
            try:
                self._s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) not in PRECONDITION_FAILED:
                    raise
                return False
            return True

        try:
            if self._call(attempt):
                return True
        except NotFoundError:
            return True
        # Replaced, or already gone: some stores answer a conditional delete of a missing key with 412.
        return not self.exists(key, bucket)

    def delete_older_than(self, prefix: str, age: timedelta, now: datetime) -> int:
        """Delete objects under ``prefix`` last modified before ``now - age``; returns how many."""
        cutoff = now - age
        deleted = 0
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                stale = [
                    {"Key": item["Key"]} for item in page.get("Contents", []) if item["LastModified"] < cutoff
                ]
                for item in stale:
                    self._s3.delete_object(Bucket=self.bucket, Key=item["Key"])
                deleted += len(stale)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("object store sweep failed", exc) from exc
        return deleted

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except ClientError as exc:
            if _not_found(exc):
                raise NotFoundError("object not found in the store") from exc
            raise _unavailable("object store error", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("object store unreachable", exc) from exc
