"""The portal's HTML: plain, accessible pages (labels, landmarks, no script, no CDN, no external font).

Every value that came from outside goes through `html.escape` (the `e` helper) before it is written; the
pages are built from constant templates only.
"""

from __future__ import annotations

from html import escape
from typing import Any

from curate.portal import proof
from curate.portal.requests import CONTACT_KINDS, LABELS, SITE_KINDS

CSS = """body{font-family:system-ui,sans-serif;max-width:46rem;margin:1rem auto;padding:0 1rem;line-height:1.5;
color:#111}
label{display:block;font-weight:600;margin-top:.6rem}input,select,textarea{width:100%;box-sizing:border-box;
font:inherit;padding:.3rem}textarea{min-height:6rem}button{margin-top:.8rem;padding:.4rem 1rem;font:inherit}
fieldset{margin:1rem 0;border:1px solid #888}code,.token{background:#eee;padding:0 .2rem;word-break:break-all}
.status{font-size:1.2rem;font-weight:700}.error{color:#900;font-weight:600}nav a{margin-right:1rem}
:focus{outline:3px solid #36c}"""

WHAT_HAPPENS = """<h2 id="what-happens">What happens to your request</h2>
<ol>
<li><strong>Received.</strong> You get a receipt with a request id. Keep it: it is how you check the status
and how you revoke. Your request is stored as <em>pending</em>.</li>
<li><strong>Proof.</strong> For a whole site, part of a site or a site's robots.txt / TDMRep file, you place a
token we give you in <code>/.well-known/curate-optout.txt</code> on that site; our verifier checks pending
sites regularly. For a page, a work, a name or an exact text, you open a link we mail to you (valid for 48
hours). Until then nothing is applied.</li>
<li><strong>Registry.</strong> The curation team copies verified requests into its opt-out registry before each
release. Your status page says when.</li>
<li><strong>Releases.</strong> Every release made after that leaves out the matching documents, and your
status page shows how many were left out. Releases already published are not changed.</li>
<li><strong>Revoke.</strong> You can revoke at any time from your status page, with the same proof (a link
mailed to the same address, or a new token on the same site). Nobody else can revoke your request.</li>
</ol>
<p>We keep your e-mail address only to send these links. Lookups never show anyone's text or personal data:
only whether something is in a release and what happened to it.</p>"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)} · Opt-out portal</title><link rel="stylesheet" href="/portal.css"></head>
<body><header><nav aria-label="Portal"><a href="/">Opt out</a><a href="/status">Status</a><a href="/lookup">Look up</a>
</nav></header><main id="main"><h1>{e(title)}</h1>
{body}</main></body></html>"""


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def index(csrf: str) -> str:
    forms = []
    for kind in SITE_KINDS + CONTACT_KINDS:
        fid = f"f-{kind}"
        if kind in ("robots_txt", "tdmrep"):
            value = (f'<label for="{fid}-site">Site (host name)</label><input id="{fid}-site" name="site" required '
                     f'placeholder="www.example.org"><label for="{fid}-value">The file\'s text</label>'
                     f'<textarea id="{fid}-value" name="value" required></textarea>')
        elif kind == "work":
            value = (f'<label for="{fid}-value">The work\'s text (at least 20 words)</label>'
                     f'<textarea id="{fid}-value" name="value" required></textarea>')
        else:
            hint = {"domain": "example.org", "url_prefix": "https://example.org/gallery/",
                    "url": "https://example.org/poems/42", "author": "Your name as it appears on your work",
                    "sha256": "64 hexadecimal digits"}[kind]
            value = (f'<label for="{fid}-value">{e(LABELS[kind].split("(")[-1].rstrip(")").capitalize())}</label>'
                     f'<input id="{fid}-value" name="value" required placeholder="{e(hint)}">')
        required = " required" if kind in CONTACT_KINDS else ""
        contact_help = "we mail you a confirmation link" if kind in CONTACT_KINDS else "optional"
        forms.append(f"""<form method="post" action="/submit"><fieldset><legend>Opt out {e(LABELS[kind])}</legend>
{_csrf(csrf)}<input type="hidden" name="kind" value="{e(kind)}">{value}
<label for="{fid}-contact">Your e-mail address ({contact_help})</label>
<input id="{fid}-contact" name="contact" type="email"{required} autocomplete="email">
<label for="{fid}-prefs">AI preferences (optional, e.g. <code>train-ai=n, search=y</code>; empty means
opt out of training)</label><input id="{fid}-prefs" name="prefs">
<label for="{fid}-evidence">Anything we should know (optional)</label><input id="{fid}-evidence" name="evidence">
<button type="submit">Send request</button></fieldset></form>""")
    return layout("Leave your work out of our training data", f"""<p>Ask us to leave a site, part of a site, a page,
a work or a name out of the datasets we curate for training AI models. You can also send your site's robots.txt
(with <code>Content-Usage</code> or <code>Content-Signal</code> lines) or TDMRep file.</p>{WHAT_HAPPENS}
<h2>Your request</h2>{''.join(forms)}""")


def receipt(r: dict[str, Any]) -> str:
    body = [f'<p>Your request id is <strong id="request-id">{e(r["id"])}</strong>. Keep it.</p>',
            f'<p class="status">Status: <span id="status">{e(r["status"])}</span></p>']
    if r.get("token"):
        body.append(f"""<p>Prove that the site is yours: add this line to <code>{e(r['place_at'])}</code>
(a plain text file, one token per line):</p><p><code class="token" id="token">{e(r['token'])}</code></p>
<p>Our verifier checks pending sites regularly; when it finds the token, your request is verified.</p>""")
    elif r.get("mailed"):
        body.append("<p>We mailed a confirmation link to the address you gave. Open it within 48 hours.</p>")
    else:
        body.append("<p>We could not send the confirmation mail just now. Ask for it again from the status page.</p>")
    body.append(f'<p><a href="/status?id={e(r["id"])}">See the status of this request</a></p>')
    return layout("Request received", "".join(body))


