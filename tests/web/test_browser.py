"""End to end in a real headless Chromium against the app on 127.0.0.1.

The clinician loads a sample bundle, sees the red-flag card first, opens
its why-tree (from the keyboard), overrides a card; the auditor finds that
evaluation and the override, opens the derivation graph, the rule usage
chart and the chain page, and downloads the FHIR export. Each test saves a
screenshot under test-output/screenshots/. The tests of this module share
one server; a test that needs an earlier one's evaluation makes it itself
when run alone.
"""

from __future__ import annotations

import json
from typing import Any

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from tests.web.conftest import PASSWORDS, SAMPLES, Served, screenshot

RED_FLAG_SAMPLE = SAMPLES / "01-cauda-equina-urinary-retention.json"
ALERT_SAMPLE = SAMPLES / "57-epidural-candidate-on-apixaban.json"


def wait(driver: Any, seconds: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, seconds)


def sign_in(driver: Any, served: Served, name: str, *, start: str = "/web/") -> None:
    driver.delete_all_cookies()
    driver.get(served.base + start)
    wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name], Keys.ENTER)
    wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".who strong")))
    assert driver.find_element(By.CSS_SELECTOR, ".who strong").text == name


def evaluate_upload(driver: Any, served: Served, sample: Any) -> str:
    """Upload a bundle file on the review start page; the evaluation id from the page's URL."""
    driver.get(served.base + "/web/review")
    driver.find_element(By.ID, "bundle_file").send_keys(str(sample))
    driver.find_element(By.CSS_SELECTOR, "form[enctype] button[type=submit]").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "triage")))
    return str(driver.current_url.rsplit("/", 1)[1].split("#")[0])


def red_flag_evaluation(driver: Any, served: Served) -> str:
    if "red_flag" not in served.state:
        sign_in(driver, served, "alice")
        served.state["red_flag"] = evaluate_upload(driver, served, RED_FLAG_SAMPLE)
    return str(served.state["red_flag"])


def test_sign_in_is_required_and_the_password_stays_out_of_pages_and_logs(browser: Any, served: Served,
                                                                         capfd: Any) -> None:
    browser.delete_all_cookies()
    browser.get(served.base + "/web/review")
    wait(browser).until(ec.presence_of_element_located((By.ID, "username")))
    assert "/web/sign-in" in browser.current_url
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("not her password", Keys.ENTER)
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "sign-in-error")))
    assert "do not match" in error.text
    assert "not her password" not in browser.page_source
    screenshot(browser, "01-sign-in")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["alice"], Keys.ENTER)
    wait(browser).until(ec.presence_of_element_located((By.ID, "bundle")))
    assert browser.current_url.endswith("/web/review")
    cookie = browser.get_cookie("cds_web_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert PASSWORDS["alice"] not in browser.page_source
    logs = capfd.readouterr()
    assert '"event": "web_sign_in_refused"' in logs.err                  # the refusal and the sign-in are
    assert '"event": "web_sign_in"' in logs.err and '"user": "alice"' in logs.err  # logged ...
    assert PASSWORDS["alice"] not in logs.out + logs.err                  # ... without the password
    assert "not her password" not in logs.out + logs.err
    assert "scrypt:" not in logs.out + logs.err and "scrypt:" not in browser.page_source


def test_red_flag_card_comes_first_and_its_why_tree_opens_from_the_keyboard(browser: Any, served: Served) -> None:
    sign_in(browser, served, "alice")
    served.state["red_flag"] = evaluate_upload(browser, served, RED_FLAG_SAMPLE)
    assert browser.find_element(By.CSS_SELECTOR, "#triage .triage-value").text.lower() == "emergency"
    cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
    assert cards, "no card on the page"
    first = cards[0]
    assert first.get_attribute("data-indicator") == "critical"
    assert "Red flag" in first.find_element(By.CSS_SELECTOR, ".card-title").text
    assert "cauda equina" in first.text.lower()
    # The triage banner is above the first card on the screen.
    assert browser.find_element(By.ID, "triage").location["y"] < first.location["y"]
    why_tree = first.find_element(By.CSS_SELECTOR, "details.why-box ul.why")
    assert not why_tree.is_displayed()
    summary = first.find_element(By.CSS_SELECTOR, "details.why-box > summary")
    browser.execute_script("arguments[0].focus()", summary)
    summary.send_keys(Keys.ENTER)                    # keyboard, not a mouse click
    wait(browser).until(lambda _d: why_tree.is_displayed())
    leaves = [e.text for e in why_tree.find_elements(By.CSS_SELECTOR, "li.input")]
    assert any("Urinary retention" in leaf and "2026-11-2" in leaf and "Observation/" in leaf for leaf in leaves), \
        leaves
    derived = why_tree.find_element(By.CSS_SELECTOR, "li.red-flag")
    assert "cauda equina" in derived.text.lower() and "concluded by the rule" in derived.text
    screenshot(browser, "02-review-red-flag-why", full_page=True)


def test_clinician_overrides_a_card_with_a_reason(browser: Any, served: Served) -> None:
    evaluation = red_flag_evaluation(browser, served)
    sign_in(browser, served, "alice", start=f"/web/review/{evaluation}")
    card = browser.find_elements(By.CSS_SELECTOR, "article.card")[0]
    uuid = card.get_attribute("id").removeprefix("card-")
    card.find_element(By.CSS_SELECTOR, "details.override > summary").click()
    card.find_element(By.CSS_SELECTOR, "input[name=reason][value=patient-declined]").click()
    card.find_element(By.CSS_SELECTOR, "textarea[name=comment]").send_keys("Declines transfer tonight; safety-netted")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                           card.find_element(By.CSS_SELECTOR, "details.override"))
    screenshot(browser, "03-review-override-form")
    card.find_element(By.CSS_SELECTOR, "button.override-submit").click()
    flash = wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".flash-ok")))
    assert flash.text == "Override recorded."
    card = browser.find_element(By.ID, f"card-{uuid}")
    outcome = card.find_element(By.CSS_SELECTOR, ".outcome").text
    assert "Overridden" in outcome and "Patient declined" in outcome and "Declines transfer tonight" in outcome
    assert "cds-web:alice" in outcome
    served.state["overridden_card"] = uuid
    # It went through the feedback path into the trail.
    trace = served.store.get_evaluation(evaluation)
    assert [(f["card"], f["outcome"], f["overrideReason"]["code"]) for f in trace["feedback"]] == [
        (uuid, "overridden", "patient-declined")]
    browser.execute_script("arguments[0].scrollIntoView()", card)
    screenshot(browser, "03-review-override-recorded")


