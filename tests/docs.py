"""Reading the analyst docs the tests check: the Cypher cookbook and the Neo4j Browser style."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
COOKBOOK = DOCS / "cypher-cookbook.md"
GRASS = DOCS / "persona-graph.grass"
GRAPH_MODEL = DOCS / "graph-model.md"

HEADING = re.compile(r"^(#{1,6}) (.+)$", re.M)
CYPHER_BLOCK = re.compile(r"^```cypher\n(.*?)^```$", re.M | re.S)
PARAM_LINE = re.compile(r"^:param (\w+) => (.+)$", re.M)
PARAMETER_USE = re.compile(r"\$(\w+)")


@dataclass(frozen=True)
class Recipe:
    """One `### title` section of the cookbook: its query and its `:param` lines."""

    title: str
    intro: str
    """The prose between the heading and the first code block."""
    cypher: str
    params: dict[str, str]
    """Parameter name -> the Cypher expression on its `:param` line (Browser evaluates it)."""

    @property
    def used(self) -> set[str]:
        return set(PARAMETER_USE.findall(self.cypher))


def sections(text: str) -> list[tuple[int, str, str]]:
    """(level, title, body) for every heading of the page."""
    heads = list(HEADING.finditer(text))
    out = []
    for n, head in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(text)
        out.append((len(head.group(1)), head.group(2).strip(), text[head.end():end]))
    return out


def recipes(text: str) -> list[Recipe]:
    """Every `### title` section holding a Cypher block. Fails on a Cypher block outside such a
    section or on a section with two, so that no query goes untested."""
    found = []
    for level, title, body in sections(text):
        blocks = CYPHER_BLOCK.findall(body)
        if not blocks:
            continue
        assert level == 3, f"a ```cypher block under {title!r}, which is not a ### section"
        assert len(blocks) == 1, f"{title!r} holds {len(blocks)} ```cypher blocks, not one"
        intro = body.split("```", 1)[0].strip()
        found.append(Recipe(title, intro, blocks[0],
                            {m.group(1): m.group(2).strip() for m in PARAM_LINE.finditer(body)}))
    return found


def cookbook() -> list[Recipe]:
    return recipes(COOKBOOK.read_text(encoding="utf-8"))


GRASS_NODE = re.compile(r"^node\.(\w+)\s*\{(.*?)^\}", re.M | re.S)
GRASS_PROPERTY = re.compile(r"([\w-]+)\s*:\s*([^;]+);")


def grass_nodes(text: str) -> dict[str, dict[str, str]]:
    """Each `node.Label { ... }` block of a GraSS file as label -> {property: value}."""
    return {label: {k: v.strip() for k, v in GRASS_PROPERTY.findall(body)}
            for label, body in GRASS_NODE.findall(text)}


def _diagram(text: str) -> str:
    diagram = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert diagram, "docs/graph-model.md has no mermaid diagram"
    return diagram.group(1)


def graph_model_labels(text: str) -> set[str]:
    """The node labels of the graph model's diagram: its CamelCase names."""
    return set(re.findall(r"\b([A-Z][a-z]\w*)\b", _diagram(text)))


def graph_model_relationship_types(text: str) -> set[str]:
    """The relationship types of the graph model's diagram: its upper-case names."""
    return set(re.findall(r"\b([A-Z]+(?:_[A-Z]+)*)\b", _diagram(text))) - {"LR"}
