"""Megabyte-sized hostile text through every scrubber: emails are matched in linear time, and
text longer than ``SCAN_CHARS`` is cut (before any contact detail the cut would split) before
the slower phone matcher sees it, so no input holds a request or a consumer for long. The
assertions check results; the times are in docs/performance.md (``bench/scrub.py``)."""

from __future__ import annotations

import json

import pytest

from graph.ingest.deadletter import MAX_RAW_CHARS, NESTED, make_dead_letter, scrub_record
from graph.ingest.reader import read_jsonl
from graph.privacy import CUT_MARK, EMAIL_RE, SCAN_CHARS, Pseudonymizer, mask_contacts

P = Pseudonymizer("k")
MB = 1_000_000

HOSTILE = {
    "letters": "a" * MB,
    "dots": "." * MB,
    "digits": "1" * MB,
    "at signs": "@" * MB,
    "letter-at": "a@" * (MB // 2),
    "letter-dot": "x@" + "a." * (MB // 2),
    "digits and spaces": "1 " * (MB // 2),
    "digits and dashes": "1-" * (MB // 2),
    "plus digits": "+1" * (MB // 2),
    "phones": "(808) 782-1557 " * (MB // 15),
    "emails": "a@b.co " * (MB // 7),
    "unicode letters": "ö" * MB + "@",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_megabyte_of_hostile_text_is_scrubbed(kind: str) -> None:
    text = HOSTILE[kind]
    for scrubbed in (mask_contacts(text), P.scrub_text(text)):
        assert scrubbed.endswith(CUT_MARK)
        assert len(scrubbed) <= 4 * SCAN_CHARS  # a token is at most 3x what it replaces
        assert EMAIL_RE.search(scrubbed) is None
        assert "782-1557" not in scrubbed


def test_the_email_pattern_alone_is_linear_on_a_megabyte() -> None:
    for text in HOSTILE.values():
        assert len(EMAIL_RE.sub("", text)) <= len(text)
    tail = "a." * (MB // 2) + " jöhn@exämple.de"
    assert [m.group() for m in EMAIL_RE.finditer(tail)] == ["jöhn@exämple.de"]


def test_unicode_emails_are_scrubbed() -> None:
    assert mask_contacts("mail jöhn@exämple.de now") == "mail [email] now"
    scrubbed = P.scrub_text("jöhn@exämple.de")
    assert scrubbed == f"[email:{P.digest('email', 'jöhn@exämple.de')[:10]}]"


@pytest.mark.parametrize("detail", ["jane.doe@example.com", "(808) 782-1557"])
@pytest.mark.parametrize("shift", [-10, -5, -1, 0, 1, 5])
def test_a_cut_never_leaves_part_of_a_contact_detail(detail: str, shift: int) -> None:
    """The contact detail straddles the cut: it is dropped whole, not left half readable."""
    text = "x " * ((SCAN_CHARS + shift) // 2) + detail + " tail " + "y" * 5000
    for scrubbed in (mask_contacts(text), P.scrub_text(text)):
        for piece in ("jane", "doe", "example", "808", "782", "1557"):
            assert piece not in scrubbed, scrubbed[-80:]
        assert scrubbed.endswith(CUT_MARK)


def test_phone_precision_holds() -> None:
    """Years, ranges, counts and decimals stay; a bracketed US number goes whole."""
    text = "from 1910-1920, 1000000 visitors, 3.14159 and 2.5, call (808) 782-1557 today"
    assert mask_contacts(text) == \
        "from 1910-1920, 1000000 visitors, 3.14159 and 2.5, call [phone] today"


@pytest.mark.parametrize("raw", [
    "[" * MB,
    '{"a":' * 100_000,
    "[" * 1000 + "]" * 1000,
    '{"user": {"email": "' + "a" * MB + '"}}',
    '{"user": {"email": "\\ud800"}}',
    '{"crm_id": "C-1", "x": "' + "1 " * (MB // 2) + '"}',
])
def test_a_megabyte_or_deeply_nested_record_makes_a_dead_letter(raw: str) -> None:
    """The standard library's parser raised RecursionError on deep nesting: a crash of the
    file import and a poison message for the consumer."""
    letter = make_dead_letter(P, source="f.jsonl", reason="bad " * MB, raw=raw)
    assert len(letter.record) <= MAX_RAW_CHARS
    assert len(letter.reason) <= SCAN_CHARS + 1
    assert "aaaaaaaaaa" not in letter.record
    letter.record.encode()  # storable: no lone surrogate
    assert letter.truncated == (len(raw) > MAX_RAW_CHARS)


def test_deep_records_are_cut_at_a_bounded_depth() -> None:
    nested = json.loads("[" * 100 + "]" * 100)
    assert NESTED in scrub_record(P, json.dumps(nested))


def test_a_file_line_of_deep_nesting_is_a_reject() -> None:
    import io

    stream = io.BytesIO(("[" * 100_000 + "\n").encode())
    (reject,) = list(read_jsonl(stream, 2 * MB))
    assert "invalid JSON" in reject.reason  # type: ignore[union-attr]
    assert make_dead_letter(P, source="f", reason=reject.reason,  # type: ignore[union-attr]
                            raw=reject.raw).record.startswith("[[[")  # type: ignore[union-attr]
