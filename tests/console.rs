//! `outbox-worker console` against the real PostgreSQL and engine: the start-up rules
//! through the binary, the 4xx answers and the security rules through the routes served
//! in-process, and the whole console in a real browser (Debian's headless Chromium driven
//! by Playwright, tests/browser/console_test.py): counts against SQL, auth and CSRF
//! refusals, a deleted document's lookup, a replay from the page, the audit row, then a
//! worker delivering the events.

use outbox_harness as harness;

use std::{path::PathBuf, process::Stdio, time::Duration};

use outbox_worker::{
    config::{Config, NotifyMode},
    console,
    contract::NewEvent,
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use harness::{Engine, TestSchema};

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";

/// The console's routes on a free loopback port, in this process.
async fn serve(cfg: &Config) -> String {
    let (_, access) = console::check(cfg).expect("console config is valid");
    let app = console::router(cfg, access).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Failed events of one reason, a pending one, and a processing one whose lease expired
/// (stuck), written as the worker leaves them (the exceptions hold failed and processing
/// events with their payload).
async fn seed(s: &TestSchema, index: &str, failed: usize) -> Vec<i64> {
    let c = s.client().await;
    let mut ids = Vec::new();
    for i in 0..failed {
        let r = c
            .query_one(
                "INSERT INTO outbox_exceptions (id, projection, index_name, doc_id, op, payload, status,
                     attempts, error_reason, error, created_at, failed_at)
                 VALUES (nextval('outbox_events_id_seq'), 'search_index_to_elastic', $1, $2, 'index',
                     $3, 'failed', 1, 'mapper_parsing_exception', 'failed to parse field [n]', now(), now())
                 RETURNING id",
                &[&index, &format!("f{i}"), &json!({"n": format!("x{i}")})],
            )
            .await
            .unwrap();
        ids.push(r.get(0));
    }
    ids
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let s = TestSchema::new("console4xx", NotifyMode::Adaptive).await;
    let index = harness::unique("c4xx");
    let failed = seed(&s, &index, 2).await;
    let cfg = s.config(&[("console_token", READ), ("console_write_token", WRITE)]);
    let url = serve(&cfg).await;
    let h = http();
    let get = |path: &str, token: Option<&str>| {
        let mut r = h.get(format!("{url}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // Auth: nothing, or a wrong token, is 401; the read and the write token read.
    assert_eq!(
        get("/", None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/", Some("wrong-token-0123456789"))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // A session holding a snapshot: the cleanup horizon names it.
    let holder_name = harness::unique("holder");
    let holder = harness::try_connect(&s.url, &holder_name).await.unwrap();
    holder
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM outbox_exceptions",
        )
        .await
        .unwrap();
    let page = get("/", Some(READ)).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let body = page.text().await.unwrap();
    let holders = body.split(r#"id="xmin-holders""#).nth(1).unwrap();
    let holders = &holders[..holders.find("</table>").unwrap()];
    assert!(
        holders.contains(&holder_name) && holders.contains("<td>backend</td>"),
        "{holders}"
    );
    drop(holder);
    assert!(body.contains(r#"id="count-failed">2<"#), "{body}");
    assert!(
        !body.contains("postgres:postgres@"),
        "no password on the page"
    );
    assert_eq!(
        get("/", Some(WRITE)).await.unwrap().status(),
        StatusCode::OK
    );

    for (path, status, says) in [
        ("/events/abc", StatusCode::BAD_REQUEST, "not an event id"),
        (
            "/events/99999999999",
            StatusCode::NOT_FOUND,
            "no event 99999999999",
        ),
        ("/replay?since=yesterday", StatusCode::BAD_REQUEST, "since:"),
        (
            "/replay?error_reason=x&limit=0",
            StatusCode::BAD_REQUEST,
            "limit:",
        ),
        ("/replay?ids=1,x", StatusCode::BAD_REQUEST, "ids:"),
        (
            "/replay?error_reason=",
            StatusCode::BAD_REQUEST,
            "name at least one",
        ),
        (
            "/audit?replayed=x",
            StatusCode::BAD_REQUEST,
            "not an audit id",
        ),
        ("/no/such/page", StatusCode::NOT_FOUND, "no such page"),
    ] {
        let r = get(path, Some(READ)).await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
    }
    let ok = get(&format!("/events/{}", failed[0]), Some(READ))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // A large payload is cut to 16 KiB characters on the page, and says so.
    let big: i64 = s
        .client()
        .await
        .query_one(
            "INSERT INTO outbox_events (index_name, doc_id, op, payload)
             VALUES ($1, 'big', 'index', jsonb_build_object('text', repeat('y', 50000)))
             RETURNING id",
            &[&index],
        )
        .await
        .unwrap()
        .get(0);
    let body = get(&format!("/events/{big}"), Some(READ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("50012 bytes; the first 16384 characters shown"),
        "{}",
        &body[..2000.min(body.len())]
    );
    let shown = body.split(r#"id="ev-payload">"#).nth(1).unwrap();
    let shown = &shown[..shown.find("</pre>").unwrap()];
    assert_eq!(shown.replace("&quot;", "\"").chars().count(), 16384);

    // POSTs: the CSRF check, then the scope, then the fields.
    let csrf = "0123456789abcdef0123456789abcdef";
    let ids = failed
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let post = |token: &str, cookie: Option<&str>, origin: &str, form: Vec<(&str, String)>| {
        let mut r = h
            .post(format!("{url}/replay"))
            .bearer_auth(token)
            .header(header::ORIGIN, origin)
            .form(&form);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, format!("outbox_console_csrf={c}"));
        }
        r.send()
    };
    let form = |extra: &[(&'static str, &str)]| {
        let mut f = vec![
            ("csrf", csrf.to_string()),
            ("error_reason", "mapper_parsing_exception".to_string()),
            ("ids", ids.clone()),
            ("expected", "2".to_string()),
        ];
        for (k, v) in extra {
            f.retain(|(fk, _)| fk != k);
            f.push((k, v.to_string()));
        }
        f
    };
    let host = url.clone();
    // (token, CSRF cookie, Origin, form, status, what the page says)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        Vec<(&'a str, String)>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            WRITE,
            None,
            &host,
            form(&[("reason", "r")]),
            StatusCode::FORBIDDEN,
            "CSRF",
        ),
        (
            WRITE,
            Some(csrf),
            "http://evil.example",
            form(&[("reason", "r")]),
            StatusCode::FORBIDDEN,
            "another origin",
        ),
        (
            WRITE,
            Some("fedcba9876543210fedcba9876543210"),
            &host,
            form(&[("reason", "r")]),
            StatusCode::FORBIDDEN,
            "CSRF",
        ),
        (
            READ,
            Some(csrf),
            &host,
            form(&[("reason", "r")]),
            StatusCode::FORBIDDEN,
            "write token",
        ),
        (
            WRITE,
            Some(csrf),
            &host,
            form(&[]),
            StatusCode::BAD_REQUEST,
            "reason is required",
        ),
        (
            WRITE,
            Some(csrf),
            &host,
            form(&[("reason", "  ")]),
            StatusCode::BAD_REQUEST,
            "reason is required",
        ),
        (
            WRITE,
            Some(csrf),
            &host,
            form(&[("reason", "r"), ("ids", "")]),
            StatusCode::BAD_REQUEST,
            "nothing to replay",
        ),
        (
            WRITE,
            Some(csrf),
            &host,
            form(&[("reason", "r"), ("expected", "3")]),
            StatusCode::BAD_REQUEST,
            "does not match",
        ),
        (
            WRITE,
            Some(csrf),
            &host,
            form(&[("reason", "r"), ("since", "soon")]),
            StatusCode::BAD_REQUEST,
            "since:",
        ),
    ];
    for (token, cookie, origin, f, status, says) in cases {
        let what = format!("{cookie:?} {origin} {f:?}");
        let r = post(token, cookie, origin, f).await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{what}: {body}");
    }
    assert_eq!(s.count("failed").await, 2, "no refused POST moved anything");

    // The accepted POST: the CLI's audit row, and exactly the named events move (a
    // limit below their number does not cut them).
    let r = post(
        WRITE,
        Some(csrf),
        &host,
        form(&[("reason", "fixed"), ("actor", "ann"), ("limit", "1")]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    assert!(to.starts_with("/audit?replayed="), "{to}");
    let row = s
        .client()
        .await
        .query_one(
            "SELECT id, actor, reason, event_count, event_ids, filter->>'error_reason' FROM outbox_replay_audit",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(to, format!("/audit?replayed={}", row.get::<_, i64>(0)));
    assert_eq!(row.get::<_, String>(1), "ann (console)");
    assert_eq!(row.get::<_, String>(2), "fixed");
    assert_eq!(row.get::<_, i32>(3), 2);
    assert_eq!(row.get::<_, Vec<i64>>(4), failed);
    assert_eq!(row.get::<_, String>(5), "mapper_parsing_exception");
    assert_eq!(s.count("failed").await, 0);
    for id in &failed {
        assert_eq!(s.state(*id).await.unwrap().0, "pending");
    }
}

/// A document's lookup: its delete record (version, routing, the delete event, the prune)
/// and its events still in the outbox, each index event with the worker's verdict; 400
/// naming the missing field, 404 for a document nothing is known of.
#[tokio::test]
async fn a_document_lookup_shows_why_an_index_event_is_superseded() {
    let s = TestSchema::new("consoledoc", NotifyMode::Adaptive).await;
    let index = harness::unique("cdoc");
    let c = s.client().await;
    // Deleted at version 5 an hour ago (retention two hours); a failed index event at 3
    // (superseded if replayed), a failed one at 7 (newer: sent), a pending one at 5 (the
    // delete's own version: superseded when claimed), and one of another projection,
    // which has no record (sent).
    c.execute(
        "INSERT INTO outbox_delete_records
             (projection, index_name, doc_id, routing, doc_version, event_id, deleted_at)
         VALUES ('search_index_to_elastic', $1, 'gone', 'r1', 5, 77, now() - interval '1 hour')",
        &[&index],
    )
    .await
    .unwrap();
    let mut failed = Vec::new();
    for version in [3_i64, 7] {
        let r = c
            .query_one(
                "INSERT INTO outbox_exceptions (id, projection, index_name, doc_id, op, payload,
                     doc_version, status, attempts, error_reason, error, created_at, failed_at)
                 VALUES (nextval('outbox_events_id_seq'), 'search_index_to_elastic', $1, 'gone',
                     'index', '{}', $2, 'failed', 1, 'mapper_parsing_exception', 'x', now(), now())
                 RETURNING id",
                &[&index, &version],
            )
            .await
            .unwrap();
        failed.push(r.get::<_, i64>(0));
    }
    let pending: i64 = c
        .query_one(
            "INSERT INTO outbox_events (index_name, doc_id, op, payload, doc_version)
             VALUES ($1, 'gone', 'index', '{}', 5) RETURNING id",
            &[&index],
        )
        .await
        .unwrap()
        .get(0);
    let other: i64 = c
        .query_one(
            "INSERT INTO outbox_events (projection, index_name, doc_id, op, payload, doc_version)
             VALUES ('reporting', $1, 'gone', 'index', '{}', 2) RETURNING id",
            &[&index],
        )
        .await
        .unwrap()
        .get(0);
    let cfg = s.config(&[
        ("console_token", READ),
        ("delete_record_retention_seconds", "7200"),
    ]);
    let url = serve(&cfg).await;
    let h = http();
    let get = |path: String| h.get(format!("{url}{path}")).bearer_auth(READ).send();

    let r = get(format!("/documents?index={index}&doc_id=gone"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    let records = body.split(r#"id="delete-records""#).nth(1).expect(&body);
    let records = &records[..records.find("</table>").unwrap()];
    assert!(
        records.contains(r#"<td class="n" data-col="version">5</td>"#)
            && records.contains("<td>r1</td>")
            && records.contains(r#"<td class="n">77</td>"#),
        "{records}"
    );
    // An hour left of two; the database's clock, so allow the minute the test takes.
    assert!(
        records.contains("kept for 59 min") || records.contains("kept for 1 h 0 min"),
        "{records}"
    );
    let verdict = |id: i64| {
        let row = body
            .split(&format!(r#"<tr data-event="{id}" "#))
            .nth(1)
            .unwrap_or_else(|| panic!("event {id} listed: {body}"));
        row[..row.find("</tr>").unwrap()].to_string()
    };
    let v = verdict(failed[0]);
    assert!(v.starts_with(r#"data-verdict="superseded""#), "{v}");
    assert!(
        v.contains("its version 3 is at most the version deleted, 5") && v.contains("if replayed"),
        "{v}"
    );
    let v = verdict(failed[1]);
    assert!(
        v.starts_with(r#"data-verdict="sent""#) && v.contains("newer"),
        "{v}"
    );
    let v = verdict(pending);
    assert!(
        v.starts_with(r#"data-verdict="superseded""#) && v.contains("when a worker claims it"),
        "{v}"
    );
    let v = verdict(other);
    assert!(
        v.starts_with(r#"data-verdict="sent""#)
            && v.contains("no delete of this document is recorded for projection reporting"),
        "{v}"
    );

    // One projection: only its record and events.
    let body = get(format!(
        "/documents?index={index}&doc_id=gone&projection=reporting"
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(body.contains(r#"id="no-record""#), "{body}");
    assert!(body.contains(&format!(r#"data-event="{other}""#)));
    assert!(!body.contains(&format!(r#"data-event="{pending}""#)));

    // The event page links to the lookup; the overview has the form.
    let ev = get(format!("/events/{}", failed[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let link =
        format!("/documents?index={index}&amp;doc_id=gone&amp;projection=search_index_to_elastic");
    assert!(ev.contains(&link), "{ev}");
    let overview = get("/".into()).await.unwrap().text().await.unwrap();
    assert!(overview.contains(r#"id="document-lookup""#));

    for (path, status, says) in [
        (
            "/documents?doc_id=gone".to_string(),
            StatusCode::BAD_REQUEST,
            "index: required",
        ),
        (
            format!("/documents?index={index}"),
            StatusCode::BAD_REQUEST,
            "doc_id: required",
        ),
        (
            format!("/documents?index={index}&doc_id=a%00b"),
            StatusCode::BAD_REQUEST,
            "doc_id: holds control characters",
        ),
        (
            format!("/documents?index={index}&doc_id=never"),
            StatusCode::NOT_FOUND,
            "No delete record and no event",
        ),
        (
            "/documents".to_string(),
            StatusCode::OK,
            r#"id="document-lookup""#,
        ),
    ] {
        let r = get(path.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
    }
}

#[tokio::test]
async fn without_a_write_token_the_console_is_read_only() {
    let s = TestSchema::new("consolero", NotifyMode::Adaptive).await;
    let index = harness::unique("cro");
    let failed = seed(&s, &index, 1).await;
    let cfg = s.config(&[]);
    let url = serve(&cfg).await;
    let h = http();
    // Open on loopback: no token needed to read.
    let r = h
        .get(format!(
            "{url}/replay?error_reason=mapper_parsing_exception"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"id="dry-run-count">1<"#), "{body}");
    assert!(!body.contains("replay-confirm"), "no confirm form");
    let csrf = "0123456789abcdef0123456789abcdef";
    let r = h
        .post(format!("{url}/replay"))
        .header(header::COOKIE, format!("outbox_console_csrf={csrf}"))
        .form(&[
            ("csrf", csrf),
            ("ids", &failed[0].to_string()),
            ("expected", "1"),
            ("reason", "r"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("read-only"));
    assert_eq!(s.count("failed").await, 1);
    // Without a read token, another name for this address (DNS rebinding) is refused.
    let r = h
        .get(format!("{url}/"))
        .header(header::HOST, "rebound.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("loopback names only"));
}

/// The binary's start-up rules: one line, exit 2, the token never echoed.
#[test]
fn start_up_refuses_unsafe_settings() {
    let port = harness::free_port().to_string();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("OUTBOX_CONSOLE_LISTEN", "0.0.0.0:PORT")],
            "without OUTBOX_CONSOLE_TOKEN",
        ),
        (
            &[
                ("OUTBOX_CONSOLE_LISTEN", "127.0.0.1:PORT"),
                ("OUTBOX_CONSOLE_TOKEN", READ),
                ("OUTBOX_CONSOLE_WRITE_TOKEN", READ),
            ],
            "must differ",
        ),
        (
            &[
                ("OUTBOX_CONSOLE_LISTEN", "127.0.0.1:PORT"),
                ("OUTBOX_CONSOLE_TOKEN", "short-secret"),
            ],
            "invalid OUTBOX_CONSOLE_TOKEN (value not shown)",
        ),
        (
            &[("OUTBOX_CONSOLE_LISTEN", "off")],
            "OUTBOX_CONSOLE_LISTEN is off",
        ),
    ];
    for (env, says) in cases {
        let mut cmd = harness::worker_command();
        cmd.arg("console");
        for (k, v) in env.iter() {
            cmd.env(k, v.replace("PORT", &port));
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{env:?}: one line: {err}"
        );
        assert!(err.contains(says), "{env:?}: {err}");
        assert!(
            !err.contains("short-secret"),
            "the token is not echoed: {err}"
        );
    }
    // A port already taken: exit 1, naming the variable and the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = harness::worker_command()
        .arg("console")
        .env("OUTBOX_CONSOLE_LISTEN", &addr)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on OUTBOX_CONSOLE_LISTEN={addr}")),
        "{err}"
    );
}

/// The console binary, killed on drop.
struct ConsoleProcess {
    child: std::process::Child,
    url: String,
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_console(s: &TestSchema, metrics_url: &str) -> ConsoleProcess {
    let port = harness::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(harness::unique("console") + ".log");
    let file = std::fs::File::create(&log).unwrap();
    let child = harness::worker_command()
        .arg("console")
        .env("OUTBOX_DATABASE_URL", &s.url)
        .env("OUTBOX_CONSOLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("OUTBOX_CONSOLE_TOKEN", READ)
        .env("OUTBOX_CONSOLE_WRITE_TOKEN", WRITE)
        .env("OUTBOX_CONSOLE_METRICS_URLS", metrics_url)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let p = ConsoleProcess { child, url };
    let h = http();
    for _ in 0..100 {
        if let Ok(r) = h.get(format!("{}/healthz", p.url)).send().await
            && r.status().is_success()
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the console did not answer: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The browser tests' Python (scripts/browser-venv.sh creates it on first use).
fn browser_python() -> String {
    let out = std::process::Command::new(root().join("scripts/browser-venv.sh"))
        .output()
        .expect("scripts/browser-venv.sh runs");
    assert!(
        out.status.success(),
        "scripts/browser-venv.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "no /usr/bin/chromium: run scripts/deps.sh (make test does)"
    );
    let engine = Engine::new();
    let s = TestSchema::new("consolebr", NotifyMode::Adaptive).await;
    let index = harness::unique("cbr");
    let other = harness::unique("cbr_other");
    engine.put_index_with_long_n(&index).await;
    let i = index.as_str();

    // A real worker process makes the failed pile (text in a long field, an invalid
    // event) and keeps running: the console charts its /metrics, and it delivers the
    // replay. Its reclaimer waits an hour, so the stuck event below stays stuck.
    let mut worker =
        harness::WorkerProcess::spawn(&s.env(), &[("OUTBOX_RECLAIM_INTERVAL_SECONDS", "3600")]);
    worker.wait_ready().await.expect("worker ready");
    let conflicting = s
        .insert(&[
            NewEvent::index(i, "c1", json!({"n": "one"})),
            NewEvent::index(i, "c2", json!({"n": "two"})),
            NewEvent::index(i, "c3", json!({"n": "three"})),
        ])
        .await;
    let markup = s
        .insert(&[NewEvent::index(
            i,
            "inv",
            json!("<script>alert(1)</script>"),
        )])
        .await[0];
    s.insert(&[NewEvent::index(i, "ok", json!({"n": 1}))]).await;
    s.wait_drained(Duration::from_secs(30)).await;
    // A deleted document: the worker records the delete (at its id, the version), then
    // acks an older index event of it as superseded, unsent; an older failed one stays
    // for the document lookup's verdict ("superseded if replayed").
    let deleted = s.insert(&[NewEvent::delete(i, "ok")]).await[0];
    s.wait_drained(Duration::from_secs(30)).await;
    s.insert(&[NewEvent::index(i, "ok", json!({"n": 2})).version(1)])
        .await;
    s.wait_drained(Duration::from_secs(30)).await;
    // Then what no running worker touches: pending events of another projection, and a
    // processing event whose lease expired (stuck).
    let c = s.client().await;
    for doc in ["p1", "p2"] {
        c.execute(
            "INSERT INTO outbox_events (projection, index_name, doc_id, op, payload)
             VALUES ('reporting', $1, $2, 'index', '{}')",
            &[&other, &doc],
        )
        .await
        .unwrap();
    }
    let stuck_owner = harness::unique("crashed");
    c.execute(
        "INSERT INTO outbox_exceptions (id, projection, index_name, doc_id, op, payload, status,
             attempts, lease_owner, lease_expires_at, processing_started_at, created_at)
         VALUES (nextval('outbox_events_id_seq'), 'reporting', $1, 's1', 'index',
             '{\"n\": 5}', 'processing', 1, $2, now() - interval '1 minute',
             now() - interval '2 minutes', now() - interval '2 minutes')",
        &[&other, &stuck_owner],
    )
    .await
    .unwrap();
    let recorded: i64 = c
        .query_one(
            "SELECT doc_version FROM outbox_delete_records WHERE index_name = $1 AND doc_id = 'ok'",
            &[&index],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, deleted, "the delete is recorded at its version");
    let superseded_failed: i64 = c
        .query_one(
            "INSERT INTO outbox_exceptions (id, projection, index_name, doc_id, op, payload,
                 doc_version, status, attempts, error_reason, error, created_at, failed_at)
             VALUES (nextval('outbox_events_id_seq'), 'search_index_to_elastic', $1, 'ok',
                 'index', '{\"n\": 3}', 2, 'failed', 1, 'illegal_argument_exception', 'x',
                 now(), now())
             RETURNING id",
            &[&index],
        )
        .await
        .unwrap()
        .get(0);
    let reason: String = c
        .query_one(
            "SELECT error_reason FROM outbox_exceptions WHERE id = $1",
            &[&conflicting[0]],
        )
        .await
        .unwrap()
        .get(0);

    // What the page must show, from SQL.
    let states = |status: &str| {
        let c = &c;
        let status = status.to_string();
        async move {
            c.query_one(
                "SELECT count(*) FROM outbox_event_states WHERE status = $1",
                &[&status],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let stuck: i64 = c
        .query_one(
            "SELECT count(*) FROM outbox_event_states WHERE status = 'processing' AND lease_expires_at < now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let by_pi: Vec<Value> = c
        .query(
            "SELECT projection, index_name,
                    count(*) FILTER (WHERE status = 'pending') AS pending,
                    count(*) FILTER (WHERE status = 'processing') AS processing,
                    count(*) FILTER (WHERE status = 'failed') AS failed
             FROM outbox_event_states GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            json!({"projection": r.get::<_, String>(0), "index": r.get::<_, String>(1),
                   "pending": r.get::<_, i64>(2), "processing": r.get::<_, i64>(3),
                   "failed": r.get::<_, i64>(4)})
        })
        .collect();
    let expect = json!({
        "states": {
            "pending": states("pending").await,
            "processing": states("processing").await,
            "failed": states("failed").await,
            "stuck": stuck,
        },
        "by_projection_index": by_pi,
        "stuck_owner": stuck_owner,
        "worker_id": worker.id,
        "db_password_marker": "postgres:postgres@",
        "replay_reason": reason,
        "replay_ids": conflicting,
        "replay_count": conflicting.len(),
        "markup_event": markup,
        "deleted": {"index": index, "doc_id": "ok", "version": deleted,
                    "superseded_event": superseded_failed},
    });
    assert_eq!(expect["states"]["failed"], 5, "{expect}");
    assert_eq!(expect["states"]["stuck"], 1, "{expect}");
    let dir = root().join("target/console-test");
    std::fs::create_dir_all(&dir).unwrap();
    let expect_path = dir.join(format!("{}.json", s.name));
    std::fs::write(&expect_path, expect.to_string()).unwrap();
    let screenshot = dir.join("console.png");

    // The operator fixes the mapping (n becomes text) before replaying.
    let del = engine
        .raw()
        .await
        .delete(format!("{}/{index}", engine.url))
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success());
    engine
        .put_index(
            i,
            json!({"mappings": {"properties": {"n": {"type": "keyword"}}}}),
        )
        .await;

    let console = start_console(&s, &format!("{}/metrics", worker.metrics_url)).await;
    let python = browser_python();
    let out = tokio::process::Command::new(&python)
        .arg(root().join("tests/browser/console_test.py"))
        .args([&console.url, READ, WRITE])
        .arg(&expect_path)
        .arg(&screenshot)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["replayed"], 3);
    for shot in [screenshot.clone(), dir.join("console-document.png")] {
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "a screenshot: {}",
            shot.display()
        );
    }

    // The audit row is the CLI's: the same table, the same columns, read by `audit`.
    let audit = harness::worker_command()
        .args(["audit", "--json"])
        .env("OUTBOX_DATABASE_URL", &s.url)
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(rows.as_array().unwrap().len(), 1, "one replay: {rows}");
    assert_eq!(row["id"], report["audit_id"]);
    assert_eq!(row["actor"], "playwright (console)");
    assert_eq!(row["reason"], "mapping fixed (browser test)");
    assert_eq!(row["event_count"], 3);
    assert_eq!(row["event_ids"], json!(conflicting));
    assert_eq!(row["filter"]["error_reason"], reason.as_str());
    assert_eq!(
        s.count("failed").await,
        2,
        "the invalid event and the superseded one stay failed"
    );

    // The running worker delivers the replayed events; the invalid one stays failed.
    let start = std::time::Instant::now();
    for (n, doc) in ["one", "two", "three"].iter().zip(["c1", "c2", "c3"]) {
        let source = loop {
            engine.refresh(i).await;
            if let Some((source, _)) = engine.get(i, doc).await {
                break source;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{doc} not delivered"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(source["n"], *n);
    }
    assert_eq!(s.count("failed").await, 2);
    worker.stop(Duration::from_secs(10)).await.unwrap();
}

/// A database that does not answer is a 503 that says so, never a 500 or a hang.
#[tokio::test]
async fn an_unreachable_database_is_a_503() {
    let port = harness::free_port();
    let cfg = Config::from_pairs([(
        "database_url",
        format!("postgres://u:pw-s3cret@127.0.0.1:{port}/x").as_str(),
    )])
    .unwrap();
    let url = serve(&cfg).await;
    for path in [
        "/",
        "/failed",
        "/events/1",
        "/audit",
        "/documents?index=i&doc_id=d",
    ] {
        let r = http().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("the database is unreachable"),
            "{path}: {body}"
        );
        assert!(!body.contains("pw-s3cret"), "{path}: no password: {body}");
    }
}
