"""Phrase books: the words that name and describe personas, one YAML file per domain.

A book gives, per feature and direction (``high``: the segment is well above average, ``low``:
well below), an optional persona phrase with its weight and the wording of descriptions, plus
templates for category (or genre) shares and for topics. The shipped books live beside this
module (``retail``, ``media``, ``travel``, ``support``); an operator names one, or the path of
their own file, in ``PERSONAS_PERSONA_VOCABULARY``:

```yaml
name: media
features:
  views_per_session:
    high: {phrase: Binge Watchers, weight: 1.2, wording: watch many titles per visit}
    low: {wording: watch one title per visit}
category: {phrase: "{category} Fans", weight: 1.0,
           high: "favour {category}", low: "seldom choose {category}"}
topic: {phrase: "{topic} Talkers", weight: 1.0,
        high: "talk about {terms}", low: "seldom talk about {terms}"}
dominance: 1.25
combinations:          # several features together: a phrase of its own
  - {when: {tenure_days: low, recency_days: high}, phrase: Lapsed One-Time Viewers, weight: 1.3}
```

A side's ``unless`` (e.g. ``low: {phrase: Newcomers, unless: {recency_days: high}}``) keeps its
phrase off a segment that is clearly on the given side of another feature.

Every problem (unknown feature, unknown key, a template without its placeholder, a weight out
of range) is an ``InvalidInput`` naming the file and the entry.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graph.errors import InvalidInput
from graph.features.registry import REGISTRY

HERE = Path(__file__).resolve().parent
SHIPPED = tuple(sorted(p.stem for p in HERE.glob("*.yaml")))
MAX_BOOK_BYTES = 1_000_000
Direction = Literal["high", "low"]
CLEAR_Z = 0.5
"""How far (in standard deviations) a segment's centre must lie from the average on a feature
for ``unless`` and ``combinations`` to count it as high or low there."""


class Side(BaseModel):
    """What a segment well above (or below) average on one feature is called and said to do."""

    model_config = ConfigDict(extra="forbid")

    phrase: str | None = Field(default=None, min_length=1, max_length=60)
    weight: float = Field(default=1.0, gt=0, le=10)
    wording: str | None = Field(default=None, min_length=1, max_length=120)
    unless: dict[str, Direction] = Field(default_factory=dict)
    """The phrase does not fit a segment that is also clearly (``CLEAR_Z``) on this side of
    these features: short tenure says "new" only if the users were seen recently."""

    @field_validator("unless")
    @classmethod
    def _known_unless(cls, value: dict[str, Direction]) -> dict[str, Direction]:
        return _check_features(value)


class Combination(BaseModel):
    """A phrase for a segment clearly on the given side of every one of several features, e.g.
    short tenure with a long absence: lapsed one-time buyers. Its strength is ``weight`` times
    the smallest of those deviations."""

    model_config = ConfigDict(extra="forbid")

    when: dict[str, Direction] = Field(min_length=2)
    phrase: str = Field(min_length=1, max_length=60)
    weight: float = Field(default=1.0, gt=0, le=10)

    @field_validator("when")
    @classmethod
    def _known_when(cls, value: dict[str, Direction]) -> dict[str, Direction]:
        return _check_features(value)


def _check_features(value: dict[str, Direction]) -> dict[str, Direction]:
    unknown = sorted(set(value) - set(REGISTRY))
    if unknown:
        raise ValueError(f"unknown feature {unknown[0]!r}; features: {', '.join(REGISTRY)}")
    return value


class FeatureWords(BaseModel):
    model_config = ConfigDict(extra="forbid")

    high: Side = Field(default_factory=Side)
    low: Side = Field(default_factory=Side)


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{template!r} is not a valid template ({exc})") from None


class ShareWords(BaseModel):
    """Templates for one kind of share feature: ``phrase`` names a segment whose members favour
    the category or topic; ``high``/``low`` word its descriptions."""

    model_config = ConfigDict(extra="forbid")

    phrase: str = Field(min_length=1, max_length=60)
    weight: float = Field(default=1.0, gt=0, le=10)
    high: str = Field(min_length=1, max_length=120)
    low: str = Field(min_length=1, max_length=120)


class CategoryWords(ShareWords):
    @field_validator("phrase", "high", "low")
    @classmethod
    def _category_template(cls, value: str) -> str:
        return _check_template(value, required={"category"}, allowed={"category"})


class TopicWords(ShareWords):
    @field_validator("phrase")
    @classmethod
    def _topic_phrase(cls, value: str) -> str:
        return _check_template(value, required={"topic"}, allowed={"topic", "terms"})

    @field_validator("high", "low")
    @classmethod
    def _topic_wording(cls, value: str) -> str:
        return _check_template(value, required=set(), allowed={"topic", "terms"})


def _check_template(value: str, *, required: set[str], allowed: set[str]) -> str:
    names = _placeholders(value)
    unknown = names - allowed
    if unknown:
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} in {value!r}; "
                         f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}")
    missing = required - names
    if missing:
        raise ValueError(f"{value!r} must contain {{{sorted(missing)[0]}}}")
    return value


class Vocabulary(BaseModel):
    """A validated phrase book."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=60)
    description: str = ""
    features: dict[str, FeatureWords] = Field(default_factory=dict)
    category: CategoryWords
    topic: TopicWords
    dominance: float = Field(default=1.25, ge=1.0, le=10.0)
    """A segment is named from a category or topic share when that share's z-score is at
    least this many times the largest z-score of any feature with a phrase in the book."""
    combinations: list[Combination] = Field(default_factory=list)

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: dict[str, FeatureWords]) -> dict[str, FeatureWords]:
        unknown = sorted(set(value) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; features: {', '.join(REGISTRY)}")
        return value

    def side(self, feature: str, direction: Direction) -> Side:
        words = self.features.get(feature)
        return getattr(words, direction) if words is not None else Side()


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_vocabulary(data: object, origin: str) -> Vocabulary:
    """A phrase book from parsed YAML; InvalidInput names ``origin`` and every problem."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{origin}: a phrase book is a mapping with name, features, "
                           "category and topic")
    try:
        return Vocabulary.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{origin}: {_errors(exc)}") from None


def read_vocabulary(path: Path) -> Vocabulary:
    """Read and validate a phrase book file."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such phrase book file (shipped books: "
                           f"{', '.join(SHIPPED)})")
    text = path.read_bytes()
    if len(text) > MAX_BOOK_BYTES:
        raise InvalidInput(f"{path}: phrase book over {MAX_BOOK_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML ({exc})") from None
    return parse_vocabulary(data, str(path))


@functools.cache
def shipped(name: str) -> Vocabulary:
    """A book shipped with the package, by name (read once per process)."""
    if name not in SHIPPED:
        raise InvalidInput(f"no shipped phrase book {name!r}; choose from "
                           f"{', '.join(SHIPPED)} or give the path of a YAML file")
    return read_vocabulary(HERE / f"{name}.yaml")


def load_vocabulary(name_or_path: str | Path) -> Vocabulary:
    """A shipped book by name (``retail``, ``media``, ...) or an operator's YAML file by path."""
    text = str(name_or_path).strip()
    if not text:
        raise InvalidInput(f"the phrase book is empty; choose from {', '.join(SHIPPED)} "
                           "or give the path of a YAML file")
    if isinstance(name_or_path, str) and text in SHIPPED:
        return shipped(text)
    if isinstance(name_or_path, str) and "/" not in text and not text.endswith(
            (".yaml", ".yml")):
        return shipped(text)  # raises, listing the shipped books
    return read_vocabulary(Path(text).expanduser())
