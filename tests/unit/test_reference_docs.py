"""docs/cli.md and docs/settings.md are generated from the code (`make docs`); like the SDL, a
test fails while a page differs from what the code renders now."""

from __future__ import annotations

from pathlib import Path

from graph.settings import REPO_ROOT, Settings
from personas.reference import PAGES, REGENERATE, render_settings, stale_pages


def test_the_generated_reference_pages_match_the_code() -> None:
    assert stale_pages() == [], f"run `{REGENERATE}` (and commit the result)"


def test_a_page_edited_by_hand_is_stale(tmp_path: Path) -> None:
    for page in PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text((REPO_ROOT / page).read_text(encoding="utf-8"),
                                     encoding="utf-8")
    assert stale_pages(tmp_path) == []
    settings_page = tmp_path / "docs" / "settings.md"
    settings_page.write_text(settings_page.read_text(encoding="utf-8")
                             .replace("Neo4j user name.", "The user."), encoding="utf-8")
    (tmp_path / "docs" / "cli.md").unlink()
    assert stale_pages(tmp_path) == ["docs/cli.md", "docs/settings.md"]


def test_every_setting_is_documented_once_with_its_description() -> None:
    page = render_settings()
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        assert page.count(f"| `PERSONAS_{name.upper()}` |") == 1
