"""Issue 15: the reporting workbench in a real browser (Debian's chromium and
chromedriver, driven by selenium) against the real daemon, with an order
from the RIS over MLLP, results from dcmtk's storescu and the EMR simulator
(simulators/emr.py) as the report's destination.  A login at a real OpenID
provider (npm oidc-provider, tests/oidc) uses the authorization code flow
with PKCE.  Each test saves a screenshot in its tmp_path."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from decimal import Decimal
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from mappings.bmd import samples
from mappings.bmd.samples import hologic_sr
from simulators.emr import EmrSimulator
from tests.hl7_messages import orm, segment
from tests.integration.test_exams import exam_of, store
from tests.integration.test_oidc import Provider, _key, _node_ready
from tests.orthanc import wait_for
from tests.workbench_client import Browserless
from tests.support import MllpClient, ack_fields, free_port, http_request, start_daemon, storescu
from tests.unit.bmd.helpers import HOLOGIC, known_exam

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="Debian's chromium and chromium-driver are needed (./run-tests installs them)"
)

DR = {"name": "dr-wb", "token": "token-dr-wb-0123456789abcdef", "roles": ["reporter"], "display_name": "Dr Wendy Bone", "registration": "GMC 7654321"}
RAD = {"name": "rad-wb", "token": "token-rad-wb-0123456789abcdef", "roles": ["radiographer"], "display_name": "Rita Radiographer"}
NOTE = "Movement artefact at L4: re-scanned"
OIDC_CLIENT = "workbench"
OIDC_TTL = 15  # seconds the provider's access tokens for the workbench live: a session made from one ends then


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One daemon, its EMR, an OpenID provider (when node is here) and one patient's two exams."""
    tmp = tmp_path_factory.mktemp("workbench")
    emr = EmrSimulator(port=0).start()
    http_port = free_port()
    idp, idp_key = None, _key("wb-key")
    overrides = {
        "http": {"host": "127.0.0.1", "port": http_port},
        "storage": {"min_free_bytes": 0},
        "security": {"tokens": [DR, RAD]},
        "destinations": {"emr": {"type": "hl7", "host": "127.0.0.1", "port": emr.port, "retry_base": 0.3, "retry_cap": 0.3}},
        "routes": [{"match": {"kind": "report"}, "to": ["emr"]}],
    }
    if _node_ready():
        idp_port = free_port()
        clients = [{"client_id": OIDC_CLIENT, "roles": ["reporter"], "ttl": OIDC_TTL, "redirect_uris": [f"http://127.0.0.1:{http_port}/workbench/oidc/callback"]}]
        idp = Provider(tmp / "idp", idp_port, [idp_key], clients=clients)
        overrides["security"]["oidc"] = {
            "issuer": idp.issuer, "audience": "urn:dxa-gateway", "leeway": 5,
            "login": {"client_id": OIDC_CLIENT, "scope": "openid api", "resource": "urn:dxa-gateway"},
        }
    d = start_daemon(tmp / "gw", overrides)
    try:
        # the RIS's order (referrer, indication) and the scanner's two studies
        order = orm("WBORD1", placer="PL-WB", filler="FL-WB", accession="ACC-WB", patient_id="PWB", name="Bone^Beatrice").rstrip("\r")
        order += "\r" + segment("NTE", {1: "1", 3: "Indication: Wrist fracture after a fall from standing"}) + "\r"
        client = MllpClient(d.hl7_port)
        try:
            assert ack_fields(client.send(order))["MSA"][1] == "AA"
        finally:
            client.close()
        current = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id="PWB", patient_name="Bone^Beatrice", accession_number="ACC-WB", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        previous = dataclasses.replace(
            current, exam_date="20220501", accession_number="ACC-WB-OLD", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid(),
            regions=tuple(dataclasses.replace(r, bmd=r.bmd + Decimal("0.050")) for r in current.regions),
        )
        ids = {}
        ds = hologic_sr(previous)  # the earlier exam: its SR
        store(d, ds, tmp / "previous.dcm")
        ids["previous"] = wait_for(lambda: exam_of(ds)(d), 20)["id"]
        # this exam: the scanner's report images, one per scan, results in their private text
        storescu(d.dicom_port, samples.hologic_report_images(current), tmp / "images")

        def current_exam():
            rows = http_request(d.http + "/api/exams?patient=PWB", token=d.token)[1]
            return next((e for e in rows if e["accession_number"] == "ACC-WB" and e["state"] == "parsed"), None)

        ids["current"] = wait_for(current_exam, 20)["id"]
        yield {"daemon": d, "emr": emr, "idp": idp, "idp_key": idp_key, "ids": ids}
    finally:
        d.stop()
        emr.stop()
        if idp is not None:
            idp.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,800",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda drv: condition(drv))


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def all_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def shot(driver, tmp_path: Path, name: str, *, full: bool = False) -> Path:
    """A screenshot of the window (``full``: the whole page, 1280 wide) in the test's folder."""
    import base64

    path = tmp_path / f"{name}.png"
    if full:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        width = driver.execute_script("return document.documentElement.clientWidth")
        png = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        path.write_bytes(base64.b64decode(png["data"]))
    else:
        driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def login(driver, d, token: str, next_path: str = "/workbench/") -> None:
    driver.delete_all_cookies()
    driver.get(d.http + "/workbench/login?next=" + urllib.parse.quote(next_path, safe=""))
    by_id(driver, "token").send_keys(token)
    by_id(driver, "sign-in").click()
    wait(driver, lambda drv: "/workbench/login" not in drv.current_url)


