"""Videos, tables and published media on S3 (`SEEDANCE_S3_BUCKET`, `SEEDANCE_S3_PREFIX`).

The boto3 client comes from dagster-aws's `S3Resource`, so the standard `AWS_*` variables
apply (`AWS_ENDPOINT_URL` for S3-compatible stores). One PUT, single or multipart, is atomic:
a reader sees the old object or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from .catalog import file_digest
from .media import MediaError, measure
from .publishing import PublishError
from .seedance import MediaFacts
from .storage import StoreError, StoreRefused, temporary_scratch, video_key
from .tables import concat, not_written, parquet_bytes, read_parquet, table_key

# Media are presigned as each request is sent; the API fetches them within minutes, or when
# the task leaves the vendor's queue.
PRESIGNED_URL_SECONDS = 48 * 3600
_MISSING = ("404", "NoSuchKey", "NotFound")
_DENIED = ("403", "AccessDenied", "Forbidden")
# A conditional PUT refused: the object changed (or another conditional PUT of it is under
# way) since its ETag was read.
_WRITTEN_MEANWHILE = ("412", "PreconditionFailed", "409", "ConditionalRequestConflict")
# Answers every later call would get too: the settings must change first.
_REFUSED = (
    "NoSuchBucket",
    "InvalidBucketName",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
)
# What each call needs of the credentials. Without s3:ListBucket, S3 answers a read of a key
# that does not exist with 403, not 404: a video deleted from the bucket looks refused.
_READS = "s3:GetObject, and s3:ListBucket so that S3 can say an object does not exist"
_NEEDS = {
    "HEAD": _READS,
    "GET": _READS,
    "download": _READS,
    "upload": "s3:PutObject",
    "PUT": "s3:PutObject",
    "LIST": "s3:ListBucket",
}
SETTINGS_HINT = "check SEEDANCE_S3_BUCKET, the AWS_* credentials and AWS_ENDPOINT_URL"
# Answers of an S3 throttling or failing, after boto's own retries: no setting is to blame.
_BUSY = (
    *("SlowDown", "Throttling", "ServiceUnavailable", "InternalError", "RequestTimeout"),
    *("BadGateway", "GatewayTimeout", "500", "502", "503", "504"),
)
BUSY_HINT = "S3 is throttling or failing: try again later"


class S3Error(StoreError):
    """An S3 call failed; the message names the object and the settings to check."""


class S3Refused(S3Error, StoreRefused):
    """S3 refuses the credentials, their permissions or the bucket: every call would fail."""


def s3_client() -> Any:
    """dagster-aws's S3 client, configured by the standard AWS_* variables, signing with SigV4
    (most regions refuse the SigV2 presigned URLs boto3 makes for us-east-1 by default)."""
    from dagster_aws.s3 import S3Resource  # here: importing dagster-aws costs every command 1.5 s

    client = S3Resource().get_client()
    client.meta.events.register(
        "choose-signer.s3.*", lambda **_: "s3v4", unique_id="seedance-pipeline-sigv4"
    )
    return client


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`.

    Raises:
        ValueError: `uri` is not of that form.
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise ValueError(f"{uri!r} is not of the form s3://bucket/key")
    return bucket, key


def _error_code(exc: Exception) -> str | None:
    """S3's error code. A dropped connection's error has `response`, None; a failed
    upload_file keeps only its message: "... (AccessDenied) when calling ..."."""
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
    if code is None and (said := re.search(r"\((\w+)\) when calling", str(exc))):
        code = said.group(1)
    return code


class S3Bucket:
    """Objects under `s3://<bucket>/<prefix>/`, addressed by keys relative to the prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def uri(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    @contextlib.contextmanager
    def _call(self, what: str, relative: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            code = _error_code(exc)
            denied = code in _DENIED
            if denied and what in _NEEDS:
                raise S3Refused(  # a HEAD's 403 has no body: a wrong key is refused alike
                    f"{self.uri(relative)}: {what} refused ({exc}); the credentials need "
                    f"{_NEEDS[what]} on bucket {self.bucket}, or are not the right ones: "
                    f"{SETTINGS_HINT}"
                ) from None
            lasting = code in _REFUSED or isinstance(exc, NoCredentialsError)
            hint = BUSY_HINT if code in _BUSY else SETTINGS_HINT
            raise (S3Refused if lasting else S3Error)(
                f"{self.uri(relative)}: {what} failed ({exc}); {hint}"
            ) from None

    def size(self, relative: str) -> int | None:
        """The object's size in bytes; None when there is none."""
        head = self._head(relative)
        return None if head is None else head["ContentLength"]

    def etag(self, relative: str) -> str | None:
        """The object's ETag (as `listing` gives it); None when there is none."""
        head = self._head(relative)
        return None if head is None else head["ETag"]

    def _head(self, relative: str) -> dict | None:
        with self._call("HEAD", relative):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise

    def upload(self, local: Path, relative: str) -> None:
        """Upload a file (multipart when large)."""
        with self._call("upload", relative):
            self.client.upload_file(str(local), self.bucket, self.key(relative))

    def download(self, relative: str, local: Path) -> None:
        with self._call("download", relative):
            self.client.download_file(self.bucket, self.key(relative), str(local))

    def put_bytes(self, relative: str, data: bytes) -> None:
        with self._call("PUT", relative):
            self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=data)

    def put_bytes_if(self, relative: str, data: bytes, etag: str | None) -> bool:
        """`put_bytes` if the object's ETag is still `etag` (None: there is no object yet);
        False, putting nothing, if another writer put it since (S3's conditional writes)."""
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        with self._call("PUT", relative):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self.key(relative), Body=data, **condition
                )
                return True
            except ClientError as exc:
                code = _error_code(exc)
                # A 404 to If-Match: deleted since. To If-None-Match it is not the object's
                # (S3 answers 412 or 409) but the endpoint's or the bucket's: a failure.
                if code in _WRITTEN_MEANWHILE or (etag is not None and code in _MISSING):
                    return False
                if code != "NotImplemented":
                    raise
        # A store without conditional writes (some S3-compatible ones): the ETag read again
        # just before an unconditional put, the best it allows.
        if self.etag(relative) != etag:
            return False
        self.put_bytes(relative, data)
        return True

    def get_bytes(self, relative: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        with self._call("GET", relative):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise
            return answer["Body"].read()

    def listing(self, relative_prefix: str) -> dict[str, tuple[str, float]]:
        """The ETag (its content's digest) and the time written (epoch seconds) of each object
        under `relative_prefix`, by its relative key."""
        start = len(self.key(""))
        with self._call("LIST", relative_prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(relative_prefix)
            )
            listed = (obj for page in pages for obj in page.get("Contents", []))
            return {
                obj["Key"][start:]: (obj["ETag"], obj["LastModified"].timestamp()) for obj in listed
            }

    def presign(self, relative: str) -> str:
        """A GET URL anyone can fetch for `PRESIGNED_URL_SECONDS`."""
        with self._call("presign", relative):
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.key(relative)},
                ExpiresIn=PRESIGNED_URL_SECONDS,
            )


