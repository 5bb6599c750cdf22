"""Loaders: SQLite, SQL databases and event files into the warehouse."""
