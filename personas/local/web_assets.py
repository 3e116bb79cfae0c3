"""Provisioning of the browser assets the API's pages serve (``api.pages.assets``): each pinned
npm package is fetched once with npm's own client (``npm pack``), its tarball checked against
the pinned SHA-256, and only the files the pages load are unpacked into the cache folder."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from api.pages.assets import PACKAGES, NpmPackage, assets_dir, missing
from graph.errors import Unavailable
from graph.settings import Settings

log = logging.getLogger(__name__)
Echo = Callable[[str], None]
NPM_TIMEOUT_S = 300


def unpack(package: NpmPackage, tarball: Path, target: Path) -> None:
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != package.sha256:
        raise Unavailable(f"{package.spec}: the registry's tarball has SHA-256 {digest}, "
                          f"not the pinned {package.sha256}; refusing it")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(tarball, "r:gz") as archive:
        for name in package.files:
            # npm tarballs hold the package under `package/`; only named files are read, so no
            # path from the archive decides where anything is written.
            member = archive.extractfile(f"package/{name}")
            if member is None:
                raise Unavailable(f"{package.spec}: no file {name} in its tarball")
            out = staging / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(member.read())
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def ensure_web_assets(settings: Settings, echo: Echo = log.info) -> Path:
    """The assets folder, with every pinned package unpacked (fetched now if missing).
    Raises Unavailable when npm is missing or cannot fetch them."""
    root = assets_dir(settings)
    wanted = set(missing(root))
    if not wanted:
        return root
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is needed once to fetch GraphiQL's files from the npm registry: "
                          "install it (e.g. `apt-get install npm`)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="web-assets-") as tmp:
        for package in PACKAGES:
            if package.spec not in wanted:
                continue
            echo(f"fetching {package.spec} from the npm registry ...")
            done = subprocess.run([npm, "pack", package.spec, "--pack-destination", tmp,
                                   "--silent"], capture_output=True, text=True,
                                  timeout=NPM_TIMEOUT_S, check=False)
            if done.returncode != 0:
                raise Unavailable(f"npm pack {package.spec} failed: "
                                  f"{done.stderr.strip()[-500:]}")
            tarball = Path(tmp) / done.stdout.strip().splitlines()[-1]
            unpack(package, tarball, root / package.spec)
    return root
