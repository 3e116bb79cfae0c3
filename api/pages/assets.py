"""The browser assets GraphiQL needs (React, GraphiQL, its explorer plugin), as pinned npm
packages. They are fetched once at provisioning into the cache folder (like Neo4j's jars:
``personas.local.web_assets``), never committed, and served from there: GraphiQL then works on
a machine that cannot reach a public CDN. Each file still carries the Subresource Integrity hash
GraphiQL's page names, so the browser checks what it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graph.settings import Settings

CDN = "https://unpkg.com/"
LOCAL_PREFIX = "/static/npm/"
"""Where the API serves the packages' files: the CDN's URL layout, ``<name>@<version>/<path>``."""


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    sha256: str
    """Of the registry's tarball, checked before anything of it is unpacked."""
    files: tuple[str, ...]
    """The files the pages load (paths inside the package); only these are served."""

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


# The versions strawberry's GraphiQL page names (strawberry/static/graphiql.html).
PACKAGES = (
    NpmPackage("react", "18.2.0",
               "a151f7caec911760e42b7a6f6f1dfcaba141fd11ff49e2af901a2eee0366297c",
               ("umd/react.production.min.js",)),
    NpmPackage("react-dom", "18.2.0",
               "20a71e86b691f860c781f3732a85c7b3c63c4d3d9a803dca9dfe6ed0eb30e2ef",
               ("umd/react-dom.production.min.js",)),
    NpmPackage("js-cookie", "3.0.5",
               "37aae984c1efdb0f91a20036dc44100a220386f38133fd188dc05ccd72063075",
               ("dist/js.cookie.min.js",)),
    NpmPackage("graphiql", "3.8.3",
               "1cadb1c2ca0dc51ea71fb4bb2680e6185e83fe400c9a62ca5fb9dfb922472bbd",
               ("graphiql.min.js", "graphiql.min.css")),
    NpmPackage("@graphiql/plugin-explorer", "1.0.2",
               "0eb37145bdaebc72050f76339c5cdacb89b8846f65259dfb78debfefc8ae3ff1",
               ("dist/index.umd.js", "dist/style.css")),
)


def assets_dir(settings: Settings) -> Path:
    """Where the packages are unpacked: ``<cache>/web-assets/<name>@<version>/``."""
    return settings.cache_dir / "web-assets"


def served_files(root: Path) -> dict[str, Path]:
    """Every servable file by its path under ``LOCAL_PREFIX`` (``react@18.2.0/umd/...``)."""
    return {f"{p.spec}/{f}": root / p.spec / f for p in PACKAGES for f in p.files}


def missing(root: Path) -> list[str]:
    """The packages not (completely) unpacked under ``root``."""
    return sorted({p.spec for p in PACKAGES for f in p.files if not (root / p.spec / f).is_file()})


def graphiql_html() -> str:
    """strawberry's GraphiQL page, loading its scripts and styles from this API."""
    # Here, not at import: `personas pages fetch` reads this module without the web layer.
    from strawberry.http.ides import get_graphql_ide_html

    html = get_graphql_ide_html(graphql_ide="graphiql")
    return html.replace(CDN, LOCAL_PREFIX)


MISSING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GraphiQL not provisioned</title></head>
<body><h1>GraphiQL's files are not provisioned</h1>
<p>This API serves GraphiQL from its own cache folder, without a CDN. Fetch the files once with
<code>personas pages fetch</code> (<code>make up</code> and <code>personas serve</code> do it
when the npm registry is reachable), then reload. Missing: {missing}.</p>
<p>The GraphQL endpoint itself works: POST queries to <code>/graphql</code>.</p></body></html>
"""
