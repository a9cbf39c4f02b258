"""`curate quality`: train a quality model, score with one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli.app import WS, Rules, app, friendly, out

quality_app = typer.Typer(no_args_is_help=True, help="The learned quality score: train a model, try one.")
app.add_typer(quality_app, name="quality")


@quality_app.command("train")
@friendly
def quality_train(
    ws: WS,
    positive: Annotated[Path, typer.Option(help="Good examples: .jsonl (field text) or .txt (one per line).")],
    negative: Annotated[Path, typer.Option(help="Bad examples, same formats.")],
    rules: Rules = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Model file (default: WS/models/quality-<hash>.bin).")
                        ] = None,
) -> None:
    """Train a small fastText classifier (settings: the rules file's quality_model table), stored by its hash."""
    from curate.stages.quality import train

    r = train(ws, positive, negative, rules=rules, out=out_file)
    acc = "n/a" if r.holdout_accuracy is None else f"{r.holdout_accuracy:.3f}"
    out.print(f"model {r.path} (sha256 {r.sha256[:16]}…): {r.positive} positive, {r.negative} negative examples, "
              f"hold-out accuracy {acc}", highlight=False)
    out.print(f"use it: in your rules file set [stages.quality] model = \"{r.path.resolve()}\" and "
              f"model_label = \"{r.params['positive_label']}\", then `curate run`", markup=False, highlight=False)


@quality_app.command("score")
@friendly
def quality_score(
    ws: WS,
    model: Annotated[Path, typer.Option(help="Any fastText classifier (.bin or .ftz).")],
    label: Annotated[str, typer.Option(help="The label whose probability is the score.")] = "__label__hq",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write doc_id, score (.parquet).")] = None,
) -> None:
    """Score every document with a fastText classifier without changing the workspace."""
    from curate.stages.quality import score

    s = score(ws, model, label=label, out=out_file)
    q = ", ".join(f"{k} {v:.3f}" for k, v in s.quantiles.items())
    mean = "n/a" if s.mean is None else f"{s.mean:.3f}"
    out.print(f"{s.documents} documents scored with {s.model} ({s.label}): mean {mean}; {q}", highlight=False)
    if s.out:
        out.print(f"scores written to {s.out}")
