"""Pseudonymization: identifiers and PII become keyed HMACs before anything is stored or logged.

Free text is searched for emails (a regular expression that runs in linear time whatever the
input) and phone numbers (Google's libphonenumber rules, through ``phonenumbers``), and declared
profile attributes are held to a PII policy (``attribute_value``): direct identifiers are not
attributes at all, a postal code is kept only coarsened.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Callable, Iterator

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatch, PhoneNumberMatcher

# An email: a local part, "@", one or more domain labels with dots, a top-level domain of
# letters. Unicode letters count (`jöhn@exämple.de`). Linear time on any input: the local part
# may only start where no local-part character precedes it (the look-behind), so a long run of
# letters is one attempt, not one per position, and the possessive quantifiers (`*+`, `++`)
# never give back what they consumed, so no attempt backtracks into a run it has read.
EMAIL_RE = re.compile(r"(?<![\w.%+-])[\w.%+-]++@(?:[^\W_][\w-]*+\.)+[^\W\d_]{2,63}")

DEFAULT_PHONE_REGION = "US"
"""Where a phone number written without a country code (``(808) 782-1557``) is assumed to be;
``PERSONAS_PHONE_REGION`` sets it. Numbers with ``+`` and a country code are found anywhere."""
PHONE_LENIENCY = Leniency.POSSIBLE
"""Which candidates ``phonenumbers`` reports; ``find_phones`` then keeps only the credible ones.
VALID alone misses well-formed numbers in unassigned or fictional ranges (``555-123-4567``,
``+44 7700 900123``), which are still someone's contact detail in a chat; POSSIBLE alone takes
counts such as ``1000000`` for local numbers. Measured on the labelled texts of
``tests/unit/test_phone_scrubbing.py``: POSSIBLE with the filter below finds every number and no
year, range, count, decimal, price, date or time; VALID alone misses 4 of the 14 numbers."""
MIN_DIGITS_TO_SCAN = 7
"""No phone number has fewer digits: text with fewer skips the (slower) matcher."""
_DIGIT = re.compile(r"\d")
_PHONE_PUNCTUATION = re.compile(r"[\s()/-]")
# Without a bound the matcher gives up after 65,535 false candidates and would leave later
# numbers of a very long text in the clear; each candidate is bounded work, so this stays linear.
_MAX_TRIES = 1 << 62

SCAN_CHARS = 4000
"""The longest text searched for contact details whole (``mask_contacts``, ``scrub_text``): the
longest free text an event may carry. What is longer (an error message naming a huge field, a
reject's reason) is cut first, before a contact detail the cut would split, and ends in
``CUT_MARK``: matching is linear, but phone matching is slow enough on digit-dense text that a
megabyte would hold a request or a consumer for seconds (figures: docs/performance.md)."""
CONTACT_CHARS = 256
"""No contact detail is longer (an email address is at most 254 characters): the margin scanned
beyond ``SCAN_CHARS`` to see whether the cut splits one."""
CUT_MARK = "…"

CACHE_SIZE = 200_000

IDENTIFIER_KINDS = ("crm_id", "email", "phone", "chat_handle", "cookie", "device_id")
"""Identifier kinds, most authoritative first (the first present names a new user)."""

DIRECT_IDENTIFIER_ATTRIBUTES = frozenset({
    *IDENTIFIER_KINDS, "mobile", "telephone", "name", "full_name", "first_name", "last_name",
    "surname", "given_name", "address", "street", "street_address", "address_line",
    "ssn", "social_security_number", "national_id", "passport", "passport_number", "tax_id",
    "driving_licence", "drivers_license", "ip", "ip_address", "birth_date", "date_of_birth",
    "dob", "birthday", "credit_card", "card_number", "iban", "account_number",
})
"""Attribute names refused outright: they name a person (identifiers belong under ``user``,
where they are hashed; an age under ``age_band``)."""
POSTAL_CODE_ATTRIBUTES = frozenset({"postal_code", "postcode", "post_code", "zip", "zip_code",
                                    "zipcode"})
"""Quasi-identifiers kept only coarsened (``coarsen_postal_code``): a full postal code narrows a
person down to a street, and with an age band and a gender often to one person."""
_UK_POSTCODE = re.compile(r"[A-Z]{1,2}\d[A-Z\d]?\d[A-Z]{2}")


BLANK_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
"""Control and format characters (zero-width spaces and joiners, a BOM, direction marks) and
every kind of space."""
BLANK_CHARACTERS = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0"
    + "".join(map(chr, range(0x180B, 0x1810))) + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0))))
"""Characters of other categories that show nothing: the combining grapheme joiner, Hangul
and Khmer fillers, the blank Braille pattern, variation selectors."""


def blank(text: str) -> bool:
    """Whether ``text`` shows nothing: made only of spaces, control and format characters and
    the few others that render as nothing (``BLANK_CHARACTERS``). Such a value, an identifier
    or a name, looks empty to whoever reads it, and after normalization is empty."""
    if text.isascii():
        return not any("!" <= c <= "~" for c in text)
    return all(c in BLANK_CHARACTERS or unicodedata.category(c) in BLANK_CATEGORIES
               for c in text)


def normalize_identifier(kind: str, value: str) -> str:
    """Canonical form, so that ``A@B.com `` and ``a@b.com`` pseudonymize alike.

    Text that looks the same is the same person: one form for composed and decomposed letters
    (NFC; for emails and phones NFKC, which also reads fullwidth ``ｊ＠ｂ.de`` and ``４９`` as
    ASCII), invisible format characters (zero-width spaces and joiners, a BOM, direction marks)
    dropped (unless nothing else is left), and a phone's digits of any script (``٤٩``) written
    as ASCII. Each had made one person several users. Look-alike letters of other scripts (a
    Cyrillic ``а``) are kept: such an address may be another person's."""
    if not value.isascii():
        # Only invisible characters: kept, or every such value would be one user.
        visible = "".join(c for c in value if unicodedata.category(c) != "Cf").strip() or value
        value = unicodedata.normalize("NFKC" if kind in ("email", "phone") else "NFC", visible)
    value = value.strip()
    if kind == "email":
        return value.lower()
    if kind == "phone":
        digits = re.sub(r"\D", "", value)
        if not digits.isascii():
            digits = "".join(str(unicodedata.decimal(c)) for c in digits)
        return ("+" if value.startswith("+") else "") + digits
    return value


def check_phone_region(region: str) -> str:
    """``region`` as a region code ``phonenumbers`` knows (``US``, ``GB``...); ValueError if not."""
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r}; use an ISO 3166 alpha-2 code "
                         "such as US, GB or DE")
    return code


