"""The portal's page end to end in headless Chromium: submit, confirm by the mailed link (a real SMTP server on
127.0.0.1), see the status change after sync and apply, look up, revoke."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from conftest import doc, write_jsonl

from curate import Workspace
from curate.portal import lookup, sync
from curate.portal.app import create_app
from curate.portal.mail import SMTPTransport
from curate.portal.server import running
from curate.portal.store import Store
from curate.stages import optout

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WORK = " ".join(f"lantern{i} harbour evening tide {i % 5}" for i in range(30))


class Inbox:
    """aiosmtpd handler keeping every message it is handed."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def wait(self, count: int, timeout: float = 20) -> email.message.EmailMessage:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"no message {count} arrived"
            time.sleep(0.05)
        return self.messages[count - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian chromium + chromium-driver missing: run `make install`"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server", "--disable-dev-shm-usage", "--window-size=1200,1000",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.implicitly_wait(15)  # a click on a form submits it: wait for the elements of the page it leads to
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def link(msg) -> str:
    return re.search(r"(http://\S+/confirm\?t=\S+)", msg.get_content()).group(1)


@pytest.mark.slow
def test_page_end_to_end_in_headless_chromium(tmp_path, smtp, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    inbox, smtp_port = smtp
    write_jsonl(tmp_path / "s.jsonl", [doc(i) for i in range(4)] + [
        doc(10, text=WORK, url="https://poems.example.net/harbour"), doc(11, text=WORK + " again")])
    ws = Workspace.init(tmp_path / "ws")
    ws.ingest([str(tmp_path / "s.jsonl")])
    ws.run(workers=1, stages=["optout"])
    store = Store(tmp_path / "portal.sqlite")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(store, SMTPTransport("127.0.0.1", smtp_port), base, write_rate=0, read_rate=0)
    try:
        with running(app, port=port) as url:
            assert url == base
            d = browser
            d.get(base + "/")
            assert "What happens to your request" in d.page_source
            form = d.find_element(By.CSS_SELECTOR, "form:has(input[name=kind][value=work])")
            form.find_element(By.NAME, "value").send_keys(WORK)
            form.find_element(By.NAME, "contact").send_keys("poet@example.org")
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            rid = d.find_element(By.ID, "request-id").text
            assert re.fullmatch(r"rq-[0-9a-f]{32}", rid)
            assert d.find_element(By.ID, "status").text == "pending"

            d.get(link(inbox.wait(1)))
            d.find_element(By.ID, "confirm").click()
            assert d.find_element(By.ID, "status").text == "verified"
            d.find_element(By.ID, "status-link").click()
            assert "copies verified requests" in d.find_element(By.ID, "next").text

            assert sync.sync(ws, sync.StoreSource(store)).added == 1
            assert optout.apply(ws).summary["excluded"] == 2
            lookup.publish(ws, store)
            d.refresh()
            assert "In the opt-out registry" in d.find_element(By.ID, "next").text
            assert "2 document(s) left out because of this request" in d.page_source

            d.get(base + "/lookup")
            Select(d.find_element(By.ID, "q-kind")).select_by_value("url")
            d.find_element(By.ID, "q").send_keys("https://poems.example.net/harbour?utm_source=feed")
            d.find_element(By.ID, "lookup").click()
            verdict = d.find_element(By.ID, "answer").text
            assert "1 document(s) in release" in verdict and "excluded" in verdict and "optout-registry" in verdict
            assert WORK[:30] not in d.page_source

            d.get(f"{base}/status?id={rid}")
            d.find_element(By.ID, "revoke").click()  # a form POST: wait for the page it leads to
            WebDriverWait(d, 20).until(lambda drv: "Revocation started" in drv.page_source)
            revoke_mail = inbox.wait(2)
            assert revoke_mail["To"] == "poet@example.org"
            d.get(link(revoke_mail))
            d.find_element(By.ID, "confirm").click()
            assert d.find_element(By.ID, "status").text == "revoked"
            assert sync.sync(ws, sync.StoreSource(store)).revoked == 1
            assert optout.apply(ws).summary["re-included"] == 2
            severe = [m for m in d.get_log("browser") if m["level"] == "SEVERE"]
            assert severe == [], severe  # a CSP violation or a failed load would show here
    finally:
        store.close()
