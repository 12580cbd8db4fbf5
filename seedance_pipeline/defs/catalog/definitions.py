from dagster import Definitions

from .assets import media_catalog, prompt_catalog

defs = Definitions(assets=[prompt_catalog, media_catalog])
