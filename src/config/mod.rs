//! Configuration: defaults < optional TOML file < environment (`OUTBOX_*`).
//!
//! `settings.rs` is the table of every setting (default, unit, allowed values, doc);
//! `raw.rs` gathers the given text from each source and parses it, one parser per kind, so
//! that a bad value, an unknown variable or an unknown key stops start-up with one line;
//! `markdown.rs` renders the table for the docs.
//! This file holds the typed result, `Config`, and the rules between settings.

mod markdown;
mod raw;
mod settings;
mod suggest;

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use url::Url;

pub use markdown::markdown;
use raw::Raw;
use settings::{Order, RELATIONS, setting};

/// A config error: one line, naming the variable, the value and the allowed range.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "OUTBOX_";

/// A word that is not among a setting's words; says which are.
#[derive(Debug, thiserror::Error)]
#[error("expected {}", settings::one_of(.0))]
pub struct UnknownWord(pub &'static [&'static str]);

/// An enum whose values are words, each written once: the words (`WORDS`, for the settings
/// table), `as_str`, `FromStr` (any case; the one parser for config and CLI flags alike) and
/// `Serialize` as the word.
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $( $(#[$vmeta])* $variant, )+ }

        impl $name {
            /// Every word, in the order the docs list them.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $word, )+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s.trim().to_lowercase().as_str() {
                    $( $word => Ok($name::$variant), )+
                    _ => Err(UnknownWord(Self::WORDS)),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

words! {
    /// How the insert trigger wakes workers (chosen at migrate time, see triggers/).
    pub enum NotifyMode {
        /// NOTIFY only while some worker is waiting for work (the adaptive trigger).
        Adaptive = "adaptive",
        /// NOTIFY in every inserting transaction (the classic design; serialises commits).
        Always = "always",
        /// No trigger: poll only.
        Off = "off",
    }
}

words! {
    pub enum LogFormat {
        Text = "text",
        Json = "json",
    }
}

words! {
    /// Where events go.
    pub enum Sink {
        /// The search engine.
        Elasticsearch = "elasticsearch",
        /// Acked without sending: measures the database path, for benches only.
        Null = "null",
    }
}

words! {
    /// Whether the worker asks the engine for its other nodes.
    pub enum Discovery {
        /// Only the nodes of OUTBOX_ELASTICSEARCH_URL.
        Off = "off",
        /// Those, and the HTTP addresses `GET _nodes/http` lists.
        Nodes = "nodes",
    }
}

words! {
    /// How `_bulk` request bodies travel.
    pub enum Compression {
        None = "none",
        /// `Content-Encoding: gzip`.
        Gzip = "gzip",
    }
}

words! {
    /// Whether acked deletes are recorded and checked before index events are sent.
    pub enum DeleteRecords {
        /// A delete's ack writes its record; an index event at or below a recorded delete's
        /// version is acked as superseded, unsent.
        On = "on",
        /// Nothing recorded, nothing checked: a late, older index event can bring a deleted
        /// document back. For outboxes without deletes, and benches.
        Off = "off",
    }
}

/// A secret: never printed, never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The effective configuration. What each setting means to an operator is its row in
/// `settings::SETTINGS`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// PostgreSQL URL (`OUTBOX_DATABASE_URL`); the password is redacted in `config` output.
    pub database_url: Secret,
    /// CA file to verify PostgreSQL's certificate when the URL asks for `sslmode=verify-ca/verify-full`.
    pub database_ca_file: Option<PathBuf>,
    /// Search engine base URLs, one per node (`OUTBOX_ELASTICSEARCH_URL`, comma-separated).
    pub elasticsearch_urls: Vec<Url>,
    /// Also use the nodes `_nodes/http` lists.
    pub elasticsearch_discovery: Discovery,
    pub elasticsearch_username: Option<String>,
    pub elasticsearch_password: Option<Secret>,
    /// Elasticsearch API key (sent as `Authorization: ApiKey <key>`).
    pub elasticsearch_api_key: Option<Secret>,
    /// Extra CA certificate (PEM) trusted for the engine, besides the system roots.
    pub elasticsearch_ca_file: Option<PathBuf>,
    /// This worker's lease owner name. Default: hostname-pid.
    pub worker_id: String,
    /// Which outbox projection this worker drains.
    pub projection: String,
    /// Bulk requests in flight at once.
    pub concurrency: usize,
    /// Events per bulk request.
    pub bulk_size: usize,
    /// Byte cap of one bulk request body.
    pub bulk_max_bytes: usize,
    /// gzip or plain request bodies.
    pub bulk_compression: Compression,
    /// Ingest pipeline sent on every index action; None: the index's default.
    pub bulk_pipeline: Option<String>,
    /// Fallback poll interval (jittered), the guarantee behind NOTIFY.
    #[serde(serialize_with = "as_seconds")]
    pub poll_interval: Duration,
    /// Lease length of a claim.
    #[serde(serialize_with = "as_seconds")]
    pub lease: Duration,
    /// How often the reclaimer looks for stuck events.
    #[serde(serialize_with = "as_seconds")]
    pub reclaim_interval: Duration,
    /// A processing event older than this is stuck even if its lease is still valid.
    #[serde(serialize_with = "as_seconds")]
    pub max_processing: Duration,
    /// Attempts before an event becomes `failed` / `max_attempts_exceeded`.
    pub max_attempts: i32,
    #[serde(serialize_with = "as_seconds")]
    pub base_backoff: Duration,
    #[serde(serialize_with = "as_seconds")]
    pub max_backoff: Duration,
    /// Record acked deletes and check index events against them.
    pub delete_records: DeleteRecords,
    /// How long a delete record is kept.
    #[serde(serialize_with = "as_seconds")]
    pub delete_record_retention: Duration,
    /// Timeout of one bulk request.
    #[serde(serialize_with = "as_seconds")]
    pub request_timeout: Duration,
    /// How long in-flight bulks may run after SIGTERM.
    #[serde(serialize_with = "as_seconds")]
    pub shutdown_grace: Duration,
    /// Optional coalescing window for very high insert rates; 0 adds no latency.
    #[serde(serialize_with = "as_seconds")]
    pub debounce: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` when `off`.
    pub metrics_addr: Option<SocketAddr>,
    /// Where `outbox-worker console` listens; `None` when `off`.
    pub console_listen: Option<SocketAddr>,
    /// The console's read token (`OUTBOX_CONSOLE_TOKEN`).
    pub console_token: Option<Secret>,
    /// The console's write token (`OUTBOX_CONSOLE_WRITE_TOKEN`): replay.
    pub console_write_token: Option<Secret>,
    /// Workers' `/metrics` URLs the console samples for its chart.
    pub console_metrics_urls: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Trigger mode installed by `migrate`.
    pub notify_mode: NotifyMode,
    /// Where events go: `elasticsearch` (the engine), or `null` (acked without sending;
    /// for measuring the database path in benches only).
    pub sink: Sink,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Replace the password of a URL (if any) so it can be printed.
pub fn redact_url(s: &str) -> String {
    match Url::parse(s) {
        Ok(u) if u.password().is_some() => {
            // Rebuild by hand: the url crate would percent-encode the placeholder.
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let query = u.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!(
                "{}://{}:<redacted>@{host}{port}{}{query}",
                u.scheme(),
                u.username(),
                u.path()
            )
        }
        Ok(u) => u.to_string(),
        // Not a URL: never echo it back, it may hold a password.
        Err(_) if s.contains('@') => "<unparsable URL, redacted>".to_string(),
        Err(_) => s.to_string(),
    }
}

/// Whether `t` can be a console token: long enough to guess at no rate, and only characters
/// that travel unquoted in a cookie and an `Authorization: Bearer` header.
pub fn valid_console_token(t: &str) -> bool {
    t.len() >= 16
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b))
}

/// A console token: a secret, so a bad one is refused without echoing it.
fn console_token(raw: &Raw, key: &str) -> Result<Option<Secret>, ConfigError> {
    let Some(t) = raw.opt_text(key) else {
        return Ok(None);
    };
    if !valid_console_token(&t) {
        let s = setting(key);
        return Err(ConfigError(format!(
            "invalid {} (value not shown): expected {}",
            s.env,
            s.expected()
        )));
    }
    Ok(Some(Secret::new(t)))
}

fn console_metrics_urls(raw: &Raw) -> Result<Vec<String>, ConfigError> {
    let Some(v) = raw.opt_text("console_metrics_urls") else {
        return Ok(Vec::new());
    };
    let mut urls = Vec::new();
    for u in v.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        match Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {
                urls.push(u.to_string())
            }
            _ => {
                return Err(ConfigError(format!(
                    "invalid OUTBOX_CONSOLE_METRICS_URLS: {:?} is not an http URL (expected comma-separated http URLs, e.g. http://127.0.0.1:9464/metrics)",
                    redact_url(u)
                )));
            }
        }
    }
    Ok(urls)
}

impl Config {
    /// Load from the optional TOML file and the process environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let mut raw = Raw::default();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            raw.add_file(path)?;
        }
        raw.add_env(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))?;
        Self::from_raw(&raw)
    }

    /// Load from explicit key/value pairs (lower-case keys without the prefix); for tests.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        let mut raw = Raw::default();
        raw.add_keys(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
            "",
        )?;
        Self::from_raw(&raw)
    }

    /// Each field from its row of the settings table, then the rules between them.
    fn from_raw(raw: &Raw) -> Result<Config, ConfigError> {
        let cfg = Config {
            database_url: Secret::new(raw.postgres_url("database_url")?),
            database_ca_file: raw.pem_file("database_ca_file")?,
            elasticsearch_urls: raw.http_urls("elasticsearch_url")?,
            elasticsearch_discovery: raw.word("elasticsearch_discovery")?,
            elasticsearch_username: raw.opt_text("elasticsearch_username"),
            elasticsearch_password: raw.opt_text("elasticsearch_password").map(Secret::new),
            elasticsearch_api_key: raw.opt_text("elasticsearch_api_key").map(Secret::new),
            elasticsearch_ca_file: raw.pem_file("elasticsearch_ca_file")?,
            worker_id: raw.opt_text("worker_id").unwrap_or_else(default_worker_id),
            projection: raw.non_empty("projection")?,
            concurrency: raw.int("concurrency")? as usize,
            bulk_size: raw.int("bulk_size")? as usize,
            bulk_max_bytes: raw.int("bulk_max_bytes")? as usize,
            bulk_compression: raw.word("bulk_compression")?,
            bulk_pipeline: raw.opt_text("bulk_pipeline").map(|p| p.trim().to_string()),
            poll_interval: raw.seconds("poll_interval_seconds")?,
            lease: raw.seconds("lease_seconds")?,
            reclaim_interval: raw.seconds("reclaim_interval_seconds")?,
            max_processing: raw.seconds("max_processing_seconds")?,
            max_attempts: raw.int("max_attempts")? as i32,
            base_backoff: raw.seconds("base_backoff_seconds")?,
            max_backoff: raw.seconds("max_backoff_seconds")?,
            delete_records: raw.word("delete_records")?,
            delete_record_retention: raw.seconds("delete_record_retention_seconds")?,
            request_timeout: raw.seconds("request_timeout_seconds")?,
            shutdown_grace: raw.seconds("shutdown_grace_seconds")?,
            debounce: Duration::from_millis(raw.int("debounce_ms")?),
            metrics_addr: raw.addr("metrics_addr")?,
            console_listen: raw.addr("console_listen")?,
            console_token: console_token(raw, "console_token")?,
            console_write_token: console_token(raw, "console_write_token")?,
            console_metrics_urls: console_metrics_urls(raw)?,
            log_format: raw.word("log_format")?,
            log_level: raw.text("log_level"),
            notify_mode: raw.word("notify_mode")?,
            sink: raw.word("sink")?,
        };
        cfg.check_relations(raw)?;
        Ok(cfg)
    }

    /// The rules between settings; each error names both variables.
    fn check_relations(&self, raw: &Raw) -> Result<(), ConfigError> {
        if let Some(r) = RELATIONS.iter().find(|r| !r.holds(self)) {
            let must_be = match r.must_be {
                Order::Greater => "more than",
                Order::AtLeast => "at least",
            };
            let why = if r.why.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.why)
            };
            return Err(ConfigError(format!(
                "invalid {}={:?}: expected {must_be} {}={:?}{why}",
                setting(r.setting).env,
                raw.shown(r.setting),
                setting(r.than).env,
                raw.shown(r.than),
            )));
        }
        if self.elasticsearch_api_key.is_some() && self.elasticsearch_username.is_some() {
            let env = |key| setting(key).env;
            return Err(ConfigError(format!(
                "invalid {key}: set either {key} or {user}/{password}, not both",
                key = env("elasticsearch_api_key"),
                user = env("elasticsearch_username"),
                password = env("elasticsearch_password"),
            )));
        }
        Ok(())
    }

    /// The effective config as TOML-ish JSON with every secret redacted (for `config`).
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["database_url"] = serde_json::Value::String(redact_url(self.database_url.expose()));
        v["elasticsearch_urls"] = self
            .elasticsearch_urls
            .iter()
            .map(|u| serde_json::Value::String(redact_url(u.as_str())))
            .collect();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_in_any_case_and_name_the_rest() {
        assert_eq!("Always".parse::<NotifyMode>().unwrap(), NotifyMode::Always);
        assert_eq!(" off ".parse::<NotifyMode>().unwrap(), NotifyMode::Off);
        assert_eq!(
            "sometimes".parse::<NotifyMode>().unwrap_err().to_string(),
            "expected adaptive, always or off"
        );
        for w in NotifyMode::WORDS {
            assert_eq!(w.parse::<NotifyMode>().unwrap().as_str(), *w);
        }
        assert_eq!(serde_json::to_value(Sink::Null).unwrap(), "null");
    }

    #[test]
    fn relations_name_both_variables_and_the_values_given() {
        let e = Config::from_pairs([("lease_seconds", "20")]).unwrap_err();
        assert_eq!(
            e.0,
            "invalid OUTBOX_LEASE_SECONDS=\"20\": expected more than \
             OUTBOX_REQUEST_TIMEOUT_SECONDS=\"30\" (a lease must outlive the bulk request it covers)"
        );
        let e = Config::from_pairs([("base_backoff_seconds", "10"), ("max_backoff_seconds", "5")])
            .unwrap_err();
        assert_eq!(
            e.0,
            "invalid OUTBOX_MAX_BACKOFF_SECONDS=\"5\": expected at least OUTBOX_BASE_BACKOFF_SECONDS=\"10\""
        );
        let e = Config::from_pairs([
            ("elasticsearch_api_key", "k"),
            ("elasticsearch_username", "u"),
        ])
        .unwrap_err();
        assert!(
            e.0.starts_with("invalid OUTBOX_ELASTICSEARCH_API_KEY: set either"),
            "{e}"
        );
    }

    #[test]
    fn engine_urls_keep_their_order_and_hide_passwords_in_config_output() {
        let cfg = Config::from_pairs([(
            "elasticsearch_url",
            "http://es1:9200,https://u:s3cret@es2:9243/",
        )])
        .unwrap();
        let shown = cfg.redacted_json()["elasticsearch_urls"].clone();
        assert_eq!(
            shown,
            serde_json::json!(["http://es1:9200/", "https://u:<redacted>@es2:9243/"])
        );
    }

    #[test]
    fn from_pairs_refuses_an_unknown_key() {
        let e = Config::from_pairs([("concurency", "2")]).unwrap_err();
        assert_eq!(e.0, "unknown key concurency: did you mean concurrency?");
    }
}