def _credible(match: PhoneNumberMatch) -> bool:
    """A candidate the matcher took as a possible number that is one in the text, too.

    A valid number (an assigned range of its country) is one. Otherwise it must look like one:
    written with a ``+`` and country code, or a full national number (ten digits or more) set
    out with phone punctuation (spaces, dashes, brackets, a slash). Bare digit runs and groups
    separated only by dots or commas are counts, amounts, versions or ids (``1000000``,
    ``1.000.000``, ``1732787200``)."""
    if phonenumbers.is_valid_number(match.number):
        return True
    raw = match.raw_string
    if raw.startswith("+"):
        return True
    return len(_DIGIT.findall(raw)) >= 10 and _PHONE_PUNCTUATION.search(raw) is not None


def find_phones(text: str, region: str = DEFAULT_PHONE_REGION) -> Iterator[PhoneNumberMatch]:
    """The phone numbers in ``text`` (``start``, ``end``, ``raw_string``), in order, numbers
    without a country code read as numbers of ``region``."""
    if _DIGIT.search(text) is None or len(_DIGIT.findall(text)) < MIN_DIGITS_TO_SCAN:
        return
    for match in PhoneNumberMatcher(text, region, leniency=PHONE_LENIENCY, max_tries=_MAX_TRIES):
        if _credible(match):
            yield match


