"""Names and descriptions for segments, from the features where a segment differs most.

The words come from a phrase book (graph/segments/vocabularies): retail by default, or the
book named by ``PERSONAS_PERSONA_VOCABULARY``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from graph.features.registry import CATEGORY_PREFIX, TOPIC_PREFIX, topic_terms
from graph.segments.vocabularies import CLEAR_Z, Direction, Vocabulary, load_vocabulary


@dataclass(frozen=True)
class SegmentName:
    name: str
    description: str
    why: list[tuple[str, float]]


@dataclass(frozen=True)
class _Candidate:
    phrase: str
    strength: float
    """Deviation (|z|) times the phrase's weight: decides between segments claiming it."""
    share: bool
    """From a category or topic share."""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def configured_vocabulary() -> Vocabulary:
    """The phrase book the settings name (``PERSONAS_PERSONA_VOCABULARY``, default retail)."""
    from graph.settings import Settings

    return load_vocabulary(Settings().persona_vocabulary)


def _share_fields(feature: str) -> tuple[str, dict[str, str], dict[str, str]] | None:
    """For a category or topic share: its kind and the template values for the segment's name
    and for its description."""
    if feature.startswith(CATEGORY_PREFIX):
        category = feature.removeprefix(CATEGORY_PREFIX)
        return "category", {"category": category.title()}, {"category": category}
    if feature.startswith(TOPIC_PREFIX):
        values = _topic_values(feature)
        return "topic", values, values
    return None


def _topic_values(feature: str) -> dict[str, str]:
    """``{topic}``: the first two terms as a title ("Refund & Order"); ``{terms}``: all of the
    label's terms ("refund, order, late")."""
    terms = distinct_terms(topic_terms(feature))
    return {"topic": " & ".join(t.title() for t in terms[:2]), "terms": ", ".join(terms)}


def distinct_terms(terms: Sequence[str]) -> list[str]:
    """``terms`` without plurals of an earlier term or singulars of one: TF-IDF keeps "classes"
    and "class" apart, and a topic named "Classes & Class" (seen on a real chat corpus) says
    one thing twice."""
    out: list[str] = []
    for term in terms:
        if not any(term in (t + "s", t + "es") or t in (term + "s", term + "es") or term == t
                   for t in out):
            out.append(term)
    return out


def _clearly(centre: dict[str, float], sides: dict[str, Direction]) -> bool:
    """Whether the segment lies clearly (``CLEAR_Z``) on each given side of each feature."""
    return all(
        (z := centre.get(feature)) is not None and abs(z) >= CLEAR_Z
        and (z > 0) == (direction == "high")
        for feature, direction in sides.items()
    )


def _phrase(vocabulary: Vocabulary, feature: str, z: float,
            centre: dict[str, float] | None = None) -> _Candidate | None:
    """The persona phrase a feature's deviation suggests, with its strength; none when the
    book says the phrase does not fit a segment like ``centre`` (its ``unless``)."""
    high = z > 0
    share = _share_fields(feature)
    if share is not None:
        if not high:
            return None
        kind, name_values, _ = share
        words = vocabulary.category if kind == "category" else vocabulary.topic
        return _Candidate(words.phrase.format(**name_values), abs(z) * words.weight, True)
    side = vocabulary.side(feature, "high" if high else "low")
    if side.phrase is None:
        return None
    if centre is not None and _vetoed(vocabulary, feature, z, centre):
        return None
    return _Candidate(side.phrase, abs(z) * side.weight, False)


def _vetoed(vocabulary: Vocabulary, feature: str, z: float, centre: dict[str, float]) -> bool:
    """Whether the book's ``unless`` rules this side of the feature out for the segment."""
    if _share_fields(feature) is not None:
        return False
    side = vocabulary.side(feature, "high" if z > 0 else "low")
    return any(_clearly(centre, {f: d}) for f, d in side.unless.items())


def _combinations(vocabulary: Vocabulary, centre: dict[str, float]) -> list[_Candidate]:
    """The book's phrases for several features together that fit the segment; each as strong
    as its weakest feature."""
    return [_Candidate(c.phrase, c.weight * min(abs(centre[f]) for f in c.when), False)
            for c in vocabulary.combinations if _clearly(centre, c.when)]


def _wording(vocabulary: Vocabulary, feature: str, z: float) -> str:
    share = _share_fields(feature)
    if share is not None:
        kind, _, values = share
        words = vocabulary.category if kind == "category" else vocabulary.topic
        return (words.high if z > 0 else words.low).format(**values)
    wording = vocabulary.side(feature, "high" if z > 0 else "low").wording
    if wording is None:
        return f"have {'high' if z > 0 else 'low'} {feature}"
    return wording


