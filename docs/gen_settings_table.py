"""Print the README's settings table from the settings class (run: python docs/gen_settings_table.py)."""

from triage.settings import setting_path, settings_table


def main() -> None:
    print("| Variable | Setting | Default | Meaning |")
    print("|---|---|---|---|")
    for env, default, description in settings_table():
        shown = f"`{default}`".replace("|", "\\|") if default else "(empty)"
        meaning = description.replace("|", "/")
        print(f"| `{env}` | `{setting_path(env)}` | {shown} | {meaning} |")


if __name__ == "__main__":
    main()
