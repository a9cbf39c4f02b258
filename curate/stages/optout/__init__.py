"""Opt-outs: the creator opt-out registry, machine-readable reservations, and their re-application.

- `registry`: the append-only, hash-chained event log of entries (domain, url_prefix, url, sha256,
  author, work) and per-site files (robots.txt, ai.txt, tdmrep.json).
- `normalize`: canonical URLs, hosts and author names shared by entries and documents.
- `sitefiles`: RFC 9309 robots.txt / ai.txt matching and tdmrep.json evaluation.
- `stage`: the `optout` detector (per-document keys, incremental matching in DuckDB).
- `reapply`: re-applying the registry (changed documents, patching, the diff); `apply` runs it.
"""

from curate.stages.optout import stage  # noqa: F401  (registers the detector)
from curate.stages.optout.reapply import apply
from curate.stages.optout.registry import (
    RegistryError,
    add,
    check_chain,
    entries,
    import_file,
    import_site,
    log,
    revoke,
    state,
)

__all__ = ["RegistryError", "add", "apply", "check_chain", "entries", "import_file", "import_site", "log",
           "revoke", "state"]
