"""`curate config --show`: every environment variable and rules-file setting, its effective value and its source."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from curate.core.config import show, variables
from curate.core.stage import load_builtin

ROOT = Path(__file__).resolve().parent.parent
CURATE = [sys.executable, "-m", "curate.cli"]


def run(*args: str, cwd: Path | None = None, code: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*CURATE, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("CURATE_")}, **env})
    assert r.returncode == code, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def rules_file(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "my.toml"
    p.write_text((ROOT / "rules" / "default.toml").read_text() + "\n" + extra)
    return p


def setting(shown: dict, section: str, key: str) -> dict:
    return next(s for s in shown["settings"] if (s["section"], s["key"]) == (section, key))


def test_text_shows_environment_and_rules_file_sources(tmp_path: Path) -> None:
    rules = rules_file(tmp_path, "[stages.licenses]\nmin_recall = 0.6\n")
    out = run("config", "--show", "--rules", str(rules), CURATE_MEMORY_LIMIT="777MB").stdout
    assert re.search(r"^CURATE_MEMORY_LIMIT +777MB +\(environment\)$", out, re.M), out
    assert re.search(r"^CURATE_WORKERS +0 +\(default\)$", out, re.M), out
    assert f"# rules file: {rules} (as given, from the current directory)" in out
    section = out.split("[stages.licenses]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "min_recall = 0.6  # rules file" in section
    assert "min_precision = 0.75  # default" in section


def test_json_parses_with_every_variable_and_stage_setting(tmp_path: Path) -> None:
    rules = rules_file(tmp_path, "[stages.licenses]\nmin_recall = 0.6\n")
    shown = json.loads(run("config", "--show", "--format", "json", "--rules", str(rules),
                           CURATE_WORKERS="3").stdout)
    env = {v["name"]: v for v in shown["environment"]}
    assert env["CURATE_WORKERS"]["value"] == "3" and env["CURATE_WORKERS"]["source"] == "environment"
    assert env["CURATE_LOG"]["value"] == "text" and env["CURATE_LOG"]["source"] == "default"
    assert shown["rules_file"]["path"] == str(rules) and shown["rules_file"]["sha256"]
    assert shown["rules_dir"]["source"] == "source checkout"
    assert setting(shown, "stages.licenses", "min_recall") == {
        "section": "stages.licenses", "key": "min_recall", "value": 0.6, "source": "rules file", "default": 0.75}
    assert setting(shown, "stages.dedup_fuzzy", "keeper")["value"] == ["license", "quality", "first_ingested"]
    for name, cls in load_builtin().items():  # every field of every stage's Config
        for f in dataclasses.fields(cls.Config):
            assert setting(shown, f"stages.{name}", f.name)
    assert setting(shown, "pii", "min_score")["source"] == "rules file"
    assert setting(shown, "quality_model", "dim")["source"] == "rules file"
    assert shown["problems"] == []


def test_invalid_log_format_and_secrets_and_unknown_keys(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CURATE_LOG", "yaml")  # curate ignores it: text
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    shown = show(rules_file(tmp_path, "[stages.licenses]\nmin_recal = 0.6\n"))
    env = {v["name"]: v for v in shown["environment"]}
    assert env["CURATE_LOG"]["value"] == "text" and "ignored" in env["CURATE_LOG"]["source"]
    assert env["AWS_SECRET_ACCESS_KEY"]["value"] == "(set)"
    assert "do-not-print-me" not in json.dumps(shown)
    assert setting(shown, "stages.licenses", "min_recal")["source"] == "rules file (unknown: refused)"
    assert any("min_recal" in p for p in shown["problems"])


def test_rules_bare_name_falls_back_to_the_rules_directory(tmp_path: Path) -> None:
    shown = json.loads(run("config", "--format", "json", "--rules", "default.toml", cwd=tmp_path).stdout)
    assert shown["rules_file"]["path"] == str(ROOT / "rules" / "default.toml")
    assert shown["rules_file"]["found"].startswith("in the rules directory")
    r = run("config", "--rules", "nope.toml", cwd=tmp_path, code=2)
    assert f"tried {tmp_path / 'nope.toml'}, {ROOT / 'rules' / 'nope.toml'}" in r.stderr
    shown = json.loads(run("config", "--format", "json", cwd=tmp_path, CURATE_RULES_DIR=str(ROOT / "rules")).stdout)
    assert shown["rules_dir"]["source"] == "environment"
    assert {"name": "CURATE_RULES_DIR", "source": "environment"}.items() <= \
        next(v for v in shown["environment"] if v["name"] == "CURATE_RULES_DIR").items()


def test_every_variable_the_package_reads_is_listed_and_documented() -> None:
    read = set()
    for p in (ROOT / "curate").rglob("*.py"):
        read |= set(re.findall(r"""(?:environ(?:\.get|\.setdefault)?\(|environ\[|getenv\()\s*["']([A-Z0-9_]+)["']""",
                               p.read_text()))
    listed = {v.name for v in variables()}
    assert read and not read - listed, f"read but not listed in curate.core.config.variables(): {read - listed}"
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    assert not [n for n in listed if f"`{n}`" not in section]
