"""tis-pipeline: the Trading Intelligence System as a Dagster data platform."""
