"""curate installs like a package: the wheel built from pyproject.toml carries the default rules (lexicons,
licence templates, opt-out lists, models), and an install of it runs the demo flow from another directory
without the checkout: the code and the rules come from the wheel, the dependencies from this venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARD = ROOT / "data" / "samples" / "licenses.jsonl.zst"  # 109 documents


def _setuptools_version() -> tuple[int, ...]:
    try:
        from importlib.metadata import version

        return tuple(int(p) for p in version("setuptools").split(".")[:2] if p.isdigit())
    except Exception:
        return (0,)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (a build writes build/ and *.egg-info beside them)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "setup.py"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "curate", src / "curate", symlinks=True, ignore=ignore)  # curate/_rules -> ../rules
    shutil.copytree(ROOT / "rules", src / "rules", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check", "-w", str(out)]
    if _setuptools_version() >= (77,):  # build-system requires setuptools>=77: use this venv's when it has one
        cmd.append("--no-build-isolation")
    r = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("curate-*.whl")
    return whl


def test_wheel_ships_the_rules_as_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    rules = {p.relative_to(ROOT / "rules").as_posix() for p in (ROOT / "rules").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    assert {"default.toml", "models/quality-default.bin", "optout/ai_agents.toml", "pii/recognizers.toml",
            "licenses/templates.toml"} <= rules
    assert not {f"curate/_rules/{r}" for r in rules} - names  # every file of rules/, under curate/_rules/
    assert not [n for n in names if n.startswith("rules/")]  # nothing at the top level of site-packages
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(meta).decode()


def test_installed_wheel_runs_the_flow_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
                        "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CURATE_RULES_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), COLUMNS="200")

    def python(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == code, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def curate(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        return python("-m", "curate.cli", *args, code=code)

    r = python("-c", "import curate; from curate.util.assets import rules_source; "
                     "print(curate.__file__); print(*rules_source())")
    module, rules = r.stdout.splitlines()
    assert Path(module).is_relative_to(target), module  # the wheel's copy, not the checkout's
    assert rules == f"{target / 'curate' / '_rules'} package"

    curate("init", "ws")
    curate("ingest", "ws", str(SHARD))
    curate("run", "ws", "--stages", "dedup_exact,optout")
    curate("decide", "ws")
    curate("manifest", "ws", "--out", "m")
    r = curate("verify", "m")
    run = json.loads((cwd / "m" / "run.json").read_text())
    assert Path(run["rules"]["path"]).is_relative_to(target / "curate" / "_rules")
    assets = [a["path"] for s in run["stages"] for a in s["assets"] if a["kind"] == "optout-ai-agents"]
    assert assets == ["rules/optout/ai_agents.toml"]  # named as in a checkout

    # --rules: a bare name not in the current directory is the packaged one; a missing one names both places
    r = curate("decide", "ws", "--rules", "default.toml")
    r = curate("decide", "ws", "--rules", "nope.toml", code=2)
    assert f"tried {cwd / 'nope.toml'}, {target / 'curate' / '_rules' / 'nope.toml'}" in r.stderr
    shown = json.loads(curate("config", "--show", "--format", "json").stdout)
    assert shown["rules_dir"] == {"path": str(target / "curate" / "_rules"), "source": "package"}