class S3VideoStore:
    """Videos at `s3://<bucket>/<prefix>/videos/<partition>/<prompt_id>.mp4`."""

    def __init__(self, bucket: S3Bucket):
        self.bucket = bucket

    def scratch_path(self, partition: str, prompt_id: str) -> Path:
        return temporary_scratch(partition, prompt_id)

    def put(self, local_path: Path, partition: str, prompt_id: str) -> str:
        key = video_key(partition, prompt_id)
        self.bucket.upload(local_path, key)
        local_path.unlink()
        return key

    def uri(self, key: str) -> str:
        return self.bucket.uri(key)

    def stored_size(self, key: str) -> int | None:
        return self.bucket.size(key)


class S3TableStore:
    """Tables at `s3://<bucket>/<prefix>/warehouse/<asset>/<partition>.parquet`."""

    def __init__(self, bucket: S3Bucket):
        self.bucket = bucket
        self.location = bucket.uri("warehouse")

    def write(self, frame: pd.DataFrame, asset: str, partition: str) -> str:
        key = table_key(asset, partition)
        self.bucket.put_bytes(key, parquet_bytes(frame, asset))
        return self.bucket.uri(key)

    def write_if(
        self, frame: pd.DataFrame, asset: str, partition: str, version: str | None
    ) -> bool:
        return self.bucket.put_bytes_if(
            table_key(asset, partition), parquet_bytes(frame, asset), version
        )

    def read(self, asset: str, partition: str) -> pd.DataFrame:
        key = table_key(asset, partition)
        data = self.bucket.get_bytes(key)
        if data is None:
            raise not_written(self.bucket.uri(key), asset, partition)
        return read_parquet(data)

    def partitions(self, asset: str) -> list[str]:
        return sorted(self.versions(asset))

    def versions(self, asset: str) -> dict[str, tuple[str, float]]:
        listed = self.bucket.listing(f"warehouse/{asset}/").items()
        names = ((key.rsplit("/", 1)[1], version) for key, version in listed)
        return {n.removesuffix(".parquet"): v for n, v in names if n.endswith(".parquet")}

    def version(self, asset: str, partition: str) -> str | None:
        return self.bucket.etag(table_key(asset, partition))

    def read_all(self, asset: str) -> pd.DataFrame:
        frames = []
        for partition in self.partitions(asset):
            data = self.bucket.get_bytes(table_key(asset, partition))
            if data is not None:  # deleted since listed
                frames.append(read_parquet(data))
        return concat(frames)

    def write_file(self, name: str, data: bytes) -> str:
        self.bucket.put_bytes(f"warehouse/{name}", data)
        return self.bucket.uri(f"warehouse/{name}")


