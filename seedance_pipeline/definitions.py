"""The code location: every domain's definitions plus resources configured from the environment."""

from __future__ import annotations

import math
import os
from pathlib import Path

from dagster import Definitions, EnvVar

from .defs.catalog import definitions as catalog
from .defs.costs import definitions as costs
from .defs.generation import definitions as generation
from .defs.resources import EvoLinkResource, PipelineResource
from .seedance import DEFAULT_BASE_URL, DEFAULT_FILES_URL


def _env_number(name: str, cast: type = float, *, zero: bool = True):
    """The number in environment variable `name`, or None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    kind = "whole number" if cast is int else "number"
    try:
        number = cast(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a {kind}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        least = "at least 0" if zero else "above 0"
        raise ValueError(f"{name}={value!r} must be a finite {kind} {least}")
    return number


def resources_from_env(prompts: Path | None = None, media: Path | None = None) -> dict:
    """Resources as the environment configures them (CONTRACT.md, "Settings").

    `prompts` and `media` replace the catalogs under the data directory (`run --prompts`).
    """
    return {
        "evolink": EvoLinkResource(
            api_key=EnvVar("EVOLINK_API_KEY"),
            base_url=os.environ.get("EVOLINK_BASE_URL", DEFAULT_BASE_URL),
            files_url=os.environ.get("EVOLINK_FILES_URL", DEFAULT_FILES_URL),
            max_requests_per_second=_env_number("EVOLINK_MAX_REQUESTS_PER_SECOND", zero=False),
        ),
        "pipeline": PipelineResource(
            data_dir=os.environ.get("SEEDANCE_DATA_DIR", "data"),
            max_credits_per_partition=_env_number("SEEDANCE_MAX_CREDITS_PER_PARTITION"),
            max_resubmissions=_env_number("SEEDANCE_MAX_RESUBMISSIONS", int) or 0,
            s3_bucket=os.environ.get("SEEDANCE_S3_BUCKET") or None,
            s3_prefix=os.environ.get("SEEDANCE_S3_PREFIX", ""),
            prompts_path=str(prompts) if prompts else None,
            media_path=str(media) if media else None,
        ),
    }


defs = Definitions.merge(
    catalog.defs, generation.defs, costs.defs, Definitions(resources=resources_from_env())
)