def test_alerts_stand_apart_and_a_card_is_accepted(browser: Any, served: Served) -> None:
    sign_in(browser, served, "alice")
    browser.get(served.base + "/web/review")
    # Pasted rather than uploaded this time.
    browser.execute_script("document.getElementById('bundle').value = arguments[0]", ALERT_SAMPLE.read_text())
    browser.find_element(By.CSS_SELECTOR, "form[enctype] button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "triage")))
    aside = browser.find_element(By.ID, "alerts")
    alert_cards = aside.find_elements(By.CSS_SELECTOR, "article.alert-card")
    assert len(alert_cards) == 1 and "anticoagulant" in alert_cards[0].text.lower()
    assert aside.is_displayed() and aside.location["y"] < 400        # on the first screen, beside the cards
    main_cards = browser.find_elements(By.CSS_SELECTOR, "section.recommendations article.card")
    assert main_cards and not any("alert-card" in (c.get_attribute("class") or "") for c in main_cards)
    accept = main_cards[0].find_element(By.CSS_SELECTOR, "button.accept")
    accept.click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".flash-ok")))
    first = browser.find_elements(By.CSS_SELECTOR, "section.recommendations article.card")[0]
    assert first.find_element(By.CSS_SELECTOR, ".outcome").text.startswith("Accepted")
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "04-review-alerts")
    served.state["alerts"] = browser.current_url.rsplit("/", 1)[1].split("#")[0]


def test_review_start_lists_recent_evaluations_of_a_patient(browser: Any, served: Served) -> None:
    evaluation = red_flag_evaluation(browser, served)
    sign_in(browser, served, "alice", start="/web/review")
    browser.find_element(By.ID, "patient").send_keys("pat-01", Keys.ENTER)
    heading = "//h3[contains(., 'Evaluations of Patient/pat-01')]"
    wait(browser).until(ec.presence_of_element_located((By.XPATH, heading)))
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "table.list a")]
    assert any(link.endswith(f"/web/review/{evaluation}") for link in links)
    screenshot(browser, "05-review-start")


def test_auditor_finds_the_evaluation_its_override_and_the_derivation_graph(browser: Any, served: Served) -> None:
    evaluation = red_flag_evaluation(browser, served)
    if "overridden_card" not in served.state:
        test_clinician_overrides_a_card_with_a_reason(browser, served)
    sign_in(browser, served, "bob")
    assert browser.current_url.endswith("/web/audit/")
    browser.find_element(By.ID, "patient").send_keys("Patient/pat-01")
    Select(browser.find_element(By.ID, "triage")).select_by_visible_text("emergency")
    browser.execute_script("document.getElementById('since').value = '2026-11-22'")
    browser.find_element(By.CSS_SELECTOR, ".filters button[type=submit]").click()
    wait(browser).until(ec.url_contains("triage=emergency"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#evaluations tbody tr")
    assert rows and all("Patient/pat-01" in r.text and "EMERGENCY" in r.text.upper() for r in rows)
    assert "cds-web:alice" in rows[0].text
    screenshot(browser, "06-audit-list")
    link = next(a for a in browser.find_elements(By.CSS_SELECTOR, "#evaluations a")
                if a.get_attribute("href").endswith(evaluation))
    link.click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "chain-status")))
    assert "Intact" in browser.find_element(By.ID, "chain-status").text
    assert len(browser.find_element(By.ID, "ruleset-hash").text) == 64
    firings = browser.find_elements(By.CSS_SELECTOR, "#firings li")
    assert len(firings) >= 2 and "red-flags/" in firings[0].text
    card_row = browser.find_element(By.ID, f"audit-card-{served.state['overridden_card']}")
    assert "overridden" in card_row.text and "Patient declined" in card_row.text and "cds-web:alice" in card_row.text
    graph = browser.find_element(By.CSS_SELECTOR, "#derivation-graph svg")
    browser.execute_script("arguments[0].scrollIntoView()", graph)
    assert graph.is_displayed() and graph.size["width"] > 500
    labels = [t.get_attribute("textContent") for t in graph.find_elements(By.CSS_SELECTOR, "g.node title")]
    assert any(label.startswith("Emergency spine-surgery") for label in labels)
    assert any("cauda equina" in label.lower() for label in labels)
    assert any("Urinary retention" in label and "Observation/" in label for label in labels)
    assert len(graph.find_elements(By.CSS_SELECTOR, "path[marker-end]")) >= 3
    screenshot(browser, "07-audit-evaluation-graph")
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "08-audit-evaluation-top")


