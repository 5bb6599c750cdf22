"""DuckDB extensions: installed from their packages, their signature checked once, at install."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from roundtrip.core import duckdb_extensions as ext

pytestmark = pytest.mark.fast


@pytest.fixture()
def extension_dir(tmp_path: Path) -> Path:
    target = tmp_path / "extensions"
    ext.install_extensions(("postgres",), target)
    return target


def test_install_checks_the_signature_once_and_records_the_files(extension_dir: Path) -> None:
    assert ext._verified(extension_dir)
    files = list(extension_dir.rglob("*.duckdb_extension"))
    assert [f.name for f in files] == ["postgres_scanner.duckdb_extension"]
    con = duckdb.connect(
        config={"extension_directory": str(extension_dir), "allow_unsigned_extensions": ext._verified(extension_dir)}
    )
    con.execute("load postgres")
    assert con.execute(
        "select loaded from duckdb_extensions() where extension_name = 'postgres_scanner'"
    ).fetchone() == (True,)


def test_a_changed_extension_file_is_checked_by_duckdb_again(extension_dir: Path, tmp_path: Path) -> None:
    (path,) = extension_dir.rglob("*.duckdb_extension")
    with path.open("ab") as f:  # tampered: one byte more
        f.write(b"\0")
    assert not ext._verified(extension_dir)
    con = duckdb.connect(config={"extension_directory": str(extension_dir)})
    with pytest.raises(duckdb.Error, match=r"(?i)signature|invalid|metadata"):
        con.execute("load postgres")


def test_an_unrecorded_directory_is_not_trusted(tmp_path: Path, extension_dir: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(extension_dir, copy)
    (copy / ext.VERIFIED).unlink()
    assert not ext._verified(copy)  # copied files have other inodes too


def test_another_duckdb_versions_folder_is_neither_loaded_nor_checked(extension_dir: Path) -> None:
    old = extension_dir / "v0.9.0" / "linux_amd64"
    old.mkdir(parents=True)
    (old / "postgres_scanner.duckdb_extension").write_bytes(b"an extension of another DuckDB")
    ext._verify(extension_dir)  # does not try to load the other version's file
    assert ext._verified(extension_dir)
    assert all(name.startswith(f"v{duckdb.__version__}/") for name in ext._fingerprints(extension_dir))