def logout(driver) -> None:
    by_id(driver, "logout").click()
    wait(driver, lambda drv: drv.current_url.endswith("/workbench/login"))


def audit(d, event: str) -> list[dict]:
    return http_request(d.http + f"/api/audit?event={event}&limit=1000", token=d.token)[1]


def test_pages_need_a_login_and_a_bad_token_is_refused(world, browser, tmp_path):
    """Issue 15 item 4: without a session a page sends the browser to the
    login form; a token that is not configured sets no session cookie."""
    d = world["daemon"]
    browser.delete_all_cookies()
    browser.get(d.http + "/workbench/queue")
    wait(browser, lambda drv: "/workbench/login" in drv.current_url)
    by_id(browser, "token").send_keys("not-a-token-of-this-gateway-000")
    by_id(browser, "sign-in").click()
    wait(browser, lambda drv: all_css(drv, "#error"))
    assert "not valid" in by_id(browser, "error").text
    assert browser.get_cookie("dxagw_session") is None
    shot(browser, tmp_path, "login-refused")
    assert any("workbench login: unknown token" in (r["detail"].get("reason") or "") for r in audit(d, "auth.failure"))


def test_reporter_opens_the_queue_and_an_exam_with_its_images_and_trend(world, browser, tmp_path):
    """Issue 15 item 1: the queue lists exams awaiting a report, oldest first,
    with the time waited; the exam page shows the patient, the referral and
    indication, the site table with the classifier's use of each row (ISCD:
    Ward's area is never used; L3 excluded), the scanner's report images and
    the trend plot; opening it leaves an audit record."""
    d, ids = world["daemon"], world["ids"]
    login(browser, d, DR["token"])
    assert browser.current_url.endswith("/workbench/queue")
    links = all_css(browser, "#queue a.open-exam")
    accessions = [a.get_attribute("data-accession") for a in links]
    assert accessions.index("ACC-WB-OLD") < accessions.index("ACC-WB")  # oldest first
    row = next(a for a in links if a.get_attribute("data-accession") == "ACC-WB").find_element("xpath", "./ancestor::tr")
    assert re.search(r"\d+ (min|h|d)", row.text)  # the time waited
    # the filters: a scanner that is not ours leaves nothing
    browser.get(d.http + "/workbench/queue?scanner=NoSuchScanner")
    assert by_id(browser, "queue-empty")
    browser.get(d.http + "/workbench/queue")
    next(a for a in all_css(browser, "#queue a.open-exam") if a.get_attribute("data-accession") == "ACC-WB").click()
    wait(browser, lambda drv: f"/workbench/exams/{ids['current']}" in drv.current_url)
    assert "Bone, Beatrice" in by_id(browser, "patient").text
    assert "Wrist fracture after a fall" in browser.page_source
    assert "Osteoporosis" in by_id(browser, "classification").text
    sites = {tr.find_element("css selector", "th").text: tr.text for tr in all_css(browser, "#sites tbody tr")}
    assert "excluded" in sites["Vertebra L3"] and "not used" in sites["Left ward's area"] and "lowest" in sites["Left femoral neck"]
    assert "2022-05-01" in by_id(browser, "previous").text
    # the report images and the trend plot (the rendering's routes, same origin, by the session cookie)
    status, images, _ = http_request(d.http + f"/api/exams/{ids['current']}/images", token=d.token)
    assert status == 200 and len(images) == len(samples.hologic_report_images(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC))) > 0
    wait(browser, lambda drv: len(all_css(drv, "img.report-image")) == len(images))
    loaded = all_css(browser, "img.report-image")
    wait(browser, lambda drv: all(drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in loaded))
    assert browser.execute_script("var t = document.getElementById('trend'); return t !== null && t.complete && t.naturalWidth > 0")
    shot(browser, tmp_path, "workbench-exam", full=True)  # the README's docs/workbench-exam.png
    # readable on a tablet (portrait): nothing wider than the screen
    size = browser.get_window_size()
    try:
        browser.set_window_size(820, 1180)
        browser.refresh()
        wait(browser, lambda drv: all_css(drv, "#sites"))
        assert browser.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        shot(browser, tmp_path, "workbench-exam-tablet")
    finally:
        browser.set_window_size(size["width"], size["height"])
    assert wait_for(lambda: any(r["actor"] == "dr-wb" and r["detail"].get("exam") == ids["current"] for r in audit(d, "workbench.exam")), 10)


