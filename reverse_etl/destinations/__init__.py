"""Destinations of reverse syncs: one module each, behind ``Destination``."""
