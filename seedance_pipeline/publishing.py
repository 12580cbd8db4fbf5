"""Making local media files reachable by the API: a URL it can fetch for each file.

Without S3, through the vendor's file upload service (images only at the real vendor; the
emulator takes all three kinds); with S3, as `s3://` URIs that are presigned GET URLs only in
the request on the wire (`s3.py`): a presigned URL carries the AWS key's id (and, with
temporary credentials, the session token), and expires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from .catalog import file_digest
from .ledger import Ledger
from .seedance import Client, SeedanceError
from .seedance._rules import URL_FIELDS

# Vendor uploads expire after 72 hours; reuse a published URL for at most 48.
PUBLISHED_URL_MAX_AGE = 48 * 3600


class PublishError(RuntimeError):
    """A local media file could not be made reachable by the API."""


class MediaPublisher(Protocol):
    def publish(self, path: Path) -> str:
        """A URL the API can fetch for the local file `path`.

        Raises:
            PublishError: naming the file and the setting that would fix it.
        """


class VendorUploadPublisher:
    """Media published through the vendor's files API, each file once per 48 hours."""

    def __init__(self, client: Client, ledger: Ledger):
        self.client = client
        self.ledger = ledger

    def publish(self, path: Path) -> str:
        digest = file_digest(path)
        host = self.client.files_url
        url = self.ledger.published_url(digest, host, PUBLISHED_URL_MAX_AGE)
        if url is None:
            try:
                url = self.client.upload_file(path).file_url
            except SeedanceError as exc:
                raise PublishError(
                    f"{path}: could not be published through the files API at {host} ({exc}); "
                    "check EVOLINK_API_KEY and EVOLINK_FILES_URL, set SEEDANCE_S3_BUCKET to "
                    "publish through S3 (the vendor's upload takes images only), or give this "
                    "media an https:// uri in the media catalog"
                ) from None
            self.ledger.record_published(digest, host, url)
        return url


def sendable(body: dict[str, Any]) -> dict[str, Any]:
    """`body` as the API is sent it: each `s3://` media URI presigned now.

    Raises:
        PublishError: a URI could not be presigned (the AWS settings).
    """
    s3 = [
        name
        for name in URL_FIELDS.values()
        if any(u.startswith("s3://") for u in body.get(name, ()))
    ]
    if not s3:
        return body
    from .s3 import presign_uri  # here: boto3 only when media live in S3

    return body | {
        name: [presign_uri(u) if u.startswith("s3://") else u for u in body[name]] for name in s3
    }
