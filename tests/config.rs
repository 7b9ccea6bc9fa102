//! Config: each kind of bad value stops start-up with one line naming the variable, the
//! value and what is allowed; precedence is defaults < file < environment; secrets never
//! appear in `config` output. Runs the real binary, so the real environment path is tested.

use outbox_harness as common;

fn run_config(env: &[(&str, &str)], file: Option<&str>) -> (i32, String, String) {
    let mut cmd = common::worker_command();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    cmd.arg("config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run outbox-worker config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(env: &[(&str, &str)], must_contain: &[&str]) {
    let (code, stdout, stderr) = run_config(env, None);
    assert_ne!(code, 0, "{env:?} should be refused; stdout: {stdout}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line for {env:?}, got: {stderr}"
    );
    for s in must_contain {
        assert!(
            stderr.contains(s),
            "error for {env:?} should mention {s:?}: {stderr}"
        );
    }
}

#[test]
fn bad_values_give_one_line_naming_variable_value_and_range() {
    assert_one_line_error(
        &[("OUTBOX_BULK_SIZE", "abc")],
        &["OUTBOX_BULK_SIZE", "\"abc\"", "1 to 10000"],
    );
    assert_one_line_error(
        &[("OUTBOX_CONCURRENCY", "0")],
        &["OUTBOX_CONCURRENCY", "\"0\"", "1 to 256"],
    );
    assert_one_line_error(
        &[("OUTBOX_CONCURRENCY", "-3")],
        &["OUTBOX_CONCURRENCY", "\"-3\""],
    );
    assert_one_line_error(
        &[("OUTBOX_BULK_SIZE", "99999999999999999999999")],
        &["OUTBOX_BULK_SIZE"],
    );
    assert_one_line_error(
        &[("OUTBOX_POLL_INTERVAL_SECONDS", "soon")],
        &["OUTBOX_POLL_INTERVAL_SECONDS", "seconds"],
    );
    assert_one_line_error(
        &[("OUTBOX_POLL_INTERVAL_SECONDS", "NaN")],
        &["OUTBOX_POLL_INTERVAL_SECONDS"],
    );
    assert_one_line_error(
        &[("OUTBOX_MAX_ATTEMPTS", "1.5")],
        &["OUTBOX_MAX_ATTEMPTS", "integer"],
    );
    assert_one_line_error(
        &[
            ("OUTBOX_LEASE_SECONDS", "10"),
            ("OUTBOX_REQUEST_TIMEOUT_SECONDS", "30"),
        ],
        &[
            "OUTBOX_LEASE_SECONDS",
            "\"10\"",
            "OUTBOX_REQUEST_TIMEOUT_SECONDS",
        ],
    );
    assert_one_line_error(
        &[
            ("OUTBOX_BASE_BACKOFF_SECONDS", "10"),
            ("OUTBOX_MAX_BACKOFF_SECONDS", "1"),
        ],
        &["OUTBOX_MAX_BACKOFF_SECONDS", "OUTBOX_BASE_BACKOFF_SECONDS"],
    );
    assert_one_line_error(
        &[("OUTBOX_ELASTICSEARCH_URL", "not a url")],
        &["OUTBOX_ELASTICSEARCH_URL", "URL"],
    );
    assert_one_line_error(
        &[("OUTBOX_ELASTICSEARCH_URL", "ftp://host")],
        &["OUTBOX_ELASTICSEARCH_URL", "http or https"],
    );
    assert_one_line_error(
        &[("OUTBOX_DATABASE_URL", "mysql://x")],
        &["OUTBOX_DATABASE_URL"],
    );
    assert_one_line_error(
        &[("OUTBOX_LOG_FORMAT", "xml")],
        &["OUTBOX_LOG_FORMAT", "text or json"],
    );
    assert_one_line_error(
        &[("OUTBOX_NOTIFY_MODE", "sometimes")],
        &["OUTBOX_NOTIFY_MODE", "adaptive, always or off"],
    );
    assert_one_line_error(
        &[("OUTBOX_METRICS_ADDR", "nowhere")],
        &["OUTBOX_METRICS_ADDR"],
    );
    assert_one_line_error(
        &[("OUTBOX_ELASTICSEARCH_CA_FILE", "/nonexistent/ca.pem")],
        &["OUTBOX_ELASTICSEARCH_CA_FILE", "readable file"],
    );
}

#[test]
fn a_missing_config_file_is_one_clear_line() {
    let (code, _, stderr) = run_config(&[], Some("/nonexistent/outbox.toml"));
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/outbox.toml"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1);
}

#[test]
fn precedence_is_defaults_then_file_then_environment() {
    let dir = std::env::temp_dir().join(common::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("outbox.toml");
    std::fs::write(
        &file,
        "bulk_size = 250\nconcurrency = 3\npoll_interval_seconds = 2.5\n",
    )
    .unwrap();

    let (code, stdout, stderr) = run_config(&[], None);
    assert_eq!(code, 0, "{stderr}");
    let defaults: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(defaults["bulk_size"], 500);
    assert_eq!(defaults["concurrency"], 4);

    let (code, stdout, stderr) = run_config(&[("OUTBOX_CONCURRENCY", "7")], file.to_str());
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["bulk_size"], 250, "file beats default");
    assert_eq!(v["concurrency"], 7, "environment beats file");
    assert_eq!(
        v["poll_interval"], 2.5,
        "file value kept where env is silent"
    );
    assert_eq!(v["lease"], 60.0, "default kept where both are silent");

    // A bad value in the file is reported like a bad variable.
    std::fs::write(&file, "bulk_size = 0\n").unwrap();
    let (code, _, stderr) = run_config(&[], file.to_str());
    assert_ne!(code, 0);
    assert!(
        stderr.contains("OUTBOX_BULK_SIZE") && stderr.contains("\"0\""),
        "{stderr}"
    );
}

#[test]
fn secrets_are_redacted_in_config_output() {
    let (code, stdout, stderr) = run_config(
        &[
            (
                "OUTBOX_DATABASE_URL",
                "postgres://app:db-s3cret@db.example:5432/outbox",
            ),
            ("OUTBOX_ELASTICSEARCH_USERNAME", "elastic"),
            ("OUTBOX_ELASTICSEARCH_PASSWORD", "es-s3cret"),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains("db-s3cret") && !stdout.contains("es-s3cret"),
        "{stdout}"
    );
    assert!(
        stdout.contains("postgres://app:<redacted>@db.example:5432/outbox"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"elasticsearch_password\": \"<redacted>\""),
        "{stdout}"
    );

    let (code, stdout, stderr) = run_config(
        &[
            ("OUTBOX_ELASTICSEARCH_API_KEY", "key-s3cret"),
            ("OUTBOX_CONCURRENCY", "x"),
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(!stderr.contains("key-s3cret") && !stdout.contains("key-s3cret"));
    // An unparsable database URL that may hold a password is not echoed back.
    let (_, _, stderr) = run_config(
        &[("OUTBOX_DATABASE_URL", "postgres://u:pw-s3cret@h:99999999/x")],
        None,
    );
    assert!(
        stderr.contains("OUTBOX_DATABASE_URL") && !stderr.contains("pw-s3cret"),
        "{stderr}"
    );
}
