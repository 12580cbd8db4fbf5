"""Resources shared by every domain: the EvoLink API and the pipeline's own settings."""

from pathlib import Path

import httpx
from dagster import ConfigurableResource
from pydantic import Field

from ..catalog import find_catalog
from ..ledger import Ledger, ledger_url
from ..planning import MediaFactsCache
from ..publishing import MediaPublisher, VendorUploadPublisher
from ..s3 import S3Bucket, S3Media, S3Publisher, S3TableStore, S3VideoStore, s3_client
from ..seedance import DEFAULT_BASE_URL, DEFAULT_FILES_URL, AsyncClient, Client, RetryPolicy
from ..storage import LocalVideoStore, VideoStore
from ..tables import LocalTableStore, TableStore

# Each resubmission is another task: more than this is a typo, and the ledger's attempt
# numbers are 32-bit on PostgreSQL.
MAX_RESUBMISSIONS = 10

# Polls from a sensor tick must stay far inside Dagster's 60 s tick limit.
POLL_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
POLL_RETRY = RetryPolicy(max_attempts=2, base_delay=0.5, max_total_wait=3.0)


class EvoLinkResource(ConfigurableResource):
    """The EvoLink API (`EVOLINK_API_KEY`, `EVOLINK_BASE_URL`, `EVOLINK_FILES_URL`)."""

    api_key: str = Field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    files_url: str = DEFAULT_FILES_URL
    # Backoff of the blocking client (creates, uploads, downloads) on 429/5xx/refused
    # connections: first delay, and total sleep before a call gives up.
    retry_base_delay_seconds: float = 1.0
    max_retry_wait_seconds: float = 180.0
    # A cap on this process's creates and, apart, its queries per second
    # (`EVOLINK_MAX_REQUESTS_PER_SECOND`). None: paced by what the API's 429s teach.
    max_requests_per_second: float | None = None

    def client(self) -> Client:
        retry = RetryPolicy(
            base_delay=self.retry_base_delay_seconds,
            max_delay=min(60.0, self.max_retry_wait_seconds),
            max_total_wait=self.max_retry_wait_seconds,
        )
        return Client(
            self.api_key,
            base_url=self.base_url,
            files_url=self.files_url,
            retry=retry,
            max_requests_per_second=self.max_requests_per_second,
        )

    def poll_client(self) -> Client:
        """For polls: short timeouts and few retries, so that a poll round ends in time."""
        return Client(self.api_key, **self._poll_options())

    def async_client(self) -> AsyncClient:
        """As `poll_client`, for the callback receiver's event loop."""
        return AsyncClient(self.api_key, **self._poll_options())

    def _poll_options(self) -> dict:
        return {
            "base_url": self.base_url,
            "files_url": self.files_url,
            "timeout": POLL_TIMEOUT,
            "retry": POLL_RETRY,
            "max_requests_per_second": self.max_requests_per_second,
        }


class PipelineResource(ConfigurableResource):
    """Where catalogs, tables, videos and state live (`SEEDANCE_DATA_DIR`, `SEEDANCE_S3_*`),
    and the budget."""

    data_dir: str = "data"
    prompts_path: str | None = None
    media_path: str | None = None
    max_credits_per_partition: float | None = None
    # Opt-in: resubmit a task that failed with a transient vendor error up to this many times.
    max_resubmissions: int = Field(default=0, ge=0, le=MAX_RESUBMISSIONS)
    # With a bucket, videos, tables and published media live under s3://<bucket>/<prefix>/.
    s3_bucket: str | None = None
    s3_prefix: str = ""

    @property
    def max_attempts(self) -> int:
        return 1 + self.max_resubmissions

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    def prompts_file(self) -> Path:
        return (
            Path(self.prompts_path)
            if self.prompts_path
            else find_catalog(self.root / "catalog", "prompts")
        )

    def media_file(self) -> Path:
        return (
            Path(self.media_path)
            if self.media_path
            else find_catalog(self.root / "catalog", "media")
        )

    def ledger(self) -> Ledger:
        """`SEEDANCE_LEDGER_URL`, else the SQLite file under the data directory."""
        return Ledger(ledger_url(self.root))

    def _bucket(self) -> S3Bucket | None:
        return S3Bucket(s3_client(), self.s3_bucket, self.s3_prefix) if self.s3_bucket else None

    def videos(self) -> VideoStore:
        bucket = self._bucket()
        return S3VideoStore(bucket) if bucket else LocalVideoStore(self.root)

    def tables(self) -> TableStore:
        bucket = self._bucket()
        return S3TableStore(bucket) if bucket else LocalTableStore(self.root)

    def earlier_tables(self) -> TableStore | None:
        """With S3, the data directory's warehouse: where tables went before S3 was set."""
        return LocalTableStore(self.root) if self.s3_bucket else None

    def publisher(self, client: Client) -> MediaPublisher:
        """S3 presigned URLs with a bucket, else the vendor's file upload."""
        bucket = self._bucket()
        return S3Publisher(bucket) if bucket else VendorUploadPublisher(client, self.ledger())

    def media_facts(self) -> MediaFactsCache:
        """Measures catalog media: local files, and `s3://` objects through the AWS settings."""
        return MediaFactsCache(self.root, S3Media(s3_client))
