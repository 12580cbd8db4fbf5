from dagster import Definitions

from .assets import generation_costs

defs = Definitions(assets=[generation_costs])
