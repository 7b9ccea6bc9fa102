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
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND NOT t.tgisinternal",
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
            .any(|s| s.contains("outbox_events_claim_idx"))
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
