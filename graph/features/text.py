"""Features from what users write: topics learned from their chat messages and searches, and how
they converse (messages per session, message length, questions, hour of day).

Each user's latest ``TEXTS_PER_USER`` texts are read from the graph a page of users at a time
(``Interaction.text`` of chat messages, ``Interaction.query`` of searches). Topics are learned
with scikit-learn only (TF-IDF with English stop words, then NMF with a fixed random state, so
the same text gives the same topics): one document per user, their texts joined, so a topic is
a vocabulary that some users share. A user's topic shares are their row of the NMF weights,
normalized to sum to 1; each becomes a feature ``topic:<label>``, the label being the topic's
three top terms (``topic:refund-order-late``).

The text families are used only when the population has enough text (``TextRule``) unless the
operator says otherwise (``PERSONAS_TEXT_FEATURES``): a population that mostly browses or buys
keeps the features it has always been segmented on.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import NMF
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from graph.db import Graph
from graph.errors import InvalidInput
from graph.features import queries as q
from graph.features.registry import TOPIC_PREFIX

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
TextMode = Literal["auto", "on", "off"]
TEXT_TYPES = ("chat_message", "search")
TEXTS_PER_USER = 500
MAX_TEXT_CHARS = 1000
"""Longer texts are cut for the topic model: one pasted document should not outweigh a user's
other messages."""
CONVERSATION = ("messages_per_session", "message_length", "question_share")
HOURS = ("night_share", "morning_share", "afternoon_share", "evening_share")
TEXT_BEHAVIOUR = CONVERSATION + HOURS
DAY_PARTS = {"night_share": range(0, 6), "morning_share": range(6, 12),
             "afternoon_share": range(12, 18), "evening_share": range(18, 24)}
# Pseudonymized emails and phone numbers ("[email:3fa9c0b1d2]") are not words of a topic, and
# must never become a topic's label.
PII_TOKEN = re.compile(r"\[(?:email|phone):[^\]]*\]")
# Words of two or more letters: digits, codes and punctuation do not make topics.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"
# Chat filler on top of scikit-learn's English stop words: greetings, thanks, assent and the
# like say how people talk, not what about, and would otherwise label topics ("hi-just-looking").
CHAT_STOP_WORDS = frozenset({
    "hi", "hello", "hey", "thanks", "thank", "thx", "please", "pls", "ok", "okay", "yes", "yeah",
    "yep", "nope", "sure", "oh", "ah", "um", "uh", "hmm", "lol", "haha", "hahaha", "wow", "cool",
    "nice", "great", "good", "just", "really", "actually", "maybe", "probably", "pretty", "like",
    "know", "think", "want", "need", "got", "get", "gets", "getting", "going", "gonna", "wanna",
    "does", "did", "doing", "done", "come", "let", "say", "said", "tell", "im", "ive", "id",
    "ill", "youre", "dont", "didnt", "doesnt", "isnt", "cant", "wont", "thats", "whats", "lot",
    "lots", "bit", "thing", "things", "stuff", "way", "kind", "right", "ll", "ve", "re",
})
STOP_WORDS = sorted(ENGLISH_STOP_WORDS | CHAT_STOP_WORDS)
FIRST_WORD = re.compile(r"[^\W\d_]+")
QUESTION_WORDS = frozenset({
    "what", "how", "why", "when", "where", "who", "whom", "whose", "which", "can", "could",
    "is", "are", "am", "was", "were", "do", "does", "did", "will", "would", "should", "shall",
    "any", "anyone", "isnt", "arent", "dont", "doesnt", "didnt", "cant", "wont",
})
# Not "have" or "may": "Have a nice day" and "May I add" open statements as often as questions.


@dataclass(frozen=True)
class TextRule:
    """When the text families are used by default: at least ``min_writer_share`` of the users
    wrote at least ``min_texts`` chat messages or searches, and there are at least
    ``min_documents`` of them in all. Half the users is the bar because topics then describe
    most of the population; a shop whose users mostly browse (like the demo, where about 4 in
    10 users write that much) keeps its behavioural personas."""

    min_writer_share: float = 0.5
    min_texts: int = 3
    min_documents: int = 200

    def verdict(self, users: int, writers: int, documents: int) -> tuple[bool, str]:
        share = writers / users if users else 0.0
        facts = (f"{writers} of {users} users ({share:.0%}) wrote at least {self.min_texts} "
                 f"messages or searches, {documents} in all")
        if share >= self.min_writer_share and documents >= self.min_documents:
            return True, f"{facts}: enough text"
        return False, (f"{facts}: too little text (needs {self.min_writer_share:.0%} of users "
                       f"and {self.min_documents} texts)")


@dataclass(frozen=True)
class TextOptions:
    """How the feature table treats text: ``mode`` auto (by ``rule``), on or off; ``n_topics``
    None chooses the number from the data."""

    mode: TextMode = "auto"
    n_topics: int | None = None
    rule: TextRule = field(default_factory=TextRule)
    per_user: int = TEXTS_PER_USER

    @classmethod
    def from_settings(cls) -> TextOptions:
        from graph.settings import Settings

        settings = Settings()
        return cls(mode=settings.text_features, n_topics=settings.text_topics or None)


@dataclass(frozen=True)
class TextStats:
    """What the population's text looked like, and whether the text families were used."""

    users: int
    writers: int
    documents: int
    used: bool
    reason: str


