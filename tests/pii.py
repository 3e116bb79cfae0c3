"""The suite-wide plaintext-PII sweep: the database (before every wipe and at the end), the
logs of the test process, and the dead letters must hold no email address or phone number in
the clear.

"In the clear" means what ingestion's scrubber (``graph.privacy``) takes for an email or phone
number, phones with at least 9 digits: every number the tests feed has more, while shorter runs
are log noise such as "200 1374.1" (status and latency of an access-log line), and decimals
such as "1024.8385756557827" (a score in a JSON string) are numbers, not phones. Phones are
searched for as the scrubber does (its default region) and, wider than it, as valid numbers of
the other regions the tests' data uses in national format (``SWEEP_REGIONS``). The tests feed
the demo population's emails and phone numbers (as identifiers and inside chat text) and their
own, so a leak anywhere shows up here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phonenumbers import Leniency, PhoneNumberMatcher

from graph.db import Graph
from graph.privacy import EMAIL_RE, find_phones

# Every string (or list of strings) property of every node and relationship that `pii_in` could
# find something in: one holding an "@" (every email has one), or, outside identifier keys
# (`ID_KEY`, searched for emails only), at least PHONE_DIGITS characters that are ASCII digits
# or not ASCII at all (a superset of Python's Unicode `\d`, whatever Unicode version each side
# knows). The same leaks as sending every string, without shipping and decoding the tens of
# thousands of strings of a demo graph (pseudonyms, hashes, names) before every wipe.
STRING_PROPERTIES = """
CALL () {
  MATCH (n) UNWIND keys(n) AS key
  RETURN labels(n)[0] AS owner, key, n[key] AS value
  UNION ALL
  MATCH ()-[r]->() UNWIND keys(r) AS key
  RETURN type(r) AS owner, key, r[key] AS value
}
WITH owner, key, value
WHERE value IS :: STRING OR value IS :: LIST<STRING>
WITH owner, key, value, CASE WHEN value IS :: STRING THEN [value] ELSE value END AS texts
WHERE any(text IN texts WHERE text CONTAINS '@'
          OR (NOT key =~ $id_key AND text =~ $digits))
RETURN owner, key, value
"""


@dataclass(frozen=True)
class Leak:
    where: str
    what: str
    during: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what!r} (found after {self.during})"


PHONE_DIGITS = 9
DECIMAL = re.compile(r"-?\d+\.\d+")
"""A decimal number (a score in a JSON string), which no phone number is written as."""
DIGIT = re.compile(r"\d")
SWEEP_REGIONS = ("GB", "DE")
FOUND: list[Leak] = []
"""Leaks seen so far in this test session, reported by the final sweep test."""


def pii_in(text: str) -> list[str]:
    """Plaintext emails and phone numbers in ``text``, as ingestion's scrubber finds them."""
    found = [m.group() for m in EMAIL_RE.finditer(text)]
    if len(DIGIT.findall(text)) < PHONE_DIGITS:
        return found
    phones = {(m.start, m.raw_string) for m in find_phones(text)}
    for region in SWEEP_REGIONS:
        phones |= {(m.start, m.raw_string)
                   for m in PhoneNumberMatcher(text, region, Leniency.VALID)}
    found += [raw for start, raw in sorted(phones)
              if sum(c.isdigit() for c in raw) >= PHONE_DIGITS and not DECIMAL.fullmatch(raw)
              and not embedded(text, start, start + len(raw))]
    return found


def embedded(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is a piece of something longer that the matcher cut out: the
    fraction or whole part of a decimal ("0.0894084134425" in a JSON list of scores), or digits
    inside a token of letters and digits (a run id "run-20261206T195343-7306ab", a hex digest
    "dl_c8d9…b3059652095e…"). A phone number written out stands apart from letters."""
    before, after = text[max(0, start - 2):start], text[end:end + 2]
    return bool(re.fullmatch(r"\d\.", before) or re.fullmatch(r"\.\d", after)
                or before[-1:].isalnum() or after[:1].isalnum())


def current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "the session").split(" ")[0]


ID_KEY = re.compile(r"(?:^|_)(?:id|ids|hash)$")
"""Keys whose values are identifiers or digests (``id``, ``order_id``, ``hash``): a digest or an
id made only of digits and dashes (a demo session ``41-000008-11``, a pseudonym ``4378507449``)
can be a dialable number by chance, so only emails are searched there; a phone number would only
get there as the id a client chose."""

CANDIDATE_PARAMS = {
    "id_key": r"(?:.*_)?(?:id|ids|hash)",
    "digits": r"(?s)(?:[\x00-\x2F\x3A-\x7F]*+[^\x00-\x2F\x3A-\x7F]){" + str(PHONE_DIGITS) + "}.*",
}
"""The parameters of STRING_PROPERTIES: ``ID_KEY`` as a whole-key match (it matches no key that
``ID_KEY`` misses), and PHONE_DIGITS digit-like characters as a Java regular expression."""


def scan_graph(graph: Graph) -> list[Leak]:
    leaks = []
    for row in graph.rows(STRING_PROPERTIES, **CANDIDATE_PARAMS):
        values: Iterable[Any] = row["value"] if isinstance(row["value"], list) else [row["value"]]
        for value in values:
            hits = (EMAIL_RE.findall(str(value)) if ID_KEY.search(row["key"])
                    else pii_in(str(value)))
            leaks += [Leak(f"Neo4j {row['owner']}.{row['key']}", hit, current_test())
                      for hit in hits]
    return leaks


def scan_files(paths: Iterable[Path], what: str) -> Iterator[Leak]:
    for path in paths:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for hit in pii_in(text):
            yield Leak(f"{what} {path}", hit, "the session")


def record_graph_leaks(graph: Graph) -> None:
    """Called before each wipe, so every test's data is searched before it goes."""
    FOUND.extend(scan_graph(graph))
