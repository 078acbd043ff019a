"""Print the README's settings table from the settings class (run: python docs/gen_settings_table.py)."""

from triage.settings import settings_table


def main() -> None:
    print("| Variable | Default | Meaning |")
    print("|---|---|---|")
    for env, default, description in settings_table():
        shown = f"`{default}`".replace("|", "\\|") if default else "(empty)"
        print(f"| `{env}` | {shown} | {description.replace('|', '/')} |")


if __name__ == "__main__":
    main()
