"""Deterministic sample data for the marketplace: users, catalog, order and click events."""

from roundtrip.dev.sample_data.generate import GenerationReport, generate
from roundtrip.dev.sample_data.model import DefectRates, SampleConfig

__all__ = ["DefectRates", "GenerationReport", "SampleConfig", "generate"]