def _description(vocabulary: Vocabulary, why: list[tuple[str, float]]) -> str:
    """"Users who ..." from the segment's most distinctive features. Neighbouring topics with
    the same direction share one wording ("talk about refund, order; parcel, courier")."""
    parts: list[str] = []
    i = 0
    while i < len(why):
        feature, z = why[i]
        j = i + 1
        if feature.startswith(TOPIC_PREFIX):
            while (j < len(why) and why[j][0].startswith(TOPIC_PREFIX)
                   and (why[j][1] > 0) == (z > 0)):
                j += 1
        if j - i > 1:
            values = [_topic_values(f) for f, _ in why[i:j]]
            merged = {"topic": " and ".join(v["topic"] for v in values),
                      "terms": "; ".join(v["terms"] for v in values)}
            template = vocabulary.topic.high if z > 0 else vocabulary.topic.low
            parts.append(template.format(**merged))
        else:
            parts.append(_wording(vocabulary, feature, z))
        i = j
    return "Users who " + ", ".join(parts) + "."


def _ranked_phrases(vocabulary: Vocabulary, row: list[tuple[str, float]],
                    share_led: bool = False) -> list[_Candidate]:
    """A segment's phrases, best first: by strength, except that when the segment's strongest
    category or topic share is at least ``dominance`` times the largest deviation the book has
    a phrase for, the shares that lie clearly above the population come first. So a segment
    that mostly differs by what it likes or talks about is named from that, and a close call
    still goes to the weighted phrases. ``share_led``: the segmentation says the shares made
    this segment (``name_segments``), so they come first whatever the deviations."""
    centre = dict(row)
    candidates = ([c for f, z in row if (c := _phrase(vocabulary, f, z, centre))]
                  + _combinations(vocabulary, centre))
    named = max((abs(z) for f, z in row if _share_fields(f) is None
                 and _phrase(vocabulary, f, z, centre) is not None), default=0.0)
    share_top = max((z for f, z in row if _share_fields(f) is not None), default=0.0)
    dominant = share_top > 0 and (share_led or share_top >= vocabulary.dominance * named)
    clear = {c.phrase for f, z in row if z >= CLEAR_Z and _share_fields(f) is not None
             and (c := _phrase(vocabulary, f, z, centre))}
    return sorted(candidates,
                  key=lambda c: (not (dominant and c.share and c.phrase in clear), -c.strength))


def name_segments(
    centers_z: NDArray[np.float64],
    feature_names: Sequence[str],
    top: int = 3,
    *,
    vocabulary: Vocabulary | str | None = None,
    share_led: Sequence[bool] = (),
) -> list[SegmentName]:
    """One distinct name per segment, from its centre in z-scores (features x segments).

    Each segment takes its best phrase (see ``_ranked_phrases``); when two segments would share
    a name, the one that differs less on it takes its next phrase. ``vocabulary`` is a phrase
    book, the name or path of one, or None for the configured book. ``share_led``, per
    segment: its shares set it apart more than its other features did in the segmentation's
    own distances (``share_led`` in run.py), so it is named from a clear share if it has one.
    """
    if vocabulary is None:
        vocabulary = configured_vocabulary()
    elif isinstance(vocabulary, str):
        vocabulary = load_vocabulary(vocabulary)
    k = centers_z.shape[0]
    ranked: list[list[tuple[str, float]]] = []
    for c in range(k):
        order = np.argsort(-np.abs(centers_z[c]))
        ranked.append([(feature_names[i], float(centers_z[c, i])) for i in order])
    led = list(share_led) or [False] * k
    candidates = [_ranked_phrases(vocabulary, r, led[c]) for c, r in enumerate(ranked)]
    chosen: dict[int, str] = {}
    taken: dict[str, tuple[int, float]] = {}
    pointer = [0] * k
    pending = list(range(k))
    while pending:
        c = pending.pop(0)
        while pointer[c] < len(candidates[c]):
            candidate = candidates[c][pointer[c]]
            phrase, strength = candidate.phrase, candidate.strength
            pointer[c] += 1
            holder = taken.get(phrase)
            if holder is None:
                taken[phrase], chosen[c] = (c, strength), phrase
                break
            if strength > holder[1]:
                taken[phrase], chosen[c] = (c, strength), phrase
                del chosen[holder[0]]
                pending.append(holder[0])
                break
        else:
            chosen[c] = f"Segment {c + 1}"
    names = []
    for c in range(k):
        centre = dict(ranked[c])
        # A feature whose phrase the book vetoes for this segment (its ``unless``) would
        # describe it wrongly too: users with one order "buy in one season" only trivially.
        fitting = [(f, z) for f, z in ranked[c] if not _vetoed(vocabulary, f, z, centre)]
        why = [(f, round(z, 3)) for f, z in fitting[:top]]
        names.append(SegmentName(chosen[c], _description(vocabulary, why), why))
    return names
