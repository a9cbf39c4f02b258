"""The creators' opt-out portal: a web service and page where creators submit, prove, look up and revoke.

- `store`: the portal's own database (SQLite by default, PostgreSQL for several instances): requests, their
  events, the published lookup index. Never a batch job's workspace file.
- `requests`: validation of a submission (the registry's own checks), status, revocation, the events log.
- `proof`: signed, expiring contact links; site tokens under `/.well-known/` and the verifier that checks them.
- `mail`: pluggable transports (SMTP, a directory of .eml files).
- `aipref`: IETF AI-preferences statements, robots.txt `Content-Usage` / `Content-Signal` lines.
- `lookup`: `publish` (a release's index without text) and the lookups answered from it.
- `sync`: verified events from a store (or a portal URL) into a workspace's registry, each once.
- `app`: the ASGI app (FastAPI): the JSON API with its OpenAPI schema, and the HTML page (`page`).
"""
