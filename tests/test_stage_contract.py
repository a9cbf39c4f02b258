"""The stage contract: typed settings (unknown keys and wrong types refused, with the rules file named),
`register` refusing a taken name, `requires` failing at construction with the install hint, and the
fingerprint folding the hashes of a stage's assets."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from conftest import CURATE, write_jsonl

from curate.core.errors import ConfigError, MissingDependency
from curate.core.stage import REGISTRY, Detector, StageConfig, load_builtin, parse_config, register
from curate.util.assets import file_asset

MINE = ("dedup_exact", "dedup_fuzzy", "optout", "bias", "pii")

LEXICON = """axis = "demo"
version = "1"
rationale = "test lexicon"

[groups]
men = ["man", "men"]
women = ["woman", "women"]
"""


def rules_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_doc(ws, tmp_path: Path) -> None:
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "text": "A man and a woman met a boy."}]))])


# -- typed settings --------------------------------------------------------------------------------------
def test_a_typo_in_a_stage_section_is_one_line_naming_file_section_and_key(ws, tmp_path):
    one_doc(ws, tmp_path)
    rules = rules_file(tmp_path / "typo.toml", "[stages.dedup_fuzzy]\ntreshold = 0.7\n")
    proc = subprocess.run([*CURATE, "run", str(ws.path), "--rules", str(rules)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(rules) in lines[0] and "[stages.dedup_fuzzy]" in lines[0] and "treshold" in lines[0], lines[0]
    assert "threshold" in lines[0].split("treshold", 1)[1]  # the known settings are listed
    assert "Traceback" not in proc.stderr
    assert ws.sql("SELECT count(*) FROM stage_runs").item() == 0  # refused before any stage ran


def test_a_wrong_type_is_refused(ws, tmp_path):
    rules = rules_file(tmp_path / "type.toml", '[stages.dedup_fuzzy]\nnum_perm = "x"\n')
    with pytest.raises(ConfigError, match=r"type\.toml: \[stages\.dedup_fuzzy\]: num_perm = 'x' is not an integer"):
        ws.run(rules=rules)
    for text in ("num_perm = true", "keeper = [1]", "keeper = \"license\"", "threshold = \"0.8\""):
        rules = rules_file(tmp_path / "type.toml", f"[stages.dedup_fuzzy]\n{text}\n")
        with pytest.raises(ConfigError, match=r"\[stages\.dedup_fuzzy\]: \w+ = .* is not"):
            ws.run(rules=rules)


def test_an_unknown_stage_section_is_refused(ws, tmp_path):
    rules = rules_file(tmp_path / "section.toml", "[stages.nosuchstage]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"section\.toml: unknown stage section.*\[stages\.nosuchstage\]"):
        ws.run(rules=rules)


@pytest.mark.parametrize("name", MINE)
def test_each_stage_declares_its_settings_and_refuses_unknown_keys(name):
    cls = load_builtin()[name]
    assert cls.Config is not StageConfig and issubclass(cls.Config, StageConfig)
    assert cls.Config.__dataclass_params__.frozen
    with pytest.raises(ConfigError, match=rf"^my\.toml: \[stages\.{name}\]: unknown setting no_such_key; known: "):
        cls({"no_such_key": 1}, "my.toml")
    assert cls({"enabled": True}).settings == cls.Config()  # defaults: the settings an empty section gives


def test_settings_are_typed_values_with_the_defaults_of_the_rules_file():
    from curate.core.policy import default_rules_path, load_rules

    raw = load_rules(default_rules_path()).raw["stages"]
    fuzzy = REGISTRY["dedup_fuzzy"](raw["dedup_fuzzy"])
    assert fuzzy.settings.keeper == ("license", "quality", "first_ingested")  # a TOML list -> a tuple
    assert (fuzzy.bands, fuzzy.rows) == (21, 6)
    # every key of the shipped file is a setting, and the shipped values are the defaults
    defaults = REGISTRY["dedup_fuzzy"]().settings
    shipped = [k for k in raw["dedup_fuzzy"] if k not in ("bands", "rows", "catch_probability")]
    assert {k: getattr(defaults, k) for k in shipped} == {k: getattr(fuzzy.settings, k) for k in shipped}
    assert REGISTRY["optout"](raw["optout"]).settings == REGISTRY["optout"]().settings
    margin = REGISTRY["dedup_fuzzy"]({"exact_margin": 0}).settings.exact_margin
    assert margin == 0.0 and isinstance(margin, float)  # an integer for a float field is a float
    with pytest.raises(dataclasses.FrozenInstanceError):
        fuzzy.settings.threshold = 0.5  # type: ignore[misc]


def test_parse_config_converts_lists_and_refuses_what_does_not_fit():
    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        names: tuple[str, ...] = ()
        limit: float | None = None
        table: dict[str, int] = dataclasses.field(default_factory=dict)

    got = parse_config(Config, {"names": ["a", "b"], "limit": 3, "table": {"x": 1}}, "f.toml: [stages.t]")
    assert got == Config(names=("a", "b"), limit=3.0, table={"x": 1}) and isinstance(got.limit, float)
    for raw, why in (({"names": "a"}, "names = 'a' is not a list"),
                     ({"limit": "3"}, "limit = '3' is not a number"),
                     ({"enabled": 1}, "enabled = 1 is not true or false"),
                     ({"table": [1]}, "table = \\[1\\] is not a")):
        with pytest.raises(ConfigError, match=rf"^f\.toml: \[stages\.t\]: {why}"):
            parse_config(Config, raw, "f.toml: [stages.t]")
    with pytest.raises(ConfigError, match=r"^f\.toml: \[stages\.t\]: unknown settings limt, nmes; known: enabled, "
                                          r"limit, names, table$"):
        parse_config(Config, {"nmes": [], "limt": 1}, "f.toml: [stages.t]")
    with pytest.raises(ConfigError, match=r"\[stages\.t\] must be a table"):
        parse_config(Config, 5, "f.toml: [stages.t]")


@pytest.mark.parametrize(("name", "setting", "why"), [
    ("dedup_fuzzy", "catch_probability = 0.95", r"catch_probability = 0\.95, but \d+ bands x \d+ rows"),
    ("dedup_fuzzy", 'keeper = ["license", "newest"]', r"keeper: unknown \['newest'\]"),
    ("dedup_fuzzy", 'shingle = "line"', r"shingle kind must be 'word' or 'char'"),
    ("dedup_fuzzy", "bands = 4", r"bands and rows go together"),
    ("dedup_fuzzy", "bands = 30\nrows = 6", r"bands \(30\) x rows \(6\) exceeds num_perm \(128\)"),
    ("optout", "work_jaccard = 0", r"work_jaccard must be in \(0, 1\], not 0\.0"),
    ("optout", 'work_candidates = "all"', r"work_candidates must be 'auto' or 'scan', not 'all'"),
])
def test_a_stage_s_own_checks_name_the_rules_file(ws, tmp_path, name, setting, why):
    rules = rules_file(tmp_path / "checks.toml", f"[stages.{name}]\n{setting}\n")
    with pytest.raises(ConfigError, match=rf"checks\.toml: \[stages\.{name}\] {why}"):
        ws.run(rules=rules)


# -- the registry and requires --------------------------------------------------------------------------
def test_register_refuses_a_second_stage_of_a_taken_name():
    load_builtin()
    before = REGISTRY["dedup_exact"]

    class Impostor(Detector):
        name = "dedup_exact"

    with pytest.raises(ValueError, match=r"stage name 'dedup_exact' is taken by curate\.stages\.dedup_exact"):
        register(Impostor)
    assert REGISTRY["dedup_exact"] is before
    assert register(before) is before  # the same class again (a module imported twice) is no conflict


class NeedsMissing(Detector):
    name = "test_needs_missing"
    requires = {"no_such_module_xyz": "no-such-package"}


class NeedsMissingParent(Detector):
    name = "test_needs_missing_parent"
    requires = {"no_such_module_xyz.sub": "no-such-package"}


@pytest.mark.parametrize("cls", [NeedsMissing, NeedsMissingParent])
def test_an_unmet_requirement_fails_at_construction_with_the_install_hint(cls):
    with pytest.raises(MissingDependency, match=r"needs no-such-package \(`pip install no-such-package`\)"):
        cls()


def test_an_enabled_stage_with_an_unmet_requirement_stops_the_run_and_others_leave_it_out(ws, tmp_path):
    from curate.core.stage import instances

    register(NeedsMissing)
    try:
        with pytest.raises(MissingDependency, match="pip install no-such-package"):
            ws.run(stages=["test_needs_missing"])
        assert "test_needs_missing" not in {d.name for d in instances({})}  # the policy does without it
    finally:
        REGISTRY.pop("test_needs_missing")


def test_pii_requires_what_it_imports_lazily(tmp_path):
    import importlib.util

    from curate.stages.pii.spec import load_recognizers, recognizers_path

    cls = load_builtin()["pii"]
    model = load_recognizers(recognizers_path())["model"]
    assert {"presidio_analyzer", "spacy", model} <= set(cls.requires)
    assert all(importlib.util.find_spec(m) for m in cls.requires)  # import names, all installed here
    other = recognizers_path().read_text().replace(f'model = "{model}"', 'model = "no_such_spacy_model_xyz"')
    path = rules_file(tmp_path / "r.toml", other)
    with pytest.raises(MissingDependency, match=r"needs the spaCy model no_such_spacy_model_xyz .*r\.toml"):
        cls({"recognizers": str(path)})


# -- the fingerprint ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MINE)
def test_no_stage_of_mine_overrides_the_fingerprint(name):
    assert "fingerprint" not in vars(load_builtin()[name])


class WithAsset(Detector):
    name = "test_with_asset"

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        path: str = ""  # the asset file

    def assets(self):
        return [file_asset("test", self.settings.path, "1")]


def test_the_fingerprint_folds_version_settings_and_asset_hashes(tmp_path):
    asset = tmp_path / "list.txt"
    asset.write_text("one\n")
    det = WithAsset({"path": str(asset)})
    fp = det.fingerprint()
    assert WithAsset({"path": str(asset)}).fingerprint() == fp  # stable
    asset.write_text("two\n")
    assert det.fingerprint() != fp  # same settings, edited asset


def test_editing_a_bias_lexicon_changes_the_fingerprint_and_recomputes(ws, tmp_path):
    lexicons = tmp_path / "lexicons"
    lexicons.mkdir()
    (lexicons / "demo.toml").write_text(LEXICON)
    rules = rules_file(tmp_path / "bias.toml", f'[stages.bias]\nlexicons = "{lexicons}"\n')
    one_doc(ws, tmp_path)
    ws.run(stages=["bias"], rules=rules)
    before = ws.sql("SELECT DISTINCT fingerprint FROM stage_runs WHERE stage = 'bias'").rows()
    assert before == [(REGISTRY["bias"]({"lexicons": str(lexicons)}).fingerprint(),)]
    (lexicons / "demo.toml").write_text(LEXICON.replace('men = ["man", "men"]', 'men = ["man", "men", "boy"]'))
    assert REGISTRY["bias"]({"lexicons": str(lexicons)}).fingerprint() != before[0][0]
    report = ws.run(stages=["bias"], rules=rules).stages[0]
    assert report.documents == 1  # recomputed
    assert ws.sql("SELECT count FROM bias_terms WHERE group_name = 'men'").item() == 2
    (lexicons / "more.toml").write_text(LEXICON.replace('axis = "demo"', 'axis = "more"'))
    assert ws.run(stages=["bias"], rules=rules).stages[0].documents == 1  # a new lexicon is an asset too


def test_assets_cover_the_files_the_rows_depend_on():
    from curate.stages.optout.sitefiles import agents_file
    from curate.stages.pii.spec import recognizers_path
    from curate.util.assets import rules_dir, sha256_file

    load_builtin()
    hashes = {name: {a["sha256"] for a in REGISTRY[name]().assets()} for name in ("optout", "pii", "bias")}
    assert sha256_file(agents_file()) in hashes["optout"]
    assert sha256_file(recognizers_path()) in hashes["pii"]
    assert {sha256_file(p) for p in (rules_dir() / "lexicons").glob("*.toml")} == hashes["bias"]


def test_dedup_fuzzy_fingerprints_only_what_the_signatures_depend_on():
    cls = load_builtin()["dedup_fuzzy"]
    fp = cls().fingerprint()
    assert cls({"threshold": 0.9, "max_bucket": 10, "keeper": ["first_ingested"]}).fingerprint() == fp
    assert cls({"num_perm": 128, "shingle": "word", "ngram": 5, "seed": 1}).fingerprint() == fp  # the defaults
    for changed in ({"num_perm": 64}, {"seed": 2}, {"ngram": 4}, {"shingle": "char"}):
        assert cls(changed).fingerprint() != fp, changed
