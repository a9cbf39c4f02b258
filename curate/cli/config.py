"""Command `config`: the configuration in force (environment variables, rules directory and file, settings)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from curate.cli.app import Rules, app, err, friendly, out


@app.command()
@friendly
def config(
    show: Annotated[bool, typer.Option("--show", show_default=False,
                                       help="Show the configuration in force (what the command does).")] = True,
    rules: Rules = None,
    format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """The configuration in force: environment variables, rules directory and file, rules-file settings.

    Each variable and setting with its effective value and where it came from (environment / rules file /
    default); the rules file and directory with where they were found."""
    from curate.core.config import show as current
    from curate.core.errors import UserError

    if format not in ("text", "json"):
        raise UserError(f"--format must be text or json, not {format!r}")
    c = current(rules)
    if format == "json":
        out.print_json(json.dumps(c), indent=2)
        return
    say = lambda line="": out.print(line, markup=False, highlight=False)  # noqa: E731
    width = max(len(v["name"]) for v in c["environment"])
    vwidth = max(len(str(v["value"])) for v in c["environment"])
    say("# environment variables: value (source)")
    for v in c["environment"]:
        say(f"{v['name']:<{width}}  {str(v['value']) or '-':<{vwidth}}  ({v['source']})")
    d, f = c["rules_dir"], c["rules_file"]
    say()
    say(f"# rules directory: {d['path']} ({d['source']})")
    say(f"# rules file: {f['path']} ({f['found']}); sha256 {f['sha256']}")
    say(f"# {f['rules']} [[rules]]; policy: {', '.join(f'{k} {v}' for k, v in f['policy'].items()) or '-'}")
    section = None
    for s in c["settings"]:
        if s["section"] != section:
            section = s["section"]
            say()
            say(f"[{section}]")
        say(f"{s['key']} = {json.dumps(s['value'], ensure_ascii=False)}  # {s['source']}")
    for p in c["problems"]:
        err.print(f"warning: {p}", markup=False, highlight=False)
