"""Pseudonymization: identifiers and PII become keyed HMACs before anything is stored or logged."""

from __future__ import annotations

import hashlib
import hmac
import re

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Phone numbers: an optional +, then 7 to 15 digits, allowing spaces, dots, dashes and brackets;
# ISO dates and times (2026-11-28, 10:00:00) are not phone numbers.
PHONE_RE = re.compile(r"(?<![\w+:-])(?!\d{4}-\d\d-\d\d)\+?\d[\d\s().-]{5,18}\d(?![\w:])")

CACHE_SIZE = 200_000

IDENTIFIER_KINDS = ("crm_id", "email", "phone", "chat_handle", "cookie", "device_id")
"""Identifier kinds, most authoritative first (the first present names a new user)."""


def normalize_identifier(kind: str, value: str) -> str:
    """Canonical form, so that ``A@B.com `` and ``a@b.com`` pseudonymize alike."""
    value = value.strip()
    if kind == "email":
        return value.lower()
    if kind == "phone":
        digits = re.sub(r"\D", "", value)
        return ("+" if value.startswith("+") else "") + digits
    return value


def mask_contacts(text: str) -> str:
    """Emails and phone numbers in ``text`` replaced by ``[email]`` and ``[phone]``: for text
    that must keep no contact detail and needs no stable pseudonym (free text stored as notes,
    log lines)."""
    text = EMAIL_RE.sub("[email]", text)
    return PHONE_RE.sub(lambda m: "[phone]" if len(re.sub(r"\D", "", m.group())) >= 7
                        else m.group(), text)


class Pseudonymizer:
    """Keyed HMAC-SHA256 of identifiers and of PII found in free text."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("The pseudonymization key must not be empty.")
        self._key = key.encode()
        # The same identifiers recur in every event of a user; hashing each once matters at
        # ingest rates of thousands of events a second.
        self._cache: dict[tuple[str, str], str] = {}

    def digest(self, kind: str, value: str) -> str:
        cached = self._cache.get((kind, value))
        if cached is not None:
            return cached
        message = f"{kind}:{normalize_identifier(kind, value)}".encode()
        result = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[(kind, value)] = result
        return result

    def user_id(self, kind: str, value: str) -> str:
        """The pseudonymous id of a user first seen with this identifier."""
        return "u_" + self.digest(kind, value)[:20]

    def device_id(self, value: str) -> str:
        return "d_" + self.digest("device_id", value)[:20]

    def scrub_text(self, text: str) -> str:
        """Replace emails and phone numbers in free text by stable pseudonyms."""
        text = EMAIL_RE.sub(lambda m: f"[email:{self.digest('email', m.group())[:10]}]", text)
        return PHONE_RE.sub(self._phone_token, text)

    def _phone_token(self, match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        if len(digits) < 7:
            return match.group()
        return f"[phone:{self.digest('phone', match.group())[:10]}]"
