"""What README.md and docs/MONITOR.md say about the monitor: valid commands, the settings' real
defaults, and the figures of the benchmark run they quote (benchmarks/results-cpu-monitor.json)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from trd.cli import cli
from trd.runtime.monitor import MonitorSettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOC = (ROOT / "docs" / "MONITOR.md").read_text(encoding="utf-8")
RESULTS = json.loads((ROOT / "benchmarks" / "results-cpu-monitor.json").read_text(encoding="utf-8"))


def _section() -> str:
    found = re.search(r"^## Monitor a line\b.*?(?=^## )", README, flags=re.S | re.M)
    assert found, "README.md has no '## Monitor a line' section"
    return found.group(0)


def test_commands_parse_and_defaults_are_the_monitors() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", _section() + DOC, flags=re.S)
    lines = [line.partition("#")[0] for block in blocks for line in block.splitlines() if line.strip()]
    assert len(lines) == 3
    for line in lines:
        words = shlex.split(line)
        assert words[0].endswith("trd") and words[1] == "monitor", line
        cli.get_command(None, "monitor").make_context("monitor", words[2:])  # type: ignore[union-attr]
    settings = MonitorSettings()
    for command, prefix in (("monitor", ""), ("serve", "monitor_")):
        params = {p.name: p for p in cli.get_command(None, command).params}  # type: ignore[union-attr]
        assert (params["window"].default, params["alpha"].default) == (settings.window, settings.alpha), command
        assert f"--{prefix.replace('_', '-')}window" in params["window"].opts
    assert f"| window: the last N scans the checks look at | `--window` | `--monitor-window` | {settings.window} |" in DOC
    assert f"| false-alarm level of each check per window | `--alpha` | `--monitor-alpha` | {settings.alpha:g} |" in DOC
    assert "docs/MONITOR.md" in _section() and RESULTS["settings"] == {"window": settings.window, "alpha": settings.alpha}


def test_quoted_figures_are_the_benchmarks() -> None:
    drifts = RESULTS["end_to_end"]["drifts"]
    for name, row in drifts.items():
        if row["median"] is None:
            continue
        found = ", ".join(str(x) for x in row["scans_until_alarm"])
        assert re.search(rf"^\| {re.escape(name)} \| `{row['check']}` \| \d+ \| {row['median']:g} \({found}\) \|$", DOC, re.M), name
    assert RESULTS["end_to_end"]["good_scans"] == 1000 and RESULTS["end_to_end"]["good_alarms"] == {}
    section = _section()
    for name, words in (("RGB brightness x 0.8", "RGB brightness x 0.8 after {}"), ("z offset +2 mm", "+2 mm after {}"),
                        ("30 % of 3D points dropped", "of 3D points lost after {}")):
        assert words.format(f"{drifts[name]['median']:g}") in " ".join(section.split()), name
    for name, row in RESULTS["simulation"]["defect_rate_10pct"].items():
        n, recall = re.fullmatch(r"n=(\d+), recall~([\d.]+)", name).groups()
        cell = (f"{'-' if row['median'] is None else format(row['median'], 'g')} ({row['alarmed']} of {row['repeats']}; "
                f"recall {row['recall']:.2f})")
        line = next(x for x in DOC.splitlines() if x.startswith(f"| {n} ("))
        assert line.split(" | ")[1 if recall == "0.5" else 2].strip(" |") == cell, (name, line)
    replay = RESULTS["end_to_end"]["replay_records_per_cpu_s"]
    assert f"replays about {round(replay, -3):,.0f} records per CPU second" in " ".join(DOC.split())
    for n, row in RESULTS["simulation"]["false_alarms_in_1000_good"].items():
        assert f"{row['runs_with_an_alarm']} of {row['runs']} runs with n = {n}" in " ".join(DOC.split()) or \
               f"{row['runs_with_an_alarm']} of {row['runs']} with n = {n}" in " ".join(DOC.split()), n
