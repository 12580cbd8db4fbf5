"""The code location: every domain's definitions plus resources configured from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, EnvVar, definitions

from .defs.catalog import definitions as catalog
from .defs.costs import definitions as costs
from .defs.generation import definitions as generation
from .defs.resources import MAX_RESUBMISSIONS, EvoLinkResource, PipelineResource
from .ledger import ledger_url, safe_url
from .ledger.leases import lease_seconds
from .seedance import DEFAULT_BASE_URL, DEFAULT_FILES_URL
from .settings import env_api_url, env_number
from .videos import max_video_bytes


def resources_from_env(prompts: Path | None = None, media: Path | None = None) -> dict:
    """Resources as the environment configures them (README, "Settings").

    `prompts` and `media` replace the catalogs under the data directory (`run --prompts`).

    Raises:
        SettingError: a setting is malformed.
    """
    data = os.environ.get("SEEDANCE_DATA_DIR", "data")
    # Read deep in a run, after tasks were paid for: checked here, before anything is sent.
    max_video_bytes()
    lease_seconds()
    safe_url(ledger_url(data))  # a ledger URL of another kind of database
    return {
        "evolink": EvoLinkResource(
            api_key=EnvVar("EVOLINK_API_KEY"),
            base_url=env_api_url("EVOLINK_BASE_URL", DEFAULT_BASE_URL),
            files_url=env_api_url("EVOLINK_FILES_URL", DEFAULT_FILES_URL),
            max_requests_per_second=env_number("EVOLINK_MAX_REQUESTS_PER_SECOND", zero=False),
        ),
        "pipeline": PipelineResource(
            data_dir=data,
            max_credits_per_partition=env_number("SEEDANCE_MAX_CREDITS_PER_PARTITION"),
            max_resubmissions=env_number("SEEDANCE_MAX_RESUBMISSIONS", int, most=MAX_RESUBMISSIONS)
            or 0,
            s3_bucket=os.environ.get("SEEDANCE_S3_BUCKET") or None,
            s3_prefix=os.environ.get("SEEDANCE_S3_PREFIX", ""),
            prompts_path=str(prompts) if prompts else None,
            media_path=str(media) if media else None,
        ),
    }


# Every domain's assets, sensors and schedules, without resources (which read settings).
DOMAINS = Definitions.merge(catalog.defs, generation.defs, costs.defs)


@definitions
def defs() -> Definitions:
    """Built when Dagster loads the code location, so importing the package reads no setting."""
    return Definitions.merge(DOMAINS, Definitions(resources=resources_from_env()))
