"""The analyst notebooks run top to bottom (nbmake) against the sample workspace, and are committed clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist_and_carry_no_outputs():
    assert [p.name for p in NOTEBOOKS] == ["01_explore.ipynb", "02_what_if.ipynb", "03_optout_update.ipynb"]
    for p in NOTEBOOKS:
        cells = json.loads(p.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), p.name


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_against_the_sample_workspace(notebook, sample_ws, tmp_path):
    env = {**os.environ, "CURATE_WORKSPACE": str(sample_ws), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                          "--nbmake-timeout=600", str(notebook)], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout[-4000:]
    assert "1 passed" in res.stdout
