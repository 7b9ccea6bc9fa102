//! Security: TLS to PostgreSQL (Debian's cluster has ssl = on with its snakeoil
//! certificate), TLS to the engine through a real TLS-terminating proxy (nginx) with a CA
//! generated here, basic and API-key auth checked by that proxy, and least-privilege roles.

use outbox_harness as harness;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use outbox_worker::{
    config::NotifyMode,
    contract::{self, NewEvent},
    db,
};
use serde_json::json;

use harness::{Engine, InProcessWorker, TestSchema};

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

fn url_with(base: &str, extra: &str) -> String {
    // The base may say sslmode=disable; the mode under test comes last and wins.
    harness::with_param(base, extra)
}

/// Connect with a given URL (and CA file); Ok(encrypted?) or the one-line error.
async fn connect(url: String, ca: Option<&str>) -> Result<bool, String> {
    let mut pairs = vec![("database_url", url.as_str())];
    if let Some(ca) = ca {
        pairs.push(("database_ca_file", ca));
    }
    let cfg = outbox_worker::config::Config::from_pairs(pairs).unwrap();
    match db::connect_simple(&cfg, "tls-test").await {
        Ok(c) => Ok(db::is_encrypted(&c).await.unwrap()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn postgres_tls_modes() {
    let s = TestSchema::new("pgtls", NotifyMode::Off).await;
    assert_eq!(
        connect(url_with(&s.url, "sslmode=disable"), None).await,
        Ok(false)
    );
    assert_eq!(
        connect(url_with(&s.url, "sslmode=require"), None).await,
        Ok(true)
    );
    assert_eq!(
        connect(url_with(&s.url, "sslmode=prefer"), None).await,
        Ok(true),
        "prefer uses TLS when offered"
    );
    // verify-ca against the server's own (self-signed) certificate: the chain checks out.
    assert_eq!(
        connect(url_with(&s.url, "sslmode=verify-ca"), Some(SNAKEOIL)).await,
        Ok(true)
    );
    // verify-full: the snakeoil certificate names the host, not 127.0.0.1.
    let full = connect(url_with(&s.url, "sslmode=verify-full"), Some(SNAKEOIL)).await;
    assert!(
        full.as_ref().is_err_and(|e| e.contains("cannot connect")),
        "{full:?}"
    );
    // verify-ca against a CA that did not sign it: refused.
    let dir = temp_dir("pgtls");
    let pki = Pki::generate(&dir);
    let wrong = connect(
        url_with(&s.url, "sslmode=verify-ca"),
        Some(pki.ca.to_str().unwrap()),
    )
    .await;
    assert!(wrong.is_err(), "{wrong:?}");
    // A worker runs with verify-ca end to end.
    let cfg = s.config(&[
        ("database_url", &url_with(&s.url, "sslmode=verify-ca")),
        ("database_ca_file", SNAKEOIL),
        ("notify_mode", "off"),
    ]);
    let index = harness::unique("pgtls");
    let w = InProcessWorker::start(cfg);
    s.insert(&[NewEvent::index(index.as_str(), "d", json!({"n": 1}))])
        .await;
    s.wait_drained(Duration::from_secs(20)).await;
    w.stop().await;
    assert_eq!(Engine::new().count(&index).await, 1);
}

fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(harness::unique(prefix));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn generate(dir: &Path) -> Pki {
        let p = |n: &str| dir.join(n);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=outbox test CA",
            ])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")));
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("server.pem"))
            .arg("-extfile")
            .arg(p("ext.cnf")));
        Pki {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        }
    }
}

/// nginx terminating TLS in front of the real engine: one port demands basic auth, the
/// other an API key; both pass what they accept on to the engine.
struct TlsProxy {
    nginx: harness::Nginx,
    basic_port: u16,
    key_port: u16,
}

const USER: &str = "elastic";
const PASSWORD: &str = "pw-s3cret";
const API_KEY: &str = "a2V5LXMzY3JldA==";