def test_radiographer_notes_reach_the_report_and_the_signed_oru(world, browser, tmp_path):
    """Issue 15 items 1 and 2, "done when": the radiographer adds technical
    notes, height and weight on the day's page (no Sign for that role); the
    reporter signs with a comment and the EMR receives the ORU with that
    comment, the notes and the reporter (OBR-32); an amendment follows
    (OBR-25 C).  BMI 21.5 from 160 cm and 55 kg (seed 001 "Reporting")."""
    d, emr, n = world["daemon"], world["emr"], world["ids"]["current"]
    login(browser, d, RAD["token"])
    assert browser.current_url.endswith("/workbench/today")
    browser.get(d.http + "/workbench/today?date=2024-05-01")
    next(a for a in all_css(browser, "a.open-exam") if a.get_attribute("data-accession") == "ACC-WB").click()
    wait(browser, lambda drv: f"/workbench/exams/{n}" in drv.current_url)
    assert not all_css(browser, "#sign-form")  # the page shows what the role may do
    by_id(browser, "technical_notes").send_keys(NOTE)
    by_id(browser, "height_cm").send_keys("160")
    by_id(browser, "weight_kg").send_keys("55")
    shot(browser, tmp_path, "radiographer-notes")
    by_id(browser, "save-context").click()
    wait(browser, lambda drv: all_css(drv, "#flash"))
    assert "Saved" in by_id(browser, "flash").text
    assert NOTE in by_id(browser, "technical-notes").text
    report = by_id(browser, "report-text").text
    assert f"Operator: {NOTE}" in report and "BMI 21.5 kg/m2" in report
    logout(browser)

    login(browser, d, DR["token"], f"/workbench/exams/{n}")
    assert browser.current_url.endswith(f"/workbench/exams/{n}")
    by_id(browser, "role").send_keys("Consultant radiologist")
    from selenium.webdriver.common.keys import Keys

    by_id(browser, "comment").send_keys("Agree with the findings. WB-COMMENT-1")
    before = len(emr.messages)
    by_id(browser, "comment").send_keys(Keys.TAB)  # keyboard only: the next stop is Sign
    assert browser.switch_to.active_element.get_attribute("id") == "sign"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda drv: all_css(drv, "#flash"))
    assert "Signed and sent" in by_id(browser, "flash").text
    assert by_id(browser, "report-status").text == "final" and "Dr Wendy Bone (GMC 7654321)" in by_id(browser, "reporter").text
    assert by_id(browser, "report-pdf").get_attribute("href").endswith(f"/api/exams/{n}/report.pdf")
    jar = {"Cookie": f"dxagw_session={browser.get_cookie('dxagw_session')['value']}"}
    status, pdf, headers = http_request(d.http + f"/api/exams/{n}/report.pdf", headers=jar)  # what the link downloads, by the session
    assert status == 200 and headers.get_content_type() == "application/pdf" and pdf.startswith("%PDF-")
    shot(browser, tmp_path, "signed")
    assert wait_for(lambda: len(emr.messages) > before, 20), d.log_text()[-2000:]
    oru = emr.messages[-1][1].decode("utf-8")
    assert "WB-COMMENT-1" in oru and f"Operator: {NOTE}" in oru
    obr = next(s for s in oru.split("\r") if s.startswith("OBR|")).split("|")
    assert obr[25] == "F" and obr[32].startswith("dr-wb&Dr Wendy Bone")
    assert emr.report().ok, [c.name for c in emr.report().failed]

    by_id(browser, "amendment").send_keys("Left hip region corrected.")
    by_id(browser, "amend").click()
    wait(browser, lambda drv: all_css(drv, "#flash"))
    assert by_id(browser, "report-status").text == "corrected"
    assert wait_for(lambda: len(emr.messages) > before + 1, 20)
    amended = emr.messages[-1][1].decode("utf-8")
    assert "Amendment: Left hip region corrected." in amended and "|C|" in amended
    assert {r["actor"] for r in audit(d, "workbench.exam")} >= {"dr-wb", "rad-wb"}


