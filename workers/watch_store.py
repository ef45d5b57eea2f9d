"""The store calls a watched prefix needs beyond :class:`shared.storage.ObjectStore`'s: a listing with each
object's version (ETag, last-modified), tags, and a delete only of the version that was blurred.

A subclass, so it speaks S3 through the same configured boto3 client code and error mapping (blocking
calls: run them in a thread)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from shared.errors import NotFoundError, ValidationError
from shared.storage import ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import TagTypeDef

MAX_TAGS = 10  # S3's limit per object
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})


@dataclass(frozen=True)
class Listed:
    key: str
    etag: str
    last_modified: datetime


class WatchStore(ObjectStore):
    def list_objects(
        self, bucket: str, prefix: str, limit: int, start_after: str | None = None
    ) -> tuple[list[Listed], bool]:
        """Up to ``limit`` objects under ``prefix`` in key order (after ``start_after``), and whether more
        were left out."""
        found: list[Listed] = []
        paginator = self._s3.get_paginator("list_objects_v2")

        def walk() -> bool:
            pages = paginator.paginate(
                Bucket=bucket,
                Prefix=prefix,
                StartAfter=start_after or "",
                PaginationConfig={"PageSize": min(limit + 1, 1000)},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if len(found) == limit:
                        return True
                    found.append(Listed(item["Key"], item["ETag"], item["LastModified"]))
            return False

        more = self._call(walk)
        return found, more

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