def replace_phones(text: str, token: Callable[[str], str],
                   region: str = DEFAULT_PHONE_REGION) -> str:
    """``text`` with each phone number replaced whole by ``token(number as written)``."""
    parts: list[str] = []
    done = 0
    for match in find_phones(text, region):
        parts += [text[done:match.start], token(match.raw_string)]
        done = match.end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _cut(text: str, region: str) -> tuple[str, str]:
    """``text`` cut to at most ``SCAN_CHARS``, before any contact detail the cut would split,
    and what to append (``CUT_MARK`` if anything was cut)."""
    if len(text) <= SCAN_CHARS:
        return text, ""
    # Only around the cut: a detail that straddles it lies within CONTACT_CHARS either side.
    offset = SCAN_CHARS - CONTACT_CHARS
    window = text[offset:SCAN_CHARS + CONTACT_CHARS]
    cut = SCAN_CHARS
    spans = [m.span() for m in EMAIL_RE.finditer(window)] if "@" in window else []
    spans += [(m.start, m.end) for m in find_phones(window, region)]
    for start, end in sorted(spans, reverse=True):
        if offset + start < cut < offset + end:
            cut = offset + start
    return text[:cut], CUT_MARK


def mask_contacts(text: str, region: str = DEFAULT_PHONE_REGION) -> str:
    """Emails and phone numbers in ``text`` replaced by ``[email]`` and ``[phone]``: for text
    that must keep no contact detail and needs no stable pseudonym (free text stored as notes,
    log lines). Text longer than ``SCAN_CHARS`` is cut first (``_cut``)."""
    text, mark = _cut(text, region)
    text = EMAIL_RE.sub("[email]", text) if "@" in text else text
    return replace_phones(text, lambda _: "[phone]", region) + mark


def coarsen_postal_code(value: str) -> str:
    """The leading part of a postal code, which names an area rather than a street: a UK
    postcode's outward code (``SW1A 1AA`` -> ``SW1A``), otherwise the first three characters
    (a US ZIP code's sectional centre, ``94107`` -> ``941``; a Canadian forward sortation area,
    ``K1A 0B1`` -> ``K1A``; German and French codes to their region)."""
    compact = re.sub(r"[\s-]", "", value).upper()
    if _UK_POSTCODE.fullmatch(compact):
        return compact[:-3]
    return compact[:3]


class Pseudonymizer:
    """Keyed HMAC-SHA256 of identifiers and of PII found in free text."""

    def __init__(self, key: str, phone_region: str = DEFAULT_PHONE_REGION) -> None:
        if not key:
            raise ValueError("The pseudonymization key must not be empty.")
        self._key = key.encode()
        self.phone_region = check_phone_region(phone_region)
        # The same identifiers recur in every event of a user; hashing each once matters at
        # ingest rates of thousands of events a second.
        self._cache: dict[tuple[str, str], str] = {}

    def digest(self, kind: str, value: str) -> str:
        cached = self._cache.get((kind, value))
        if cached is not None:
            return cached
        message = f"{kind}:{normalize_identifier(kind, value)}".encode()
        result = hmac.digest(self._key, message, "sha256").hex()  # OpenSSL's one-shot HMAC
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
        """Replace emails and phone numbers in free text by stable pseudonyms. Text longer
        than ``SCAN_CHARS`` is cut first (``_cut``)."""
        text, mark = _cut(text, self.phone_region)
        if "@" in text:
            text = EMAIL_RE.sub(lambda m: f"[email:{self.digest('email', m.group())[:10]}]",
                                text)
        return replace_phones(text, self._phone_token, self.phone_region) + mark

    def _phone_token(self, number: str) -> str:
        return f"[phone:{self.digest('phone', number)[:10]}]"

    def attribute_value(self, name: str, value: str) -> str:
        """A declared profile attribute's value as stored: a postal code coarsened
        (``coarsen_postal_code``), and emails and phone numbers in any value replaced by
        pseudonyms as in free text. ``name`` is the attribute's name without its prefix."""
        if name in POSTAL_CODE_ATTRIBUTES:
            return coarsen_postal_code(value)
        return self.scrub_text(value)
