"""The console in a real browser (Debian's headless Chromium, driven by Playwright).

Called by tests/console.rs, which seeds the outbox, starts `outbox-worker console` and
checks the database afterwards. This script asserts what a person at the browser sees:
the log-in refusal, the counts (against the SQL figures the Rust test computed), a
deleted document's lookup (its record and the superseded verdict), the read-only page, the CSRF refusals, and the replay flow (dry run, a refused confirm
without a reason, the confirm, the audit page). It prints one JSON line for the Rust
side: the audit id and the number of events replayed.

    python console_test.py URL READ_TOKEN WRITE_TOKEN EXPECT.json SCREENSHOT.png

It also takes the document lookup's screenshot, beside it as SCREENSHOT-document.png.
"""

import json
import sys

from playwright.sync_api import sync_playwright

url, read_token, write_token, expect_path, screenshot = sys.argv[1:6]
url = url.rstrip("/")
expect = json.load(open(expect_path))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def text(page, selector):
    return page.locator(selector).inner_text().strip()


def login(page, token):
    page.goto(f"{url}/login")
    page.fill("input[name=token]", token)
    with page.expect_navigation():
        page.click("#login")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
    )
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()

    # 1. Auth refusal: no token, then a wrong one.
    r = page.goto(f"{url}/")
    check(r.status == 401, f"/ without a token: {r.status}")
    check(page.locator("input[name=token]").count() == 1, "the 401 page offers the log-in form")
    page.fill("input[name=token]", "wrong-token-0000000000")
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as info:
        page.click("#login")
    check(info.value.status == 401, f"a wrong token: {info.value.status}")
    check("not accepted" in text(page, "#error"), "the refusal says why")

    # 2. The read token: the overview's counts are the database's.
    login(page, read_token)
    r = page.goto(f"{url}/")
    check(r.status == 200, f"overview: {r.status}")
    for state in ["pending", "processing", "failed", "stuck"]:
        shown = int(text(page, f"#count-{state}"))
        check(shown == expect["states"][state], f"{state}: page {shown}, SQL {expect['states'][state]}")
    rows = page.locator("#by-projection-index tr[data-index]")
    check(rows.count() == len(expect["by_projection_index"]), f"rows by projection and index: {rows.count()}")
    for want in expect["by_projection_index"]:
        row = page.locator(
            f'#by-projection-index tr[data-projection="{want["projection"]}"][data-index="{want["index"]}"]'
        )
        for state in ["pending", "processing", "failed"]:
            shown = int(row.locator(f'td[data-status="{state}"]').inner_text())
            check(shown == want[state], f"{want['index']} {state}: page {shown}, SQL {want[state]}")
    check(expect["stuck_owner"] in text(page, "#workers"), "the stuck event's lease owner is a worker seen")
    stuck_row = page.locator(f'#workers tr[data-worker="{expect["stuck_owner"]}"]')
    check(text(stuck_row, 'td[data-col="leases"]') == "1", "the crashed worker holds one lease")
    running = page.locator(f'#workers tr[data-worker="{expect["worker_id"]}"]')
    check(running.count() == 1, "the running worker is seen")
    check(text(running, 'td[data-col="leases"]') == "0", "the idle worker holds no lease (its pieces ended)")
    check(int(text(running, 'td[data-col="connections"]')) >= 1, "the running worker is connected")
    check(page.locator("#dead-tuples").count() == 1, "the cleanup horizon is shown")
    check("<redacted>" in text(page, "main"), "the database URL is shown redacted")
    check(expect["db_password_marker"] not in page.content(), "no database password on the page")
    check(text(page, "#scope").startswith("read-only"), "the read token is read-only")

    # 3. Failed by reason, and an event whose payload is markup: shown escaped.
    page.goto(f"{url}/failed")
    reason = expect["replay_reason"]
    row = page.locator(f'#failed-by-reason tr[data-reason="{reason}"]')
    check(int(row.locator("td").nth(1).inner_text()) == expect["replay_count"], "failed count of the reason")
    r = page.goto(f"{url}/events/{expect['markup_event']}")
    check(r.status == 200, f"event page: {r.status}")
    check("<script>" in text(page, "#ev-payload"), "the payload's markup is shown as text")
    check(page.locator("main script").count() == 0, "and never becomes an element")

    # 3b. A deleted document, looked up from the overview's form: its record (the version
    # deleted), the older failed index event's verdict, and the workers' superseded acks.
    d = expect["deleted"]
    page.goto(f"{url}/")
    page.fill("#document-lookup input[name=index]", d["index"])
    page.fill("#document-lookup input[name=doc_id]", d["doc_id"])
    with page.expect_navigation() as nav:
        page.click("#look-up")
    check(nav.value.status == 200, f"document lookup: {nav.value.status}")
    version = text(page, '#delete-records td[data-col="version"]')
    check(version == str(d["version"]), f"the version deleted: {version}")
    row = page.locator(f'#document-events tr[data-event="{d["superseded_event"]}"]')
    check(row.get_attribute("data-verdict") == "superseded", "the older index event is superseded")
    why = text(row, "td:last-child")
    check(f"at most the version deleted, {d['version']}" in why and "if replayed" in why, why)
    check(int(text(page, "#superseded-acks")) >= 1, "the worker acked the late older event as superseded")
    page.screenshot(path=screenshot.removesuffix(".png") + "-document.png", full_page=True)
    with page.expect_navigation():
        page.click(f'#document-events tr[data-event="{d["superseded_event"]}"] a')
    check(page.locator("#ev-document").count() == 1, "the event page links back to the lookup")

    # 4. Read-only: the dry run shows, the confirm form does not; a POST is refused.
    page.goto(f"{url}/replay?error_reason={reason}")
    check(int(text(page, "#dry-run-count")) == expect["replay_count"], "dry run count (read scope)")
    check(page.locator("#replay-confirm").count() == 0, "no confirm form for the read token")
    check(page.locator("#read-only").count() == 1, "the page says replay needs the write token")

    # 5. The write token; CSRF refusals with this browser's cookies.
    page.click("header form button")  # log out
    login(page, write_token)
    check(text(page, "#scope") == "write access", "the write token writes")
    ids = ",".join(str(i) for i in expect["replay_ids"])
    form = {"error_reason": reason, "ids": ids, "expected": str(len(expect["replay_ids"])), "reason": "csrf probe"}
    r = page.request.post(f"{url}/replay", form=form)
    check(r.status == 403 and "CSRF" in r.text(), f"POST without the CSRF token: {r.status}")
    csrf = page.locator("header input[name=csrf]").get_attribute("value")
    r = page.request.post(f"{url}/replay", form={**form, "csrf": csrf}, headers={"Origin": "http://evil.example"})
    check(r.status == 403 and "another origin" in r.text(), f"POST from another origin: {r.status}")
    r = page.request.post(f"{url}/replay", form={**form, "csrf": "0" * 32})
    check(r.status == 403, f"POST with a forged CSRF token: {r.status}")

    # 6. Replay from the page: failed -> the reason's replay link -> dry run -> confirm.
    page.goto(f"{url}/failed")
    with page.expect_navigation():
        page.locator(f'#failed-by-reason tr[data-reason="{reason}"] a', has_text="replay").click()
    check(page.locator("#replay-filter input[name=error_reason]").input_value() == reason, "the filter is prefilled")
    page.fill("#replay-filter input[name=limit]", "50")
    with page.expect_navigation():
        page.click("#preview")
    n = int(text(page, "#dry-run-count"))
    check(n == expect["replay_count"], f"dry run: {n}")
    listed = sorted(int(a.inner_text()) for a in page.locator("#dry-run td:first-child a").all())
    check(listed == sorted(expect["replay_ids"]), f"dry run lists exactly these events: {listed}")
    check(text(page, "#confirm") == f"Replay {n} events", "the confirm step names the number")
    # Without a reason: refused, nothing moves.
    with page.expect_response(lambda r: r.url.endswith("/replay") and r.request.method == "POST") as info:
        page.click("#confirm")
    check(info.value.status == 400, f"confirm without a reason: {info.value.status}")
    check("reason is required" in text(page, "#error"), "the refusal says a reason is required")
    page.go_back()
    page.fill("#reason", "mapping fixed (browser test)")
    page.fill("#actor", "playwright")
    with page.expect_navigation():
        page.click("#confirm")
    check("/audit?replayed=" in page.url, f"after the confirm: {page.url}")
    done = text(page, "#replayed")
    check(f"Replayed {n} events" in done, done)
    audit_id = int(page.url.split("replayed=")[1])
    row = page.locator(f'#audit tr[data-audit="{audit_id}"]')
    check("mapping fixed (browser test)" in row.inner_text(), "the audit trail lists the replay")

    # 7. The running worker delivers them; the chart (sampled from its /metrics every 10 s)
    # shows the acks. The overview, with the chart, is the README's screenshot.
    for _ in range(60):
        page.goto(f"{url}/")
        acked = int(page.locator("#rate-chart").get_attribute("data-acked"))
        if acked >= n:
            break
        page.wait_for_timeout(1000)
    check(acked >= n, f"the chart shows the replayed events acked: {acked}")
    page.screenshot(path=screenshot, full_page=True)

    browser.close()
    print(json.dumps({"audit_id": audit_id, "replayed": n}))