def test_session_cookie_is_strict_needs_csrf_and_ends_at_logout(world, browser, tmp_path):
    """Issue 15 item 4: the session cookie is HttpOnly and SameSite=Strict; it
    authenticates /api/ too, but a change without the session's CSRF token is
    refused (403) and changes nothing; after logout the cookie is worth nothing."""
    d, n = world["daemon"], world["ids"]["previous"]
    login(browser, d, DR["token"])
    cookie = browser.get_cookie("dxagw_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["secure"] is False  # plain HTTP here
    jar = {"Cookie": f"dxagw_session={cookie['value']}"}
    status, exams, _ = http_request(d.http + "/api/exams", headers=jar)
    assert status == 200 and any(e["id"] == n for e in exams)
    assert http_request(d.http + f"/api/exams/{n}/sign", "POST", {}, headers=jar)[0] == 403
    form = urllib.parse.urlencode({"csrf": "forged", "comment": "x"}).encode()
    assert http_request(d.http + f"/workbench/exams/{n}/sign", "POST", raw=form, content_type="application/x-www-form-urlencoded", headers=jar)[0] == 403
    # a cross-site form post is refused before anything else
    assert http_request(d.http + f"/workbench/exams/{n}/sign", "POST", raw=form, content_type="application/x-www-form-urlencoded", headers={**jar, "Origin": "https://evil.example"})[0] == 403
    assert http_request(d.http + f"/api/exams/{n}", headers=jar)[1]["report"]["status"] == "P"
    browser.get(d.http + f"/workbench/exams/{n}")
    shot(browser, tmp_path, "previous-exam")
    logout(browser)
    assert http_request(d.http + "/api/exams", headers=jar)[0] == 401
    status, body, _ = http_request(d.http + "/workbench/queue", headers=jar)
    assert status == 401 and "/workbench/login" in body


def provider_sign_in(driver, user: str) -> None:
    """At the provider's development login form (any login), then its consent
    if it asks, until the browser is back on the workbench."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(6):
        wait(driver, lambda drv: "/workbench/" in drv.current_url or all_css(drv, "button[type=submit]"))
        if "/workbench/" in driver.current_url:
            return
        try:  # the provider's page may move on between finding an element and using it
            logins = all_css(driver, "input[name=login]")
            if logins:
                logins[0].send_keys(user)
                all_css(driver, "input[name=password]")[0].send_keys("any")
            all_css(driver, "button[type=submit]")[0].click()
        except (IndexError, StaleElementReferenceException):
            continue
    raise AssertionError(f"the provider's sign-in did not come back: {driver.current_url}")


def test_oidc_login_with_pkce_ends_at_the_tokens_exp(world, browser, tmp_path):
    """Issue 15 item 4: with security.oidc.login, the authorization code flow
    with PKCE S256 (RFC 7636) at the hospital's provider; the ID token is
    verified and the access token it yields is checked like a bearer token, its
    roles claim opens the queue.  The session ends at that token's exp (the
    provider's TTL, OIDC_TTL seconds) though the idle timeout is 30 minutes,
    while a session from a static token made before it goes on."""
    if world["idp"] is None:
        pytest.skip("node and the npm package oidc-provider (tests/oidc) are needed")
    d = world["daemon"]
    static = Browserless(d.http)
    assert static.login(DR["token"]).status == 303
    browser.delete_all_cookies()
    browser.get(d.http + "/workbench/login")
    by_id(browser, "oidc-login").click()
    wait(browser, lambda drv: all_css(drv, "input[name=login]"))
    assert browser.current_url.startswith(world["idp"].issuer)
    provider_sign_in(browser, "dr-oidc")
    wait(browser, lambda drv: drv.current_url.endswith("/workbench/queue"))
    assert "dr-oidc" in browser.find_element("css selector", "header .who").text
    shot(browser, tmp_path, "oidc-queue")
    assert any(r["actor"] == "dr-oidc" and r["detail"].get("via") == "workbench login (oidc)" for r in audit(d, "auth.success"))
    jar = {"Cookie": f"dxagw_session={browser.get_cookie('dxagw_session')['value']}"}
    # used every second, the session still ends when the token does
    assert wait_for(lambda: http_request(d.http + "/api/exams?limit=1", headers=jar)[0] == 401, OIDC_TTL + 30, interval=1)
    browser.refresh()
    wait(browser, lambda drv: "/workbench/login" in drv.current_url)
    assert static.get("/workbench/queue").status == 200  # the static token's session keeps its idle timeout only


def test_oidc_login_refused_when_the_id_token_nonce_is_not_this_logins(world, browser, tmp_path):
    """OpenID Connect Core 1.0 3.1.3.7 and 15.5.2: the ID token's nonce must be
    the one sent with this login's authorization request.  An authorization
    request whose nonce was changed, or removed, on its way to the provider
    (the provider then signs an ID token with that nonce, or none) signs
    nobody in: a page says why, no session cookie is set, an auth.failure
    is audited."""
    if world["idp"] is None:
        pytest.skip("node and the npm package oidc-provider (tests/oidc) are needed")
    d = world["daemon"]
    for case, change in (("other", lambda q: {**q, "nonce": ["not-the-nonce-sent"]}), ("missing", lambda q: {k: v for k, v in q.items() if k != "nonce"})):
        browser.delete_all_cookies()
        browser.get(d.http + "/workbench/login")  # this browser's login cookie
        start = Browserless(d.http, cookies={"dxagw_login": browser.get_cookie("dxagw_login")["value"]}).get("/workbench/oidc/start")
        assert start.status == 303
        to = urllib.parse.urlsplit(start.headers["Location"])
        query = urllib.parse.parse_qs(to.query)
        assert query["nonce"][0] and query["state"][0]
        browser.get(urllib.parse.urlunsplit(to._replace(query=urllib.parse.urlencode(change(query), doseq=True))))
        provider_sign_in(browser, f"dr-nonce-{case}")
        wait(browser, lambda drv: all_css(drv, "#error"))
        assert "/workbench/oidc/callback" in browser.current_url
        assert "nonce does not match" in by_id(browser, "error").text and "nobody is signed in" in by_id(browser, "error").text
        assert browser.get_cookie("dxagw_session") is None
        shot(browser, tmp_path, f"oidc-nonce-{case}")
    def reasons():
        return {r["detail"].get("reason") or "" for r in audit(d, "auth.failure")}

    assert wait_for(lambda: {"workbench oidc: id_token nonce does not match this login's", "workbench oidc: id_token carries no nonce"} <= reasons(), 10)
    assert not any(r["actor"].startswith("dr-nonce") for r in audit(d, "auth.success"))


def test_pasted_oidc_token_session_ends_at_its_exp(world):
    """README "The reporting workbench": an OIDC access token pasted into the
    login form makes a session that ends at the token's exp (here 4 s after
    it was made, signed with the provider's key); one already expired, if
    still within the verifier's leeway, is refused at the form."""
    if world["idp"] is None:
        pytest.skip("node and the npm package oidc-provider (tests/oidc) are needed")
    import time

    import jwt

    d, key = world["daemon"], jwt.PyJWK(world["idp_key"]).key

    def token(exp: float) -> str:
        claims = {"iss": world["idp"].issuer, "aud": "urn:dxa-gateway", "sub": "dr-pasted", "preferred_username": "dr-pasted", "roles": ["reporter"], "exp": int(exp)}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "wb-key"})

    client = Browserless(d.http)
    assert client.login(token(time.time() + 4)).status == 303
    assert client.get("/workbench/queue").status == 200
    assert wait_for(lambda: client.get("/workbench/queue").status == 401, 20, interval=0.5)
    late = Browserless(d.http).login(token(time.time() - 2))  # leeway 5: a valid bearer token, but no session
    assert late.status == 401 and late.cookie("dxagw_session") is None
    assert wait_for(lambda: any(r["detail"].get("reason") == "workbench login: oidc: expired" for r in audit(d, "auth.failure")), 10)
