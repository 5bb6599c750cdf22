"""roundtrip: apps -> warehouse -> dbt -> back into apps. Shared plumbing for the CLIs."""

__version__ = "0.1.0"