@dataclass(frozen=True)
class Topic:
    """One learned topic: its label (three top terms), the top terms with their weight in the
    topic (summing to at most 1), and its prevalence (mean share over users who wrote)."""

    label: str
    terms: tuple[tuple[str, float], ...]
    prevalence: float

    @property
    def feature(self) -> str:
        return f"{TOPIC_PREFIX}{self.label}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Topic:
        """The inverse of ``to_dict`` (a run stores its topics so newcomers can be projected)."""
        return cls(str(data["label"]), tuple((str(t), float(w)) for t, w in data["terms"]),
                   float(data["prevalence"]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"label", "feature", "prevalence", "terms": [[term, weight], ...]}``."""
        return {"label": self.label, "feature": self.feature,
                "prevalence": round(self.prevalence, 4),
                "terms": [[t, round(w, 4)] for t, w in self.terms]}


def clean(text: str) -> str:
    """A text as the topic model reads it: cut, without pseudonym tokens, and with apostrophes
    dropped so that "don't" is one (stop) word rather than "don" and "t"."""
    return PII_TOKEN.sub(" ", text[:MAX_TEXT_CHARS]).replace("'", "").replace("\u2019", "")


TOPIC_RANGE = range(3, 11)
"""Numbers of topics ``choose_n_topics`` tries."""


def _top_terms(components: FloatArray, top: int) -> list[set[int]]:
    return [set(np.argsort(-row, kind="stable")[:top].tolist()) for row in components]


def topic_agreement(reference: FloatArray, other: FloatArray, top: int = 10) -> float:
    """How alike two sets of topics (NMF components over one vocabulary) are: each topic of
    ``reference`` is paired with one of ``other`` (the pairing that maximizes the total), and
    the Jaccard indexes of the pairs' top ``top`` terms are averaged."""
    from scipy.optimize import linear_sum_assignment

    ref, new = _top_terms(reference, top), _top_terms(other, top)
    jaccard = np.array([[len(a & b) / len(a | b) for b in new] for a in ref])
    rows, cols = linear_sum_assignment(-jaccard)
    return float(jaccard[rows, cols].sum() / len(ref))


def choose_n_topics(X: Any, candidates: Sequence[int] = TOPIC_RANGE, *, resamples: int = 4,
                    fraction: float = 0.8, max_documents: int = 2000,
                    random_state: int = 0) -> tuple[int, dict[int, float]]:
    """The number of topics whose topics the text supports best: for each candidate n, NMF
    on all documents is compared with NMF on ``resamples`` random ``fraction`` subsets
    (``topic_agreement`` of their top terms), and the n with the highest mean agreement wins
    (ties to fewer topics). Topic stability in the sense of Greene, O'Callaghan and Cunningham
    (2014, "How many topics? Stability analysis for topic models"): a topic that appears only
    in some samples of the users is noise, and personas built on it move between runs.
    ``X`` is the TF-IDF matrix (at most ``max_documents`` rows, an even sample, are used)."""
    n_docs = X.shape[0]
    if n_docs > max_documents:
        X = X[np.linspace(0, n_docs - 1, max_documents).astype(int)]
    rng = np.random.default_rng(random_state)
    size = max(2, round(fraction * X.shape[0]))
    subsets = [np.sort(rng.choice(X.shape[0], size=size, replace=False))
               for _ in range(resamples)]
    scores: dict[int, float] = {}
    for n in candidates:
        if n >= min(X.shape) or n < 2:
            continue
        reference = _nmf(n, random_state).fit(X).components_
        scores[n] = float(np.mean([topic_agreement(reference,
                                                   _nmf(n, random_state).fit(X[idx]).components_)
                                   for idx in subsets]))
    if not scores:
        return max(2, min(min(candidates), min(X.shape) - 1)), {}
    best = max(scores.values())
    # Agreement measured on four subsets varies by about 0.02: closer than that is a tie.
    return min(n for n, v in scores.items() if v >= best - 0.02), scores


def _nmf(n: int, random_state: int) -> NMF:
    return NMF(n_components=n, init="nndsvda", max_iter=500, random_state=random_state)


class TopicModel(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """TF-IDF (English stop words and chat filler; terms in at least ``min_df`` and at most
    ``max_df`` of the documents) and NMF with ``n_topics`` (None: ``choose_n_topics``), fitted on
    at most ``max_fit_documents`` documents (an even sample beyond). ``transform`` gives each
    document's topic shares, rows summing to 1, NaN for a document with no known term."""

    def __init__(
        self,
        n_topics: int | None = None,
        *,
        min_df: int = 2,
        max_df: float = 0.5,
        max_features: int = 20_000,
        top_terms: int = 10,
        max_fit_documents: int = 20_000,
        random_state: int = 0,
    ) -> None:
        self.n_topics = n_topics
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.top_terms = top_terms
        self.max_fit_documents = max_fit_documents
        self.random_state = random_state

    def fit(self, documents: Sequence[str], y: Any = None) -> TopicModel:  # noqa: ARG002
        docs = [d for d in (clean(d) for d in documents) if d.strip()]
        if len(docs) > self.max_fit_documents:
            step = len(docs) / self.max_fit_documents
            docs = [docs[int(i * step)] for i in range(self.max_fit_documents)]
        self.vectorizer_ = TfidfVectorizer(
            stop_words=STOP_WORDS, token_pattern=TOKEN_PATTERN, min_df=self.min_df,
            max_df=self.max_df, max_features=self.max_features, sublinear_tf=True)
        try:
            X = self.vectorizer_.fit_transform(docs)
        except ValueError as exc:
            # scikit-learn's words for "every term was pruned" or "only stop words".
            raise InvalidInput(f"too little text to learn topics from {len(docs)} users' "
                               f"texts ({exc})") from None
        n_terms = X.shape[1]
        if min(n_terms, len(docs)) - 1 < 2:
            raise InvalidInput(f"too little text to learn topics: {len(docs)} users' texts "
                               f"with {n_terms} distinct terms")
        self.agreement_by_n_: dict[int, float] = {}
        if self.n_topics:
            wanted = self.n_topics
        else:
            wanted, self.agreement_by_n_ = choose_n_topics(X, random_state=self.random_state)
        n = min(wanted, n_terms - 1, len(docs) - 1)
        self.nmf_ = _nmf(n, self.random_state)
        W = self.nmf_.fit_transform(X)
        shares = _normalized(W)
        prevalence = np.nanmean(shares, axis=0)
        # Most prevalent first, so the columns' order means something and is stable.
        self.order_ = np.argsort(-prevalence, kind="stable")
        vocabulary = self.vectorizer_.get_feature_names_out()
        self.topics_: list[Topic] = []
        seen: set[str] = set()
        for j in self.order_:
            component = self.nmf_.components_[j]
            top = np.argsort(-component, kind="stable")[: max(self.top_terms, 3)]
            total = float(component.sum()) or 1.0
            terms = tuple((str(vocabulary[i]), float(component[i] / total)) for i in top
                          if component[i] > 0)
            label = _unique_label([t for t, _ in terms], seen)
            seen.add(label)
            self.topics_.append(Topic(label, terms[: self.top_terms], float(prevalence[j])))
        return self

    def transform(self, documents: Sequence[str]) -> FloatArray:
        X = self.vectorizer_.transform([clean(d) for d in documents])
        W = self.nmf_.transform(X)[:, self.order_]
        return _normalized(W)


def _normalized(W: FloatArray) -> FloatArray:
    totals = W.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, W / np.where(totals > 0, totals, 1.0), np.nan)


def _unique_label(terms: list[str], taken: set[str]) -> str:
    """The first three terms joined with '-'; more terms (then a number) when that is taken."""
    for n in range(3, len(terms) + 1):
        label = "-".join(terms[:n])
        if label not in taken:
            return label
    base = "-".join(terms[:3]) or "topic"
    i = 2
    while f"{base}-{i}" in taken:
        i += 1
    return f"{base}-{i}"


def is_question(text: str) -> bool:
    """A question mark, or a first word that opens an English question ("how do I ...")."""
    if "?" in text:
        return True
    first = FIRST_WORD.search(text.lower().replace("'", "").replace("\u2019", ""))
    return first is not None and first.group() in QUESTION_WORDS


def conversation_row(texts: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Conversation behaviour from a user's texts (``type``, ``text``, ``hour``, ``session``):
    messages per session with chat (a message without session counts as its own), mean
    message length, share of questions, and the share of texts in each part of the day."""
    nan = float("nan")
    messages = [t for t in texts if t["type"] == "chat_message"]
    row: dict[str, float] = {name: nan for name in TEXT_BEHAVIOUR}
    if messages:
        sessions = {t["session"] for t in messages if t["session"] is not None}
        unsessioned = sum(1 for t in messages if t["session"] is None)
        row["messages_per_session"] = len(messages) / (len(sessions) + unsessioned)
        row["message_length"] = float(np.mean([len(t["text"]) for t in messages]))
        row["question_share"] = float(np.mean([is_question(t["text"]) for t in messages]))
    else:
        row["messages_per_session"] = 0.0
    hours = Counter(int(t["hour"]) for t in texts if t["hour"] is not None)
    total = sum(hours.values())
    if total:
        for name, span in DAY_PARTS.items():
            row[name] = sum(hours[h] for h in span) / total
    return row


def document(texts: Sequence[dict[str, Any]]) -> str:
    """A user's texts as one document for the topic model."""
    return "\n".join(t["text"][:MAX_TEXT_CHARS] for t in texts)


@dataclass
class TextFeatures:
    """The text columns for a list of users (``X`` rows in their order)."""

    names: list[str]
    X: FloatArray
    topics: list[Topic]
    stats: TextStats


def _read_texts(graph: Graph, page_size: int, per_user: int) -> dict[str, list[dict[str, Any]]]:
    texts: dict[str, list[dict[str, Any]]] = {}
    after = ""
    while True:
        page = graph.rows(q.TEXT_PAGE, after=after, limit=page_size, types=list(TEXT_TYPES),
                          per_user=per_user)
        if not page:
            return texts
        for row in page:
            texts[row["user_id"]] = row["texts"]
        after = page[-1]["user_id"]


def text_features(
    graph: Graph, user_ids: Sequence[str], options: TextOptions, *, page_size: int = 2000,
) -> TextFeatures:
    """Conversation and topic columns for ``user_ids`` (the feature table's users), or none
    when the options or the rule say the population's text is not to be used."""
    counts = graph.rows(q.TEXT_COUNTS, types=list(TEXT_TYPES), min_texts=options.rule.min_texts)
    users, writers, documents = (int(counts[0][k] or 0) for k in ("users", "writers",
                                                                  "documents"))
    enough, reason = options.rule.verdict(users, writers, documents)
    if options.mode == "off":
        used, reason = False, f"{reason}; text features are off (PERSONAS_TEXT_FEATURES)"
    elif options.mode == "on":
        used = documents > 0
        reason = (f"{reason}; text features are on (PERSONAS_TEXT_FEATURES)" if used
                  else f"{reason}; text features are on, but there is no text")
    else:
        used = enough
    empty = np.zeros((len(user_ids), 0))
    if not used:
        log.info("text features not used: %s", reason)
        return TextFeatures([], empty, [], TextStats(users, writers, documents, False, reason))
    texts = _read_texts(graph, page_size, options.per_user)
    per_user = [texts.get(uid, []) for uid in user_ids]
    conversation = [conversation_row(t) for t in per_user]
    X = np.array([[row[n] for n in TEXT_BEHAVIOUR] for row in conversation],
                 dtype=np.float64).reshape(len(user_ids), len(TEXT_BEHAVIOUR))
    names = list(TEXT_BEHAVIOUR)
    topics: list[Topic] = []
    docs = [document(t) for t in per_user]
    try:
        model = TopicModel(options.n_topics).fit(docs)
    except InvalidInput as exc:
        reason = f"{reason}; no topics: {exc}"
        log.warning("text features: %s", exc)
    else:
        topics = model.topics_
        X = np.column_stack([X, model.transform(docs)])
        names += [t.feature for t in topics]
        log.info("learned %d topics: %s", len(topics), ", ".join(t.label for t in topics))
    stats = TextStats(users, writers, documents, True, reason)
    return TextFeatures(names, X, topics, stats)


def project_topics(documents: Sequence[str], topics: Sequence[Topic]) -> FloatArray:
    """Topic shares of new documents from the topics' top terms alone (no fitted model): each
    topic scores the sum of its term weights over the document's words, rows normalized, NaN
    for a document with none of the terms. How users who arrive between runs get topic
    shares comparable to the run's."""
    token = re.compile(TOKEN_PATTERN)
    out = np.zeros((len(documents), len(topics)))
    for i, doc in enumerate(documents):
        words = Counter(w.lower() for w in token.findall(clean(doc)))
        for j, topic in enumerate(topics):
            out[i, j] = sum(weight * words[term] for term, weight in topic.terms)
    return _normalized(out)


def texts_of_users(graph: Graph, user_ids: Sequence[str],
                   per_user: int = TEXTS_PER_USER) -> dict[str, list[dict[str, Any]]]:
    """The latest texts of a few users, in one round trip."""
    rows = graph.rows(q.TEXTS_BY_ID, ids=list(user_ids), types=list(TEXT_TYPES),
                      per_user=per_user)
    return {r["user_id"]: r["texts"] for r in rows}
