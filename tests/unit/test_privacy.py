from __future__ import annotations

from graph.privacy import Pseudonymizer


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