def status_form(message: str = "") -> str:
    err = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    return layout("Status of a request", f"""{err}<form method="get" action="/status">
<label for="id">Request id</label><input id="id" name="id" required placeholder="rq-…">
<button type="submit">Show status</button></form>""")


def status(st: dict[str, Any], csrf: str) -> str:
    rows = [("Request", st["id"]), ("Kind", LABELS.get(st["kind"], st["kind"])), ("What", st["value"]),
            ("Received", st["received_at"]), ("Verified", st["verified_at"] or "not yet"),
            ("In the opt-out registry since", st["in_registry_since"] or "not yet")]
    if st["prefs"]:
        rows.append(("AI preferences", st["prefs"]))
    if st["revoked_at"]:
        rows.append(("Revoked", st["revoked_at"]))
    rel = st["latest_release"]
    if rel:
        rows.append(("Latest release", f"{rel['release']} (published {rel['published_at']}): "
                                       f"{rel['excluded']} document(s) left out because of this request"))
    table = "".join(f"<tr><th scope=\"row\">{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    actions = ""
    if st["status"] in ("pending", "verified"):
        actions += f"""<form method="post" action="/revoke">{_csrf(csrf)}<input type="hidden" name="id"
value="{e(st['id'])}"><button type="submit" id="revoke">Revoke this request</button></form>"""
    if st["method"] == "contact" and st["status"] in ("pending", "revocation pending"):
        actions += f"""<form method="post" action="/resend">{_csrf(csrf)}<input type="hidden" name="id"
value="{e(st['id'])}"><button type="submit">Mail me the link again</button></form>"""
    return layout("Status of your request", f"""<p class="status">Status: <span id="status">{e(st['status'])}</span>
</p><p id="next">{e(st['next'])}</p><table>{table}</table>{actions}""")


def revoke_started(r: dict[str, Any]) -> str:
    if r.get("token"):
        how = f"""<p>Prove again that the site is yours: add this line to <code>{e(r['place_at'])}</code>:</p>
<p><code class="token" id="token">{e(r['token'])}</code></p>"""
    else:
        how = "<p>We mailed a link to the address of the request. Open it to confirm the revocation.</p>"
    return layout("Revocation started", f"""{how}<p>Your opt-out stays in force until then.</p>
<p><a href="/status?id={e(r['id'])}">Back to the status</a></p>""")


def confirm_form(token: str, csrf: str) -> str:
    return layout("Confirm", f"""<p>Press the button to confirm. (We ask for a press, not just the visit, so that a
mail scanner opening the link does not confirm for you.)</p><form method="post" action="/confirm">{_csrf(csrf)}
<input type="hidden" name="t" value="{e(token)}"><button type="submit" id="confirm">Confirm</button></form>""")


def confirmed(r: dict[str, Any]) -> str:
    what = "revoked" if r["purpose"] == "revoke" else "confirmed"
    return layout(f"Request {what}", f"""<p class="status">Status: <span id="status">{e(r['status'])}</span></p>
<p><a href="/status?id={e(r['id'])}" id="status-link">See the status of your request</a></p>""")


def lookup_form(csrf: str, releases: list[dict[str, Any]], answer: dict[str, Any] | None = None,
                message: str = "") -> str:
    options = "".join(f'<option value="{e(r["release"])}">{e(r["release"])} ({e(r["documents"])} documents)</option>'
                      for r in releases)
    result = ""
    if message:
        result = f'<p class="error" role="alert">{e(message)}</p>'
    if answer is not None:
        if answer["found"]:
            verdict = "excluded" if answer["excluded"] else "included"
            result = f"""<section aria-live="polite" id="answer"><h2>Answer</h2><p>Yes: <strong id="verdict">
{e(answer['documents'])} document(s) in release {e(answer['release'])}</strong>, {e(verdict)}.</p>
<p>Actions: {e(', '.join(f'{k} {v}' for k, v in answer['actions'].items()))}.
Rules: {e(', '.join(answer['rules']) or 'none')}. Opt-out entries: {e(', '.join(answer['entries']) or 'none')}.</p>"""
            if answer.get("query") == "text":
                result += f"<p>Exact copies: {e(answer['exact_copies'])}.</p>"
            result += "</section>"
        else:
            result = (f'<section aria-live="polite" id="answer"><h2>Answer</h2><p><strong id="verdict">No</strong>: '
                      f'not in release {e(answer["release"])}.</p></section>')
    return layout("Is my work in a release?", f"""{result}<p>We answer only yes or no, the release, the action taken
and the rules and opt-out entries behind it: never anyone's text or personal data.</p>
<form method="post" action="/lookup">{_csrf(csrf)}<label for="release">Release</label>
<select id="release" name="release"><option value="">the newest</option>{options}</select>
<label for="q-kind">Look up</label><select id="q-kind" name="what"><option value="url">a URL</option>
<option value="domain">a domain</option><option value="text">a text (near copies too)</option></select>
<label for="q">URL, domain or text</label><textarea id="q" name="q" required></textarea>
<button type="submit" id="lookup">Look up</button></form>""")


def error(title: str, message: str) -> str:
    return layout(title, f'<p class="error" role="alert">{e(message)}</p><p><a href="/">Back to the portal</a></p>')


WELL_KNOWN_HELP = proof.WELL_KNOWN
