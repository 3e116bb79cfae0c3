"""GraphiQL's assets: the page loads nothing from a CDN, says how to fetch what is missing, and
provisioning refuses a tarball whose SHA-256 is not the pinned one."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from api.pages.assets import CDN, LOCAL_PREFIX, PACKAGES, graphiql_html, missing, served_files
from api.pages.routes import render_graphiql
from graph.errors import Unavailable
from graph.settings import Settings
from personas.local.web_assets import unpack


def tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_the_page_loads_every_script_from_this_api() -> None:
    html = graphiql_html()
    assert CDN not in html and "https://" not in html
    for package in PACKAGES:
        for name in package.files:
            assert f'"{LOCAL_PREFIX}{package.spec}/{name}"' in html


def test_missing_assets_get_a_page_saying_how_to_fetch_them(tmp_path: Path) -> None:
    response = render_graphiql(Settings(cache_dir=tmp_path))
    assert response.status_code == 503
    assert b"personas pages fetch" in response.body and b"react@18.2.0" in response.body


def test_only_named_files_of_a_tarball_with_the_pinned_hash_are_unpacked(tmp_path: Path) -> None:
    files = {"umd/react.production.min.js": b"// react", "umd/evil.js": b"// not served"}
    path = tarball(tmp_path / "react.tgz", files)
    package = replace(PACKAGES[0], sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    root = tmp_path / "assets"
    unpack(package, path, root / package.spec)
    assert (root / package.spec / "umd/react.production.min.js").read_bytes() == b"// react"
    assert not (root / package.spec / "umd/evil.js").exists()
    assert served_files(root)[f"{package.spec}/umd/react.production.min.js"].is_file()
    assert package.spec not in missing(root)


def test_a_tarball_with_another_hash_is_refused(tmp_path: Path) -> None:
    path = tarball(tmp_path / "react.tgz", {"umd/react.production.min.js": b"// changed"})
    with pytest.raises(Unavailable, match="not the pinned"):
        unpack(PACKAGES[0], path, tmp_path / "assets" / PACKAGES[0].spec)
    assert not (tmp_path / "assets").exists()