def test_auditor_sees_rule_usage_chain_status_and_downloads_the_export(browser: Any, served: Served) -> None:
    red_flag_evaluation(browser, served)
    if "overridden_card" not in served.state:
        test_clinician_overrides_a_card_with_a_reason(browser, served)
    sign_in(browser, served, "bob", start="/web/audit/rules?since=2026-11-01&until=2026-11-30")
    row = browser.find_element(
        By.XPATH, "//table[@id='usage-table']//tr[.//code[text()='red-flags/cauda-equina-emergency']]")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    firings, _evaluations, cards, _accepted, overridden = (int(c) for c in cells[1:6])
    assert firings >= 1 and cards >= 1 and overridden >= 1
    bars = browser.find_elements(By.CSS_SELECTOR, "#usage-chart svg g.rule-row")
    assert "red-flags/cauda-equina-emergency" in [b.get_attribute("data-rule") for b in bars]
    screenshot(browser, "09-audit-rule-usage", full_page=True)
    browser.get(served.base + "/web/audit/chain")
    status = browser.find_element(By.ID, "chain-status")
    assert "Verified" in status.text and "chain-ok" in status.get_attribute("class")
    screenshot(browser, "10-audit-chain")
    button = browser.find_element(By.ID, "download-export")
    form = button.find_element(By.XPATH, "ancestor::form")
    url = form.get_attribute("action")
    cookie = browser.get_cookie("cds_web_session")
    answer = requests.get(url, cookies={"cds_web_session": cookie["value"]}, timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/fhir+ndjson")
    assert "attachment" in answer.headers["Content-Disposition"]
    resources = [json.loads(line) for line in answer.text.splitlines()]
    events = [r for r in resources if r["resourceType"] == "AuditEvent"]
    assert {e["id"] for e in events} == {e["id"] for e in served.store.iter_evaluations()}
    assert any(r["resourceType"] == "Provenance" for r in resources)
    # Without the session the export is not served.
    assert "/web/sign-in" in requests.get(url, timeout=30, allow_redirects=False).headers.get("Location", "")


def test_auditor_graph_of_a_pathway_reaches_from_alert_and_suggestions_to_the_record(browser: Any,
                                                                                      served: Served) -> None:
    if "alerts" not in served.state:
        test_alerts_stand_apart_and_a_card_is_accepted(browser, served)
    sign_in(browser, served, "bob", start=f"/web/audit/evaluations/{served.state['alerts']}")
    graph = browser.find_element(By.CSS_SELECTOR, "#derivation-graph svg")
    kinds = [g.get_attribute("class") for g in graph.find_elements(By.CSS_SELECTOR, "g.node")]
    assert "node node-alert" in kinds and "node node-routine" in kinds and "node node-input" in kinds
    assert kinds.count("node node-derived") >= 3
    headings = [t.get_attribute("textContent") for t in graph.find_elements(By.CSS_SELECTOR, "svg > text")]
    assert headings[0] == "Answered" and headings[-1] == "Patient record" and "Derived facts" in headings
    browser.execute_script("arguments[0].scrollIntoView()", graph)
    screenshot(browser, "12-audit-graph-pathway")
    fitted_width = graph.size["width"]
    browser.find_element(By.ID, "graph-full-size").click()
    wait(browser).until(ec.url_contains("/graph.svg"))
    full = browser.find_element(By.CSS_SELECTOR, "svg")
    assert full.size["width"] >= fitted_width
    assert len(full.find_elements(By.CSS_SELECTOR, "g.node")) == len(kinds)


def test_roles_keep_clinicians_out_of_auditor_pages(browser: Any, served: Served) -> None:
    sign_in(browser, served, "alice")
    browser.get(served.base + "/web/audit/")
    assert "Not allowed" in browser.find_element(By.TAG_NAME, "h1").text
    assert "auditor role" in browser.find_element(By.CSS_SELECTOR, ".error").text
    screenshot(browser, "11-not-allowed")
