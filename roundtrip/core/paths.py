"""Where the project's own files are. Where generated data goes is a setting
(``roundtrip.core.settings``: ``ROUNDTRIP_DATA_DIR`` and the paths under it)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = PROJECT_ROOT / "profiles"
