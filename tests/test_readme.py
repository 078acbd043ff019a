"""The README opens with the two set-up commands and documents every setting."""

from pathlib import Path

from triage.settings import settings_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_starts_with_make_run_and_make_test():
    head = README.split("```")[1]
    assert "make run" in head and "make test" in head


def test_every_setting_is_in_the_readme_table():
    missing = [env for env, _, _ in settings_table() if f"`{env}`" not in README]
    assert missing == []
