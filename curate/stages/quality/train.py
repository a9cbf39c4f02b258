"""Training a fastText quality classifier (deterministic, stored by its hash) and scoring a workspace's documents
with any classifier without changing the workspace (`curate quality train` / `curate quality score`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.core.errors import UserError
from curate.stages.quality.model import Classifier, fasttext_module, one_line

TRAIN_DEFAULTS: dict[str, Any] = {  # overridden by the rules file's [quality_model] table
    "dim": 8, "bucket": 10000, "epoch": 25, "lr": 0.5, "word_ngrams": 2, "min_count": 3, "seed": 1,
    "positive_label": "__label__hq", "negative_label": "__label__lq", "max_chars": 20000,
}


def read_examples(path: str | os.PathLike[str]) -> list[str]:
    """Training texts: JSON Lines with a `text` field (.jsonl, .jsonl.gz), or plain text, one per line."""
    import gzip

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    out = []
    with opener(p, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            if ".jsonl" in p.suffixes or ".json" in p.suffixes:
                try:
                    text = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{p}: line {i} is not a JSON object with a 'text' field") from None
                if not isinstance(text, str):
                    raise UserError(f"{p}: line {i}: 'text' is not a string")
                out.append(text)
            else:
                out.append(line.rstrip("\n"))
    return out


@dataclass
class TrainResult:
    path: Path
    sha256: str
    positive: int
    negative: int
    holdout_accuracy: float | None  # on every 10th example, by a model trained on the other nine tenths
    params: dict[str, Any]


_FIT = """import sys, json, fasttext
p = json.loads(sys.argv[3])
try:
    m = fasttext.train_supervised(input=sys.argv[1], dim=p["dim"], bucket=p["bucket"], epoch=p["epoch"], lr=p["lr"],
                                  wordNgrams=p["word_ngrams"], minCount=p["min_count"], seed=p["seed"], thread=1,
                                  verbose=0)
except RuntimeError as e:
    sys.exit(f"fastText training failed ({e}); try a lower lr in the rules file's [quality_model]")
m.save_model(sys.argv[2])
"""


def _fit(lines: list[str], workdir: Path, name: str, p: dict[str, Any]) -> Path:
    """Train with one thread (reproducible bytes) in a fresh interpreter whose large allocations come from
    fresh, zeroed pages. fasttext-numpy2 0.10.4 does not zero its weight matrix and, with one thread, fastText
    initialises only its first tenth; reused heap memory then gives a different model or "Encountered NaN"."""
    import subprocess
    import sys

    data, model = workdir / f"{name}.txt", workdir / f"{name}.bin"
    data.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    args = {k: (float(p[k]) if k == "lr" else int(p[k]))
            for k in ("dim", "bucket", "epoch", "lr", "word_ngrams", "min_count", "seed")}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4096"}  # glibc: every block over 4 KiB is a fresh mmap
    done = subprocess.run([sys.executable, "-c", _FIT, str(data), str(model), json.dumps(args)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise UserError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "fastText training failed")
    return model


def train(ws: str | os.PathLike[str], positive: str | os.PathLike[str], negative: str | os.PathLike[str],
          rules: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train a fastText quality classifier and store it in WS/models/ named by its hash (or at `out`).

    Deterministic: same examples and settings give the same file. Next to the model, a .json records the
    settings, the example files' hashes and the hold-out accuracy."""
    import random
    import shutil

    from curate.core.policy import load_rules
    from curate.core.workspace import Workspace
    from curate.util.assets import sha256_file

    w = Workspace(ws)
    params = {**TRAIN_DEFAULTS, **load_rules(rules).raw.get("quality_model", {})}
    pos, neg = read_examples(positive), read_examples(negative)
    if not pos or not neg:
        raise UserError(f"need examples of both classes: {len(pos)} positive ({positive}), {len(neg)} negative "
                         f"({negative})")
    cut = int(params["max_chars"])
    examples = [f"{params['positive_label']} {one_line(t[:cut])}" for t in pos] + \
               [f"{params['negative_label']} {one_line(t[:cut])}" for t in neg]
    random.Random(int(params["seed"])).shuffle(examples)
    fasttext_module(train=True)  # fail early, with the fix, if the module cannot train
    tmpdir = w.path / ".tmp"
    tmpdir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        holdout = examples[::10]
        accuracy = None
        if len(holdout) >= 2 and len(examples) - len(holdout) >= 2:
            trial = Classifier(_fit([x for i, x in enumerate(examples) if i % 10], Path(d), "trial", params))
            truth = [x.split(" ", 1)[0].removeprefix("__label__") for x in holdout]
            guess, _ = trial.top([x.split(" ", 1)[1] if " " in x else "" for x in holdout])
            accuracy = sum(g == t for g, t in zip(guess, truth, strict=True)) / len(holdout)
        model = _fit(examples, Path(d), "model", params)
        sha = sha256_file(model)
        dest = Path(out) if out else w.path / "models" / f"quality-{sha[:12]}.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(model), dest)
    record = {"sha256": sha, "params": params, "holdout_accuracy": accuracy,
              "positive": {"path": str(positive), "sha256": sha256_file(positive), "examples": len(pos)},
              "negative": {"path": str(negative), "sha256": sha256_file(negative), "examples": len(neg)}}
    dest.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return TrainResult(dest, sha, len(pos), len(neg), accuracy, params)


@dataclass
class ScoreSummary:
    model: Path
    label: str
    documents: int
    mean: float | None
    quantiles: dict[str, float]
    out: Path | None


def score(ws: str | os.PathLike[str], model: str | os.PathLike[str], label: str = "__label__hq",
          out: str | os.PathLike[str] | None = None) -> ScoreSummary:
    """Score every document with any fastText classifier (probability of `label`), without changing the
    workspace: try a model before naming it in the rules file ([stages.quality] model, model_label)."""
    import duckdb
    import pyarrow.parquet as pq

    from curate.core.workspace import Workspace

    clf = Classifier(model, label)
    parts = []
    with Workspace(ws).connect() as con:
        reader = con.sql("SELECT doc_id, text FROM documents ORDER BY doc_id").to_arrow_reader(1000)
        for batch in reader:
            texts = [t or "" for t in batch.column("text").to_pylist()]
            parts.append(pa.table({"doc_id": batch.column("doc_id"), "score": pa.array(clf.prob(texts), pa.float64())}))
    table = pa.concat_tables(parts) if parts else pa.table({"doc_id": pa.array([], pa.string()),
                                                            "score": pa.array([], pa.float64())})
    if out:
        pq.write_table(table, out)
    mem = duckdb.connect()
    mem.register("s", table)
    mean, q = mem.execute("SELECT avg(score), quantile_cont(score, [0.1, 0.5, 0.9]) FROM s").fetchall()[0]
    mem.close()
    quantiles = dict(zip(("p10", "p50", "p90"), q or [], strict=False))
    return ScoreSummary(Path(model), label, table.num_rows, mean, quantiles, Path(out) if out else None)
