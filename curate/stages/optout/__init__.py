"""Opt-outs: the creator opt-out registry, machine-readable reservations, and their re-application.

- `registry`: the append-only, hash-chained event log of entries (domain, url_prefix, url, sha256,
  author, work) and per-site files (robots.txt, ai.txt, tdmrep.json).
- `normalize`: canonical URLs, hosts and author names shared by entries and documents.
- `sitefiles`: RFC 9309 robots.txt / ai.txt matching (linear-time patterns; Content-Usage and Content-Signal
  lines) and tdmrep.json evaluation.
- `standards`: the versioned list of reservation standards and the parsers of IETF AI preferences, Content
  Signals and CAWG training-and-data-mining assertions.
- `evidence`: what showed each reservation honoured (site file hash and fetch date, or the document's own
  value), and reserved documents counted by standard.
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
