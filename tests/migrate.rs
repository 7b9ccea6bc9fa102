//! `migrate`: idempotent, and safe when several processes run it at once.

use outbox_harness as harness;

use outbox_worker::config::NotifyMode;

async fn schema_fingerprint(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in client
        .query(
            "SELECT table_name || '.' || column_name || ':' || data_type FROM information_schema.columns
             WHERE table_schema = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
    {
        out.push(r.get(0));
    }
    for r in client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
    {
        out.push(r.get(0));
    }
    for r in client
        .query(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND NOT t.tgisinternal
             ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
    {
        out.push(format!("trigger {}", r.get::<_, String>(0)));
    }
    out
}

#[tokio::test]
async fn migrate_twice_and_from_two_processes_at_once() {
    let admin = harness::connect(&harness::pg_base_url()).await;
    // Reference: a schema migrated once in-process.
    let reference = harness::TestSchema::new("mig_ref", NotifyMode::Adaptive).await;
    let expected = schema_fingerprint(&admin, &reference.name).await;
    assert!(
        expected
            .iter()
            .any(|s| s.contains("outbox_events_window_idx"))
    );
    assert!(expected.iter().any(|s| s == "trigger outbox_events_notify"));

    // A fresh empty schema, migrated by two processes concurrently, then once more.
    let name = harness::unique("t_mig_conc");
    admin
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let url = harness::schema_url(&harness::pg_base_url(), &name);
    let spawn = || {
        harness::worker_command()
            .arg("migrate")
            .env("OUTBOX_DATABASE_URL", &url)
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let outs = [
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    ];
    assert_eq!(
        outs.iter()
            .filter(|o| o.contains("migrated: applied [0001_outbox_events"))
            .count(),
        1,
        "exactly one process applies the migration: {outs:?}"
    );
    let again = spawn().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already applied [0001_outbox_events"));
    let got = schema_fingerprint(&admin, &name).await;
    let normalise = |v: Vec<String>, schema: &str| -> Vec<String> {
        v.into_iter().map(|s| s.replace(schema, "S")).collect()
    };
    assert_eq!(normalise(got, &name), normalise(expected, &reference.name));
}

#[tokio::test]
async fn migrate_switches_the_trigger_mode() {
    let s = harness::TestSchema::new("mig_mode", NotifyMode::Adaptive).await;
    let mut c = s.client().await;
    assert_eq!(
        outbox_worker::migrate::installed_notify_mode(&c)
            .await
            .unwrap(),
        NotifyMode::Adaptive
    );
    outbox_worker::migrate::migrate(&mut c, NotifyMode::Always)
        .await
        .unwrap();
    assert_eq!(
        outbox_worker::migrate::installed_notify_mode(&c)
            .await
            .unwrap(),
        NotifyMode::Always
    );
    outbox_worker::migrate::migrate(&mut c, NotifyMode::Off)
        .await
        .unwrap();
    assert_eq!(
        outbox_worker::migrate::installed_notify_mode(&c)
            .await
            .unwrap(),
        NotifyMode::Off
    );
}

/// An outbox of schema 0002 (the single table), with its rows in every state, upgrades to
/// the insert-only log through `migrate`: refused while a worker of the old version holds a
/// live lease; then every row carried over with its state, nothing lost, nothing sent twice.
#[tokio::test]
async fn upgrade_from_schema_0002_keeps_every_event() {
    use outbox_harness::{Engine, prom};
    use std::time::Duration;

    let admin = harness::connect(&harness::pg_base_url()).await;
    let name = harness::unique("t_upgrade");
    admin
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let url = harness::schema_url(&harness::pg_base_url(), &name);
    let mut c = harness::connect(&url).await;
    // Schema 0002 as a deployment of the previous version has it: its two migrations and
    // its adaptive trigger, applied and recorded the way its `migrate` did.
    migrate_up_to(&mut c, 2, true).await;
    let index = harness::unique("upgrade");
    // Raw SQL: the old table's worker-owned columns, as old workers left them.
    // 1-20 pending (fresh), 21-25 pending with a retry due, 26-28 processing under an
    // expired lease (a crashed old worker), 29 processing under a live lease (an old
    // worker still running), 30-32 failed.
    c.batch_execute(&format!(
        "INSERT INTO outbox_events (index_name, doc_id, op, payload)
         SELECT '{index}', 'd' || g, 'index', jsonb_build_object('n', g)
         FROM generate_series(1, 32) g;
         UPDATE outbox_events SET attempts = 2, deferrals = 1, next_retry_at = now() - interval '1 second',
                error_reason = 'server_error', error = '503' WHERE id BETWEEN 21 AND 25;
         UPDATE outbox_events SET status = 'processing', attempts = 1, lease_owner = 'old-crashed',
                lease_expires_at = now() - interval '1 minute', processing_started_at = now() - interval '2 minutes'
          WHERE id BETWEEN 26 AND 28;
         UPDATE outbox_events SET status = 'processing', attempts = 1, lease_owner = 'old-running',
                lease_expires_at = now() + interval '1 hour', processing_started_at = now() WHERE id = 29;
         UPDATE outbox_events SET status = 'failed', attempts = 12, error_reason = 'mapper_parsing_exception',
                error = 'bad', failed_at = now() WHERE id BETWEEN 30 AND 32;"
    ))
    .await
    .unwrap();
    let migrate = || migrate_process(&url);

    // A live lease of an old worker: refused, one line, nothing changed.
    assert_refused_for_old_running(&migrate());
    let still_old: i64 = c
        .query_one(
            "SELECT count(*) FROM outbox_events WHERE status = 'processing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still_old, 4, "the refused migrate changed nothing");

    // The old worker stops: SIGTERM released its event (pending, attempt refunded).
    c.batch_execute(
        "UPDATE outbox_events SET status = 'pending', attempts = 0, lease_owner = NULL,
                lease_expires_at = NULL, processing_started_at = NULL WHERE id = 29",
    )
    .await
    .unwrap();
    let done = migrate();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("0003_insert_only_log"));

    // Every row carried over with its state.
    let states: Vec<(i64, String, i32, Option<String>)> = c
        .query(
            "SELECT id, status, attempts, error_reason FROM outbox_exceptions ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(states.len(), 32);
    for (id, status, attempts, reason) in &states {
        let want = match id {
            21..=25 => ("pending", 2, Some("server_error")),
            26..=28 => ("processing", 1, None),
            30..=32 => ("failed", 12, Some("mapper_parsing_exception")),
            _ => ("pending", 0, None),
        };
        assert_eq!(
            (status.as_str(), *attempts, reason.as_deref()),
            want,
            "event {id}"
        );
    }
    // An old worker still running fails every statement: its SQL names the old columns.
    let old_claim = c
        .execute(
            "UPDATE outbox_events SET status = 'processing' WHERE status = 'pending'",
            &[],
        )
        .await;
    assert!(old_claim.is_err(), "the log has no status column");

    // A new worker delivers the 29 undelivered events once each (the stuck ones after the
    // reclaim), and a new event through the log; the failed pile stays for a replay.
    let mut w = new_worker(
        &url,
        &[
            ("OUTBOX_BASE_BACKOFF_SECONDS", "0.05"),
            ("OUTBOX_MAX_BACKOFF_SECONDS", "0.2"),
        ],
    );
    w.wait_ready().await.unwrap();
    outbox_worker::contract::insert(
        &c,
        &[outbox_worker::contract::NewEvent::index(
            index.as_str(),
            "d33",
            serde_json::json!({"n": 33}),
        )],
    )
    .await
    .unwrap();
    let engine = Engine::new();
    wait_all_delivered(&c, &w).await;
    let metrics = w.scrape().await.unwrap();
    w.stop(Duration::from_secs(10)).await.unwrap();
    engine.refresh(&index).await;
    let docs = engine.all(&index).await;
    assert_eq!(docs.len(), 30, "29 carried over + 1 new");
    for n in (1..=29).chain([33]) {
        let (body, _) = &docs[&format!("d{n}")];
        assert_eq!(body["n"], n, "d{n}");
    }
    assert_eq!(
        prom::labelled(&metrics, "outbox_acked_total", "kind=\"indexed\""),
        30.0
    );
    assert_eq!(
        prom::labelled(&metrics, "outbox_acked_total", "kind=\"version_conflict\""),
        0.0,
        "nothing was sent twice"
    );
    let failed: i64 = c
        .query_one(
            "SELECT count(*) FROM outbox_event_states WHERE status = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 3);
    drop(c);
    harness::drop_schema(&harness::pg_base_url(), &name)
        .await
        .unwrap();
}

/// An outbox of schema 0003 (pieces updated and deleted) upgrades to insert-only pieces:
/// refused while a worker of that version holds a live piece; then an expired piece's
/// events become processing exceptions for the reclaim, the cursor carries over, and a new
/// worker delivers every event once, without taking the log's claimed events again.
#[tokio::test]
async fn upgrade_from_schema_0003_carries_pieces_and_cursors() {
    use outbox_harness::{Engine, prom};
    use std::time::Duration;

    let admin = harness::connect(&harness::pg_base_url()).await;
    let name = harness::unique("t_upgrade3");
    admin
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let url = harness::schema_url(&harness::pg_base_url(), &name);
    let mut c = harness::connect(&url).await;
    migrate_up_to(&mut c, 3, false).await;
    let index = harness::unique("upgrade3");
    // Events 1-10 in one transaction. A 0003 worker had claimed 1-3 (an acked piece, gone
    // already), 4-6 (its piece expired: the worker crashed) and 7-8 (a live piece of a
    // worker still running); 9-10 were not claimed yet.
    c.batch_execute(&format!(
        "INSERT INTO outbox_events (index_name, doc_id, op, payload)
         SELECT '{index}', 'd' || g, 'index', jsonb_build_object('n', g)
         FROM generate_series(1, 10) g;"
    ))
    .await
    .unwrap();
    // Another transaction: the window's snapshot sees the events' one committed.
    c.batch_execute(
        "INSERT INTO outbox_cursors (projection, window_lo, window_hi, after_txid, after_id)
         SELECT 'search_index_to_elastic', '1:1:', pg_current_snapshot(), txid, 8
         FROM outbox_events WHERE id = 8;
         INSERT INTO outbox_pieces (projection, lease_owner, lease_expires_at,
                                    processing_started_at, event_ids)
         VALUES ('search_index_to_elastic', 'old-crashed', now() - interval '1 minute',
                 now() - interval '2 minutes', '{4,5,6}'),
                ('search_index_to_elastic', 'old-running', now() + interval '1 hour',
                 now(), '{7,8}');",
    )
    .await
    .unwrap();
    let migrate = || migrate_process(&url);

    assert_refused_for_old_running(&migrate());

    // The running worker stops: SIGTERM released its events (0003's log_release), and its
    // piece went.
    c.batch_execute(
        "INSERT INTO outbox_exceptions (id, projection, index_name, doc_id, op, payload,
                                        doc_version, created_at, status, attempts)
         SELECT id, projection, index_name, doc_id, op, payload, doc_version, created_at,
                'pending', 0
         FROM outbox_events WHERE id IN (7, 8);
         DELETE FROM outbox_pieces WHERE lease_owner = 'old-running';",
    )
    .await
    .unwrap();
    let done = migrate();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("0004_insert_only_pieces"));
    let states: Vec<(i64, String, Option<String>)> = c
        .query(
            "SELECT id, status, lease_owner FROM outbox_exceptions ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(i64, String, Option<String>)> = vec![
        (4, "processing".into(), Some("old-crashed".into())),
        (5, "processing".into(), Some("old-crashed".into())),
        (6, "processing".into(), Some("old-crashed".into())),
        (7, "pending".into(), None),
        (8, "pending".into(), None),
    ];
    assert_eq!(states, want);
    // A 0003 worker still running deletes pieces: refused, with the reason.
    let old_complete = c
        .execute(
            "DELETE FROM outbox_pieces WHERE lease_owner = 'old-running'",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        outbox_worker::db::error_text(&old_complete).contains("insert-only since schema 0004"),
        "{old_complete:?}"
    );

    let mut w = new_worker(&url, &[]);
    w.wait_ready().await.unwrap();
    wait_all_delivered(&c, &w).await;
    let metrics = w.scrape().await.unwrap();
    w.stop(Duration::from_secs(10)).await.unwrap();
    let engine = Engine::new();
    engine.refresh(&index).await;
    let docs = engine.all(&index).await;
    let mut got: Vec<&String> = docs.keys().collect();
    got.sort();
    // 1-3 were acked by the old worker before the upgrade (not in this engine: the cursor
    // is past them, so they are not taken again); 4-10 arrive once each.
    assert_eq!(got, ["d10", "d4", "d5", "d6", "d7", "d8", "d9"]);
    assert_eq!(
        prom::labelled(&metrics, "outbox_acked_total", "kind=\"indexed\""),
        7.0
    );
}

/// `outbox-worker migrate` on the schema of `url`, as a process.
fn migrate_process(url: &str) -> std::process::Output {
    harness::worker_command()
        .arg("migrate")
        .env("OUTBOX_DATABASE_URL", url)
        .output()
        .unwrap()
}

/// A migrate refused because the worker `old-running` holds a live lease: one line, naming it.
fn assert_refused_for_old_running(refused: &std::process::Output) {
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("live leases") && err.contains("old-running"),
        "{err}"
    );
}

/// A worker of this version on the upgraded schema of `url`, polling and reclaiming every
/// second, with `extra` settings.
fn new_worker(url: &str, extra: &[(&str, &str)]) -> outbox_harness::WorkerProcess {
    let env = vec![
        ("OUTBOX_DATABASE_URL".to_string(), url.to_string()),
        (
            "OUTBOX_ELASTICSEARCH_URL".to_string(),
            harness::engine_url(),
        ),
        ("OUTBOX_POLL_INTERVAL_SECONDS".to_string(), "1".to_string()),
        (
            "OUTBOX_RECLAIM_INTERVAL_SECONDS".to_string(),
            "1".to_string(),
        ),
    ];
    outbox_harness::WorkerProcess::spawn(&env, extra)
}

/// Wait (up to 30 s) until nothing of the outbox is undelivered but its failed events.
async fn wait_all_delivered(c: &tokio_postgres::Client, w: &outbox_harness::WorkerProcess) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = harness::undelivered(c).await;
        if left == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} events undelivered: {}",
            w.log_tail(30)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The first `n` migrations applied and recorded the way an older `migrate` did, in one
/// transaction; with `trigger`, its adaptive trigger too (an older version's functions are
/// not in this tree: its deployment is rebuilt from its tables).
async fn migrate_up_to(c: &mut tokio_postgres::Client, n: usize, trigger: bool) {
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(
        "CREATE TABLE outbox_schema_migrations (
             name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for (migration, sql) in &outbox_worker::migrate::MIGRATIONS[..n] {
        tx.batch_execute(sql).await.unwrap();
        tx.execute(
            "INSERT INTO outbox_schema_migrations (name) VALUES ($1)",
            &[migration],
        )
        .await
        .unwrap();
    }
    if trigger {
        tx.batch_execute(outbox_worker::migrate::TRIGGER_ADAPTIVE)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}
