"""The read model's pure rules: consent, confidence, and the chat context's token budget."""

from __future__ import annotations

from datetime import UTC, datetime

from graph.auth import Role
from graph.profile.chat import DATA_NOTE, estimate_tokens, facts, within_budget
from graph.profile.consent import withheld
from graph.profile.model import (
    Consents,
    LocalEvent,
    Location,
    PersonaRecord,
    Preference,
    Situation,
    UserPersona,
    confidence,
)

GRANTED, WITHDRAWN = Consents(True, True), Consents(False, True)


def test_withdrawn_consent_hides_personal_fields_from_all_but_analysts() -> None:
    assert not withheld(GRANTED, None) and not withheld(GRANTED, Role.READER)
    assert withheld(WITHDRAWN, None) and withheld(WITHDRAWN, Role.READER)
    assert withheld(WITHDRAWN, Role.WRITER)
    assert not withheld(WITHDRAWN, Role.ANALYST) and not withheld(WITHDRAWN, Role.ADMIN)


def test_confidence_is_one_at_the_centre_and_a_half_at_the_median() -> None:
    assert confidence(0.0, 2.0) == 1.0
    assert confidence(2.0, 2.0) == 0.5
    assert confidence(4.0, 2.0) == 2.0 ** -4
    assert confidence(None, 2.0) is None and confidence(1.0, 0.0) is None


def test_the_budget_drops_the_least_important_facts_first_and_keeps_the_note() -> None:
    persona = UserPersona(PersonaRecord("p", "Bargain hunter", "Buys on sale. " * 5), None,
                          None, None)
    prefs = [Preference("books", 0.6, "explicit", None)]
    here = Situation(Location("berlin", "Berlin", "DE", None), None,
                     [LocalEvent("e", "Jazz night", datetime(2026, 12, 9, tzinfo=UTC), None)])
    found = facts(persona, prefs, ['searched "tents"'], here)
    assert [f.priority for f in found] == [5, 1, 4, 3, 2, 0]
    text, kept = within_budget(found, 2000)
    assert kept == found and text.endswith(DATA_NOTE)
    text, kept = within_budget(found, 40)
    assert estimate_tokens(text) <= 40
    assert [f.priority for f in kept] == [5, 4, 3]  # description, place and event dropped
    assert text.splitlines()[-1] == DATA_NOTE
    text, kept = within_budget(found, 6)
    assert kept == [found[0]] and DATA_NOTE not in text  # no quoted line, no note
