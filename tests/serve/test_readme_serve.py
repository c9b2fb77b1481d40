"""The README's "Serve" section: its commands are valid `trd` command lines, the URL it names is
where `trd serve` listens by default, the screenshot it shows is there and small, and the page it
describes is package data (shipped by `pip install trd-anomaly`)."""

from __future__ import annotations

import re
import shlex
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from trd.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Serve\b.*?(?=^## )", text, flags=re.S | re.M)
    assert found, "README.md has no '## Serve' section"
    return found.group(0)


def test_readme_serve_commands_parse_and_name_the_default_url() -> None:
    block = re.search(r"```bash\n(.*?)```", _section(), flags=re.S)
    assert block
    commands = []
    for line in filter(str.strip, block.group(1).splitlines()):
        command, _, comment = line.partition("#")
        words = shlex.split(command)
        assert words[0].endswith("trd"), line
        sub = cli.get_command(None, words[1])  # type: ignore[arg-type]
        assert sub is not None, line
        sub.make_context(words[1], words[2:])  # every option exists and its value is valid
        commands.append(words)
        if words[1] == "serve":
            defaults = {p.name: p.default for p in sub.params}
            assert f"http://{defaults['host']}:{defaults['port']}/" in comment
    export, serve = commands
    assert (export[1], serve[1]) == ("export", "serve")
    assert export[export.index("--out") + 1] == serve[serve.index("--model") + 1]  # it serves what was exported


def test_readme_serve_screenshot_and_docs_exist() -> None:
    section = _section()
    for target in re.findall(r"\]\(([^)]+)\)", section) + re.findall(r"`(docs/[^`]+\.md)`", section):
        assert (ROOT / target).is_file(), target
    image = ROOT / "docs" / "images" / "serve.png"
    assert "docs/images/serve.png" in section and image.stat().st_size < 300_000
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["trd.serve"]
    static = ROOT / "src" / "trd" / "serve" / "static"
    files = sorted(p.relative_to(static.parent).as_posix() for p in static.iterdir())
    assert {"static/index.html", "static/app.js", "static/style.css"} <= set(files)
    assert [f for f in files if not any(fnmatch(f, g) for g in globs)] == []