impl TlsProxy {
    fn start(dir: &Path, pki: &Pki) -> TlsProxy {
        let hash = Command::new("openssl")
            .args(["passwd", "-apr1", PASSWORD])
            .output()
            .unwrap();
        let htpasswd = dir.join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout)),
        )
        .unwrap();
        let (basic_port, key_port) = (harness::free_port(), harness::free_port());
        let upstream = harness::engine_url();
        let tls = format!(
            "ssl_certificate {}; ssl_certificate_key {};",
            pki.cert.display(),
            pki.key.display()
        );
        let servers = [
            format!(
                "server {{ listen 127.0.0.1:{basic_port} ssl; {tls}
    location / {{ auth_basic \"engine\"; auth_basic_user_file {}; proxy_pass {upstream}; }} }}",
                htpasswd.display()
            ),
            format!(
                "server {{ listen 127.0.0.1:{key_port} ssl; {tls}
    location / {{ if ($http_authorization != \"ApiKey {API_KEY}\") {{ return 401; }} proxy_pass {upstream}; }} }}"
            ),
        ];
        let nginx = harness::Nginx::start(
            "access_log {dir}/access.log; client_max_body_size 100m;",
            &servers,
            key_port,
        );
        TlsProxy {
            nginx,
            basic_port,
            key_port,
        }
    }

    fn access_log(&self) -> String {
        self.nginx.access_log()
    }
}

/// Run a worker on two events until they are delivered, or (when they cannot be) until both
/// have been tried and sent back to pending with a reason; returns (pending, failed).
async fn deliver(s: &TestSchema, extra: &[(&str, &str)], index: &str) -> (i64, i64) {
    let w = InProcessWorker::start(s.config(extra));
    s.insert(&[
        NewEvent::index(index, "d1", json!({"n": 1})),
        NewEvent::index(index, "d2", json!({"n": 2})),
    ])
    .await;
    let c = s.client().await;
    let start = Instant::now();
    loop {
        let (left, tried): (i64, i64) = {
            let r = c
                .query_one(
                    "SELECT count(*) FILTER (WHERE status <> 'failed'),
                            count(*) FILTER (WHERE status = 'pending' AND error_reason IS NOT NULL)
                     FROM outbox_event_states",
                    &[],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        if left == 0 || tried == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "neither delivered nor retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.stop().await;
    (s.count("pending").await, s.count("failed").await)
}

#[tokio::test]
async fn engine_tls_and_auth_through_a_proxy() {
    let dir = temp_dir("nginx");
    let pki = Pki::generate(&dir);
    let nginx = TlsProxy::start(&dir, &pki);
    let engine = Engine::new();
    let ca = pki.ca.to_str().unwrap();
    let basic_url = format!("https://127.0.0.1:{}", nginx.basic_port);
    let key_url = format!("https://127.0.0.1:{}", nginx.key_port);

    // Basic auth over TLS, the CA given: delivered.
    let s = TestSchema::new("tls_basic", NotifyMode::Adaptive).await;
    let index = harness::unique("tls_basic");
    let got = deliver(
        &s,
        &[
            ("elasticsearch_url", &basic_url),
            ("elasticsearch_ca_file", ca),
            ("elasticsearch_username", USER),
            ("elasticsearch_password", PASSWORD),
        ],
        &index,
    )
    .await;
    assert_eq!(got, (0, 0));
    assert_eq!(engine.count(&index).await, 2);

    // API key over TLS: delivered.
    let s = TestSchema::new("tls_key", NotifyMode::Adaptive).await;
    let index = harness::unique("tls_key");
    let got = deliver(
        &s,
        &[
            ("elasticsearch_url", &key_url),
            ("elasticsearch_ca_file", ca),
            ("elasticsearch_api_key", API_KEY),
        ],
        &index,
    )
    .await;
    assert_eq!(got, (0, 0));
    assert_eq!(engine.count(&index).await, 2);

    // A wrong password: the proxy answers 401; events are retried (never failed: it is
    // the operator's problem, not the events'), with the reason recorded.
    let s = TestSchema::new("tls_badpw", NotifyMode::Adaptive).await;
    let index = harness::unique("tls_badpw");
    let (pending, failed) = deliver(
        &s,
        &[
            ("elasticsearch_url", &basic_url),
            ("elasticsearch_ca_file", ca),
            ("elasticsearch_username", USER),
            ("elasticsearch_password", "wrong"),
        ],
        &index,
    )
    .await;
    assert_eq!((pending, failed), (2, 0));
    let reason: Option<String> = s
        .client()
        .await
        .query_one("SELECT max(error_reason) FROM outbox_event_states", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason.as_deref(), Some("unauthorized"));
    // A wrong API key: likewise.
    let s = TestSchema::new("tls_badkey", NotifyMode::Adaptive).await;
    let (pending, failed) = deliver(
        &s,
        &[
            ("elasticsearch_url", &key_url),
            ("elasticsearch_ca_file", ca),
            ("elasticsearch_api_key", "d3Jvbmc="),
        ],
        &harness::unique("tls_badkey"),
    )
    .await;
    assert_eq!((pending, failed), (2, 0));

    // Without our CA the certificate is not trusted: nothing is sent, everything retried.
    let s = TestSchema::new("tls_noca", NotifyMode::Adaptive).await;
    let index = harness::unique("tls_noca");
    let before = nginx.access_log().lines().count();
    let (pending, failed) = deliver(
        &s,
        &[
            ("elasticsearch_url", &key_url),
            ("elasticsearch_api_key", API_KEY),
        ],
        &index,
    )
    .await;
    assert_eq!((pending, failed), (2, 0));
    assert_eq!(
        nginx.access_log().lines().count(),
        before,
        "no request got through an untrusted TLS session"
    );
    let reason: Option<String> = s
        .client()
        .await
        .query_one("SELECT max(error_reason) FROM outbox_event_states", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        matches!(
            reason.as_deref(),
            Some("engine_unreachable" | "connection_error")
        ),
        "{reason:?}"
    );
    // The proxy saw both credentials it accepted and refused; secrets never in our errors.
    let errors: Vec<String> = s
        .client()
        .await
        .query("SELECT error FROM outbox_event_states", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        errors
            .iter()
            .all(|e| !e.contains(API_KEY) && !e.contains(PASSWORD))
    );
}

#[tokio::test]
async fn least_privilege_roles_are_enough() {
    let s = TestSchema::new("roles", NotifyMode::Adaptive).await;
    let admin = harness::connect(&harness::pg_base_url()).await;
    let worker = harness::unique("r_worker");
    let operator = harness::unique("r_operator");
    let producer = harness::unique("r_producer");
    let console_ro = harness::unique("r_console");
    let console_rw = harness::unique("r_console_w");
    let roles = [&worker, &operator, &producer, &console_ro, &console_rw];
    for r in roles {
        admin
            .batch_execute(&format!("CREATE ROLE {r} LOGIN PASSWORD 'pw'"))
            .await
            .unwrap();
    }
    let grants = include_str!("../docs/roles.sql")
        .replace(":\"schema\"", &s.name)
        .replace(":\"worker\"", &worker)
        .replace(":\"operator\"", &operator)
        .replace(":\"producer\"", &producer)
        .replace(":\"console_writer\"", &console_rw)
        .replace(":\"console\"", &console_ro);
    s.client().await.batch_execute(&grants).await.unwrap();
    let as_role = |role: &str| {
        let base = harness::pg_base_url();
        let url = url::Url::parse(&base).unwrap();
        format!(
            "postgres://{role}:pw@{}:{}{}?options=-c%20search_path%3D{}",
            url.host_str().unwrap(),
            url.port().unwrap_or(5432),
            url.path(),
            s.name
        )
    };
    let index = harness::unique("roles");
    let cfg = s.config(&[("database_url", &as_role(&worker))]);
    let w = InProcessWorker::start(cfg);
    // The producer role inserts while the worker waits (the trigger runs as its owner).
    let prod = harness::connect(&as_role(&producer)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..5 {
        contract::insert(
            &prod,
            &[NewEvent::index(&index, format!("d{n}"), json!({"n": n}))],
        )
        .await
        .unwrap();
    }
    // Raw SQL: a payload that is not an object breaks the contract on purpose.
    for doc in ["bad", "bad2"] {
        prod.execute("INSERT INTO outbox_events (index_name, doc_id, op, payload) VALUES ($1, $2, 'index', '[1]')", &[&index, &doc]).await.unwrap();
    }
    s.wait_drained(Duration::from_secs(20)).await;
    w.stop().await;
    assert_eq!(Engine::new().count(&index).await, 5);
    // The worker role can do no more than it needs.
    let wc = harness::connect(&as_role(&worker)).await;
    let denied = contract::insert(&wc, &[NewEvent::delete("x", "y")]).await;
    assert!(denied.unwrap_err().to_string().contains("db error"));
    assert!(wc.batch_execute("TRUNCATE outbox_events").await.is_err());
    assert!(
        wc.batch_execute("DELETE FROM outbox_replay_audit")
            .await
            .is_err()
    );
    assert!(
        prod.query("SELECT * FROM outbox_events", &[])
            .await
            .is_err(),
        "producers cannot read the outbox"
    );
    // The console's roles: the read-only one shows every page, the writer replays.
    let bad2: i64 = s
        .client()
        .await
        .query_one(
            "SELECT id FROM outbox_exceptions WHERE doc_id = 'bad2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    console_pages_and_replay(&s, &as_role(&console_ro), &as_role(&console_rw), bad2).await;
    // The operator role replays (and audits).
    let out = harness::worker_command()
        .args([
            "replay",
            "--error-reason",
            "invalid_event",
            "--reason",
            "role test",
            "--json",
        ])
        .env("OUTBOX_DATABASE_URL", as_role(&operator))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["count"],
        1
    );
    drop((wc, prod));
    for r in roles {
        admin
            .batch_execute(&format!("DROP OWNED BY {r}; DROP ROLE {r}"))
            .await
            .ok();
    }
}

/// The console as its least-privilege roles: every page as the read-only role, and a
/// replay of event `id` as the writer (the read-only role is refused by the database).
async fn console_pages_and_replay(s: &TestSchema, read_url: &str, write_url: &str, id: i64) {
    use outbox_worker::console;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let serve = |url: &str, write: bool| {
        let mut pairs = vec![("database_url", url)];
        if write {
            pairs.push(("console_write_token", "write-token-0123456789"));
        }
        let cfg = s.config(&pairs);
        let (_, access) = console::check(&cfg).unwrap();
        let app = console::router(&cfg, access).unwrap();
        async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", l.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(l, app).await });
            base
        }
    };
    let ro = serve(read_url, false).await;
    let (index, doc): (String, String) = {
        let r = s
            .client()
            .await
            .query_one(
                "SELECT index_name, doc_id FROM outbox_exceptions WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    for path in [
        "/".to_string(),
        "/failed".into(),
        format!("/events/{id}"),
        "/replay?error_reason=invalid_event".into(),
        "/audit".into(),
        // The document lookup reads outbox_delete_records too.
        format!("/documents?index={index}&doc_id={doc}"),
    ] {
        let r = http.get(format!("{ro}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} as the console role");
    }
    let csrf = "0123456789abcdef0123456789abcdef";
    let replay = |base: String| {
        http.post(format!("{base}/replay"))
            .bearer_auth("write-token-0123456789")
            .header("cookie", format!("outbox_console_csrf={csrf}"))
            .form(&[
                ("csrf", csrf.to_string()),
                ("ids", id.to_string()),
                ("expected", "1".into()),
                ("reason", "console role test".into()),
            ])
            .send()
    };
    // A write token on a console whose role may not write: the database refuses.
    let r = replay(serve(read_url, true).await).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("permission denied"));
    assert_eq!(s.state(id).await.unwrap().0, "failed");
    let r = replay(serve(write_url, true).await).await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(s.state(id).await.unwrap().0, "pending");
}
