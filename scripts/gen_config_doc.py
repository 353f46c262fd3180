"""Write docs/configuration.md from the settings table in ferry/_config.py."""

from pathlib import Path

from ferry._config import SETTINGS

lines = [
    "# Configuration",
    "",
    "Every setting is an environment variable with the `FERRY_` prefix, read when used (not at",
    "import). This page is generated from `ferry/_config.py` by `scripts/gen_config_doc.py`.",
    "",
    "| variable | default | meaning |",
    "| --- | --- | --- |",
]
for setting in SETTINGS.values():
    try:
        default = setting.default()
    except Exception:  # pragma: no cover
        default = "?"
    if setting.name == "home":
        default = "~/.ferry"
    if setting.name == "default_max_containers":
        default = "2 × CPU count"
    if setting.name == "base_rootfs_dir":
        default = "$FERRY_HOME/images/base"
    lines.append(f"| `{setting.env_var}` | `{default}` | {setting.help} |")
Path(__file__).resolve().parent.parent.joinpath("docs", "configuration.md").write_text("\n".join(lines) + "\n")
