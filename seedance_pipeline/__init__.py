"""seedance-pipeline: Seedance 2.0 video generation at scale, as a Dagster code location."""
