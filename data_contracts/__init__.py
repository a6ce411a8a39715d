"""Canonical schema, source adapters, quality suites. Knows nothing of Dagster."""
