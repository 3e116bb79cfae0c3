from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from graph.privacy import BLANK_CHARACTERS, Pseudonymizer, blank


def test_digest_is_keyed_and_normalized() -> None:
    a, b = Pseudonymizer("k1"), Pseudonymizer("k2")
    assert a.digest("email", " Jane@Example.COM ") == a.digest("email", "jane@example.com")
    assert a.digest("email", "jane@example.com") != b.digest("email", "jane@example.com")
    assert a.digest("phone", "+44 20 7946 0958") == a.digest("phone", "+442079460958")
    assert a.user_id("cookie", "x").startswith("u_") and len(a.user_id("cookie", "x")) == 22


def test_scrub_text_replaces_emails_and_phones_only() -> None:
    # A number in national format (no country code) is read in the configured region: this
    # one is a Liverpool number (PERSONAS_PHONE_REGION=GB).
    p = Pseudonymizer("k", phone_region="GB")
    text = p.scrub_text("Mail me at ann.lee@example.org or ring 0151 234 5678 on 2026-11-28, "
                        "order 12345 at 10:00:00")
    assert "ann.lee" not in text and "234 5678" not in text
    assert "[email:" in text and "[phone:" in text
    assert "2026-11-28" in text and "order 12345" in text and "10:00:00" in text


INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202e", "\u200f", "\u00ad"]


@given(local=st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1,
                     max_size=12),
       domain=st.text(st.characters(codec="utf-8", categories=["Ll"]), min_size=1,
                      max_size=12),
       invisible=st.sampled_from(INVISIBLE), at=st.integers(min_value=0, max_value=30))
def test_an_email_that_looks_the_same_is_the_same_user(local: str, domain: str,
                                                      invisible: str, at: int) -> None:
    """Composed and decomposed letters, an invisible character pasted along, fullwidth forms:
    one person, one pseudonym (each had made a user of its own)."""
    p = Pseudonymizer("k")
    email = f"{local}@{domain}.de"
    same = {p.user_id("email", unicodedata.normalize("NFC", email)),
            p.user_id("email", unicodedata.normalize("NFD", email)),
            p.user_id("email", email[:at] + invisible + email[at:]),
            p.user_id("email", unicodedata.normalize("NFKD", email).replace("@", "\uff20"))}
    assert len(same) == 1, email


def test_a_phone_in_other_digits_is_the_same_user() -> None:
    p = Pseudonymizer("k")
    same = {p.user_id("phone", v) for v in ["+49 30 1234567", "+٤٩ ٣٠ ١٢٣٤٥٦٧",
                                            "+４９ ３０ １２３４５６７", "\u200e+49 30 1234567"]}
    assert len(same) == 1


def test_look_alike_letters_of_another_script_stay_another_user() -> None:
    p = Pseudonymizer("k")
    assert p.user_id("email", "anna@example.com") != p.user_id("email", "\u0430nna@example.com")


def test_values_of_invisible_characters_only_stay_apart() -> None:
    """Dropping format characters must not make every invisible-only value one user."""
    p = Pseudonymizer("k")
    users = {p.user_id("email", v) for v in ["\u200b", "\u200c", "\ufeff", " \u200b "]}
    assert len(users) == 3 and p.user_id("email", "") not in users


@given(st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=8),
       st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=3))
def test_blank_means_nothing_shows(invisible: str, shown: str) -> None:
    """``blank``: only control, format and space characters (and the fillers that render as
    nothing); one letter, digit, mark of punctuation or symbol among them and it is not."""
    assert blank(invisible)
    assert blank(invisible + "\u3164\u2800\ufe0f")
    assert blank(invisible[:2] + shown + invisible[2:]) == blank(shown)
    assert not blank(shown) or all(c in BLANK_CHARACTERS for c in shown)
