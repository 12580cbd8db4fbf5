-- A second database for the pipeline's ledger (SEEDANCE_LEDGER_URL), beside Dagster's own.
CREATE DATABASE seedance OWNER dagster;