class S3Publisher:
    """Local media uploaded once to `<prefix>/media/<sha256>/<name>`, named by `s3://` URI
    (presigned when a request is sent: `publishing.sendable`)."""

    def __init__(self, bucket: S3Bucket):
        self.bucket = bucket

    def publish(self, path: Path) -> str:
        key = f"media/{file_digest(path)}/{path.name}"
        try:
            if self.bucket.size(key) != path.stat().st_size:  # none, or cut short
                self.bucket.upload(path, key)
        except S3Error as exc:
            raise PublishError(f"{path}: could not be published: {exc}") from None
        return self.bucket.uri(key)


@functools.lru_cache(maxsize=1)
def _client_for(aws_settings: frozenset[tuple[str, str]]) -> Any:
    return s3_client()


def _presigning_client() -> Any:
    """One client for as long as the AWS_* variables stay as they are."""
    return _client_for(frozenset((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def presign_uri(uri: str) -> str:
    """A GET URL anyone can fetch for `s3://bucket/key`, signed now by the AWS settings.

    Raises:
        PublishError: naming the URI and the settings to check.
    """
    try:
        bucket, key = parse_s3_uri(uri)
        return S3Bucket(_presigning_client(), bucket).presign(key)
    except (ValueError, S3Error) as exc:
        raise PublishError(f"{uri}: could not be presigned: {exc}") from None


class S3Media:
    """`s3://bucket/key` media of the catalog, measured from the object once."""

    def __init__(self, make_client: Callable[[], Any]):
        self._make_client = make_client
        self._known: dict[tuple[str, str], MediaFacts | MediaError] = {}

    @cached_property
    def client(self) -> Any:
        return self._make_client()

    def facts(self, uri: str, kind: str) -> MediaFacts:
        """What the object is, measured from its bytes.

        Raises:
            MediaError: the object cannot be read, or is not a `kind` file.
        """
        if (uri, kind) not in self._known:
            try:
                self._known[uri, kind] = self._measure(uri, kind)
            except MediaError as exc:
                self._known[uri, kind] = exc
        known = self._known[uri, kind]
        if isinstance(known, MediaError):
            raise known
        return known

    def _measure(self, uri: str, kind: str) -> MediaFacts:
        try:
            bucket_name, key = parse_s3_uri(uri)
        except ValueError as exc:
            raise MediaError(str(exc)) from None
        bucket = S3Bucket(self.client, bucket_name)
        with tempfile.TemporaryDirectory(prefix="seedance-media-") as tmp:
            local = Path(tmp) / Path(key).name
            try:
                bucket.download(key, local)
                return measure(local, kind)
            except S3Error as exc:
                raise MediaError(str(exc)) from None
            except MediaError as exc:
                raise MediaError(str(exc).replace(str(local), uri)) from None
