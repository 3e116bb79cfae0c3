"""The analyst docs hold together without a database: the Neo4j Browser style names real labels
and captions them, and every cookbook query is a titled section whose parameters are all set."""

from __future__ import annotations

import re

from tests.docs import (
    COOKBOOK,
    GRAPH_MODEL,
    GRASS,
    cookbook,
    graph_model_labels,
    graph_model_relationship_types,
    grass_nodes,
    recipes,
)

# The labels an analyst meets in the graph view, each with the property its caption shows.
STYLED = {
    "User": "{id}",
    "Persona": "{name}",
    "Segment": "{label}",
    "SegmentationRun": None,
    "Item": "{name}",
    "Category": "{name}",
    "Location": None,
    "Interaction": None,
    "Session": None,
}


def test_grass_styles_each_label_with_a_caption_colour_and_size() -> None:
    nodes = grass_nodes(GRASS.read_text(encoding="utf-8"))
    missing = sorted(set(STYLED) - set(nodes))
    assert not missing, f"docs/persona-graph.grass has no node.<Label> block for {missing}"
    for label, expected in STYLED.items():
        style = nodes[label]
        caption = style.get("caption", "").strip("'\"")
        assert re.fullmatch(r"\{\w+\}", caption), f"node.{label} needs a caption, got {caption!r}"
        if expected is not None:
            assert caption == expected, f"node.{label} should be captioned {expected}"
        assert re.fullmatch(r"#[0-9A-Fa-f]{6}", style.get("color", "")), label
        assert re.fullmatch(r"\d+px", style.get("diameter", "")), label
    colours = [nodes[label]["color"].upper() for label in STYLED]
    assert len(set(colours)) == len(colours), f"two styled labels share a colour: {colours}"
    sizes = {nodes[label]["diameter"] for label in STYLED}
    assert len(sizes) >= 5, "sizes should tell personas and segments from users and events"


def test_grass_names_only_labels_and_types_of_the_graph_model() -> None:
    text = GRASS.read_text(encoding="utf-8")
    model = GRAPH_MODEL.read_text(encoding="utf-8")
    unknown = sorted(set(grass_nodes(text)) - graph_model_labels(model))
    assert not unknown, f"docs/persona-graph.grass styles labels not in docs/graph-model.md: " \
                        f"{unknown}"
    types = re.findall(r"^relationship\.(\w+)", text, re.M)
    assert types, "expected a few relationship styles"
    unknown_types = sorted(set(types) - graph_model_relationship_types(model))
    assert not unknown_types, f"relationship types not in docs/graph-model.md: {unknown_types}"


def test_every_cookbook_query_is_titled_explained_and_parameterized() -> None:
    found = cookbook()
    assert 10 <= len(found) <= 14, f"{len(found)} queries in docs/cypher-cookbook.md"
    titles = [r.title for r in found]
    assert len(set(titles)) == len(titles), "two queries share a title"
    for r in found:
        assert r.intro and r.intro.endswith("."), f"{r.title!r}: one sentence of what it answers"
        assert not r.used - set(r.params), \
            f"{r.title!r} uses {sorted(r.used - set(r.params))} without a :param line"
        assert not set(r.params) - r.used, \
            f"{r.title!r} sets :param {sorted(set(r.params) - r.used)} that the query never uses"
    # Loading the style is explained where an analyst starts.
    text = COOKBOOK.read_text(encoding="utf-8")
    assert ":style" in text and "persona-graph.grass" in text


def test_a_cypher_block_outside_a_titled_section_is_caught() -> None:
    page = "# Title\n\n```cypher\nMATCH (n) RETURN n\n```\n"
    try:
        recipes(page)
    except AssertionError as exc:
        assert "not a ### section" in str(exc)
    else:
        raise AssertionError("an untitled query went unnoticed")
