//! Config: each kind of bad value stops start-up with one line naming the variable, the
//! value and what is allowed; precedence is defaults < file < environment; secrets never
//! appear in `config` output. Runs the real binary, so the real environment path is tested.

use outbox_harness as harness;

fn run_config(env: &[(&str, &str)], file: Option<&str>) -> (i32, String, String) {
    let mut cmd = harness::worker_command();
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
        &[("OUTBOX_ELASTICSEARCH_URL", "http://a:9201, ,http://c:9203")],
        &["OUTBOX_ELASTICSEARCH_URL entry 2 of 3: empty"],
    );
    assert_one_line_error(
        &[("OUTBOX_ELASTICSEARCH_URL", "http://a:9201,a:9202")],
        &[
            "OUTBOX_ELASTICSEARCH_URL entry 2 of 2 \"a:9202\"",
            "http or https",
        ],
    );
    assert_one_line_error(
        &[("OUTBOX_BULK_COMPRESSION", "brotli")],
        &["OUTBOX_BULK_COMPRESSION=\"brotli\"", "none or gzip"],
    );
    assert_one_line_error(
        &[("OUTBOX_ELASTICSEARCH_DISCOVERY", "yes")],
        &["OUTBOX_ELASTICSEARCH_DISCOVERY=\"yes\"", "off or nodes"],
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
    let dir = std::env::temp_dir().join(harness::unique("cfg"));
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
            ("OUTBOX_CONSOLE_TOKEN", "console-read-s3cret"),
            ("OUTBOX_CONSOLE_WRITE_TOKEN", "console-write-s3cret"),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains("db-s3cret")
            && !stdout.contains("es-s3cret")
            && !stdout.contains("console-read-s3cret")
            && !stdout.contains("console-write-s3cret"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"console_write_token\": \"<redacted>\""),
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

#[test]
fn an_unknown_variable_stops_start_up_naming_the_nearest_one() {
    assert_one_line_error(
        &[("OUTBOX_BULK_SIZ", "5")],
        &["unknown variable OUTBOX_BULK_SIZ: did you mean OUTBOX_BULK_SIZE?"],
    );
    let (code, _, _) = run_config(&[("OUTBOX_BULK_SIZ", "5")], None);
    assert_eq!(code, 2, "a configuration error");
    // The config file's path is a known variable, not a setting.
    let (code, _, stderr) = run_config(&[("OUTBOX_CONFIG", "/nonexistent/outbox.toml")], None);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/outbox.toml"), "{stderr}");
}

#[test]
fn an_unknown_key_in_the_file_stops_start_up_naming_the_nearest_one() {
    let dir = std::env::temp_dir().join(harness::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("outbox.toml");
    std::fs::write(&file, "bulk_size = 250\nconcurency = 3\n").unwrap();
    let (code, stdout, stderr) = run_config(&[], file.to_str());
    assert_eq!(code, 2, "{stdout}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "outbox-worker: unknown key concurency in {}: did you mean concurrency?",
            file.display()
        )
    );
}

#[test]
fn migrate_reads_its_notify_mode_with_the_settings_parser() {
    // Refused before any connection: the flag goes through NotifyMode's one parser.
    let out = harness::worker_command()
        .env_clear()
        .args(["migrate", "--notify-mode", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected adaptive, always or off"),
        "{stderr}"
    );
}

// ---------- the docs tables are the settings table ----------

/// The cells of a Markdown table row (`\|` stays inside a cell).
fn row_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push(chars.next().unwrap())
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    // Drop what lies outside the outer pipes.
    cells.remove(0);
    cells.pop();
    cells.iter().map(|c| c.trim().to_string()).collect()
}

/// The settings table as `config --markdown` prints it: the whole text, and by variable the
/// cells every docs table shows (default, unit, allowed).
fn settings_markdown() -> (String, Vec<(String, Vec<String>)>) {
    let out = harness::worker_command()
        .env_clear()
        .args(["config", "--markdown"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rows = text
        .lines()
        .skip(2)
        .map(|l| {
            let c = row_cells(l);
            (c[0].trim_matches('`').to_string(), c[1..4].to_vec())
        })
        .collect();
    (text, rows)
}

fn doc(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The text from the first line starting with `from` to the next starting with `to`.
fn section<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text
        .find(&format!("\n{from}"))
        .unwrap_or_else(|| panic!("no {from:?}"));
    let end = text[start + 1..]
        .find(&format!("\n{to}"))
        .map_or(text.len(), |e| start + 1 + e);
    &text[start..end]
}

#[test]
fn the_readme_table_is_config_markdown() {
    let (markdown, _) = settings_markdown();
    let readme = doc("README.md");
    let table: Vec<&str> = section(&readme, "## Configuration", "## ")
        .lines()
        .filter(|l| l.starts_with('|'))
        .collect();
    assert_eq!(
        table.join("\n"),
        markdown.trim_end(),
        "README's configuration table differs from `outbox-worker config --markdown`: paste its output"
    );
}

#[test]
fn the_runbook_tables_agree_with_the_settings_table() {
    let (_, settings) = settings_markdown();
    for path in ["docs/runbook.en.md", "docs/runbook.md"] {
        let runbook = doc(path);
        let mut seen = Vec::new();
        for line in section(&runbook, "## 5)", "### 5.3").lines() {
            let cells = row_cells(line);
            // Rows name their variable in backquotes; headers and rules do not.
            let Some(var) = cells.first().and_then(|c| {
                let start = c.find("`OUTBOX_")? + 1;
                Some(c[start..start + c[start..].find('`')?].to_string())
            }) else {
                continue;
            };
            if var == "OUTBOX_CONFIG" {
                continue; // the file's path: no setting
            }
            let (_, want) = settings
                .iter()
                .find(|(v, _)| *v == var)
                .unwrap_or_else(|| panic!("{path}: {var} is no setting"));
            assert_eq!(
                &cells[1..4],
                &want[..],
                "{path}: default, unit, allowed of {var} differ from `outbox-worker config --markdown`"
            );
            assert!(!seen.contains(&var), "{path}: {var} twice");
            seen.push(var);
        }
        for (var, _) in &settings {
            assert!(seen.contains(var), "{path} §5.1/§5.2 miss {var}");
        }
    }
}

// ---------- logs ----------

/// A worker whose stderr is a file writes no colour codes there (and `NO_COLOR` is unset).
#[tokio::test]
async fn logs_to_a_file_carry_no_escape_codes() {
    let s = harness::TestSchema::new("nocolour", outbox_worker::config::NotifyMode::Adaptive).await;
    let log = std::env::temp_dir().join(format!("{}.log", harness::unique("nocolour")));
    let mut child = harness::worker_command()
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(s.env())
        .env("OUTBOX_WORKER_ID", harness::unique("nocolour"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("worker started")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "worker exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no start line: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    harness::signal(child.id(), "TERM").unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(" INFO ") && text.contains("worker stopped"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in the log file: {text:?}"
    );
}
