//! Configuration: defaults < optional TOML file < environment (`OUTBOX_*`).
//!
//! Every value is read as a raw figment value and parsed here, so that a bad value stops
//! start-up with one line naming the variable, the value given and what is allowed.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
    value::{Dict, Value},
};
use url::Url;

/// A config error: one line, naming the variable, the value and the allowed range.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How the insert trigger wakes workers (chosen at migrate time, see triggers/).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyMode {
    /// NOTIFY only while some worker is waiting for work (DESIGN.md §4).
    Adaptive,
    /// NOTIFY in every inserting transaction (the classic design; serialises commits).
    Always,
    /// No trigger: poll only.
    Off,
}

impl NotifyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyMode::Adaptive => "adaptive",
            NotifyMode::Always => "always",
            NotifyMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
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

/// The effective configuration. Field docs are the operator documentation (README, runbook §5).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// PostgreSQL URL (`OUTBOX_DATABASE_URL`); the password is redacted in `config` output.
    pub database_url: Secret,
    /// CA file to verify PostgreSQL's certificate when the URL asks for `sslmode=verify-ca/verify-full`.
    pub database_ca_file: Option<PathBuf>,
    /// Search engine base URL (`OUTBOX_ELASTICSEARCH_URL`).
    pub elasticsearch_url: Url,
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
    /// Timeout of one bulk request.
    #[serde(serialize_with = "as_seconds")]
    pub request_timeout: Duration,
    /// How long in-flight bulks may run after SIGTERM.
    #[serde(serialize_with = "as_seconds")]
    pub shutdown_grace: Duration,
    /// Optional coalescing window for very high insert rates; 0 adds no latency.
    #[serde(serialize_with = "as_seconds")]
    pub debounce: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; empty string disables.
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Trigger mode installed by `migrate`.
    pub notify_mode: NotifyMode,
    /// Where events go: `elasticsearch` (the engine), or `null` (acked without sending;
    /// for measuring the database path in benches only).
    pub sink: Sink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    Elasticsearch,
    Null,
}

/// Bounds of every numeric setting, shared by the parser, README and runbook.
pub mod limits {
    pub const CONCURRENCY: (u64, u64) = (1, 256);
    pub const BULK_SIZE: (u64, u64) = (1, 10_000);
    pub const BULK_MAX_BYTES: (u64, u64) = (1024, 100 * 1024 * 1024);
    pub const POLL_INTERVAL_SECONDS: (f64, f64) = (0.01, 3600.0);
    pub const LEASE_SECONDS: (f64, f64) = (1.0, 86_400.0);
    pub const RECLAIM_INTERVAL_SECONDS: (f64, f64) = (0.1, 3600.0);
    pub const MAX_PROCESSING_SECONDS: (f64, f64) = (1.0, 86_400.0);
    pub const MAX_ATTEMPTS: (u64, u64) = (1, 1000);
    pub const BASE_BACKOFF_SECONDS: (f64, f64) = (0.001, 3600.0);
    pub const MAX_BACKOFF_SECONDS: (f64, f64) = (0.001, 86_400.0);
    pub const REQUEST_TIMEOUT_SECONDS: (f64, f64) = (0.1, 3600.0);
    pub const SHUTDOWN_GRACE_SECONDS: (f64, f64) = (0.0, 3600.0);
    pub const DEBOUNCE_MS: (u64, u64) = (0, 10_000);
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "OUTBOX_";

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Raw values by key, each remembering where it came from for error messages.
struct Raw {
    dict: Dict,
}

impl Raw {
    fn var(key: &str) -> String {
        format!("{ENV_PREFIX}{}", key.to_uppercase())
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.dict.get(key)? {
            Value::String(_, s) => Some(s.clone()),
            Value::Num(_, n) => Some(num_text(n)),
            Value::Bool(_, b) => Some(b.to_string()),
            Value::Char(_, c) => Some(c.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    fn err(key: &str, value: &str, allowed: &str) -> ConfigError {
        ConfigError(format!(
            "invalid {}={value:?}: expected {allowed}",
            Self::var(key)
        ))
    }

    fn string(&self, key: &str, default: &str) -> String {
        self.text(key).unwrap_or_else(|| default.to_string())
    }

    fn opt_string(&self, key: &str) -> Option<String> {
        self.text(key).filter(|s| !s.trim().is_empty())
    }

    fn int(&self, key: &str, default: u64, (lo, hi): (u64, u64)) -> Result<u64, ConfigError> {
        let Some(v) = self.text(key) else {
            return Ok(default);
        };
        let allowed = format!("an integer from {lo} to {hi}");
        let n: u64 = v.trim().parse().map_err(|_| Self::err(key, &v, &allowed))?;
        if n < lo || n > hi {
            return Err(Self::err(key, &v, &allowed));
        }
        Ok(n)
    }

    fn seconds(
        &self,
        key: &str,
        default: f64,
        (lo, hi): (f64, f64),
    ) -> Result<Duration, ConfigError> {
        let Some(v) = self.text(key) else {
            return Ok(Duration::from_secs_f64(default));
        };
        let allowed = format!("a number of seconds from {lo} to {hi}");
        let n: f64 = v.trim().parse().map_err(|_| Self::err(key, &v, &allowed))?;
        if !n.is_finite() || n < lo || n > hi {
            return Err(Self::err(key, &v, &allowed));
        }
        Ok(Duration::from_secs_f64(n))
    }

    fn url(&self, key: &str, default: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
        let v = self.string(key, default);
        let allowed = format!("a URL with scheme {}", schemes.join(" or "));
        let url = Url::parse(v.trim()).map_err(|_| Self::err(key, &redact_url(&v), &allowed))?;
        if !schemes.contains(&url.scheme()) || url.host_str().is_none_or(str::is_empty) {
            return Err(Self::err(key, &redact_url(&v), &allowed));
        }
        Ok(url)
    }

    fn file(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(v) = self.opt_string(key) else {
            return Ok(None);
        };
        let p = PathBuf::from(&v);
        if !p.is_file() {
            return Err(Self::err(key, &v, "a readable file"));
        }
        Ok(Some(p))
    }
}

fn num_text(n: &figment::value::Num) -> String {
    use figment::value::Num::*;
    match *n {
        U8(v) => v.to_string(),
        U16(v) => v.to_string(),
        U32(v) => v.to_string(),
        U64(v) => v.to_string(),
        U128(v) => v.to_string(),
        USize(v) => v.to_string(),
        I8(v) => v.to_string(),
        I16(v) => v.to_string(),
        I32(v) => v.to_string(),
        I64(v) => v.to_string(),
        I128(v) => v.to_string(),
        ISize(v) => v.to_string(),
        F32(v) => v.to_string(),
        F64(v) => v.to_string(),
    }
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

impl Config {
    /// Load from the optional TOML file and the process environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Values stay strings: the parser below owns every conversion and its error text.
        fig = fig.merge(Env::prefixed(ENV_PREFIX).lowercase(true).map(|k| k.into()));
        Self::from_figment(fig)
    }

    /// Load from explicit key/value pairs (lower-case keys without the prefix); for tests.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        let mut dict = Dict::new();
        for (k, v) in pairs {
            dict.insert(k.to_string(), Value::from(v.to_string()));
        }
        Self::from_figment(Figment::from(figment::providers::Serialized::defaults(
            dict,
        )))
    }

    fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        let dict: Dict = fig
            .extract()
            .map_err(|e| ConfigError(format!("cannot read configuration: {e}")))?;
        let raw = Raw { dict };

        let database_url = raw.string("database_url", "postgres://postgres@127.0.0.1:5432/outbox");
        let parsed_db = Url::parse(database_url.trim()).ok();
        if !parsed_db
            .as_ref()
            .is_some_and(|u| matches!(u.scheme(), "postgres" | "postgresql"))
        {
            return Err(Raw::err(
                "database_url",
                &redact_url(&database_url),
                "a URL like postgres://user:password@host:5432/dbname",
            ));
        }
        let (without_sslmode, _) = crate::tls::split_sslmode(database_url.trim())
            .map_err(|e| Raw::err("database_url", &redact_url(&database_url), &e.to_string()))?;
        without_sslmode
            .parse::<tokio_postgres::Config>()
            .map_err(|e| {
                Raw::err(
                    "database_url",
                    &redact_url(&database_url),
                    &format!("a valid PostgreSQL URL ({e})"),
                )
            })?;

        let log_format = match raw.string("log_format", "text").to_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(Raw::err("log_format", other, "text or json")),
        };
        let notify_mode = match raw
            .string("notify_mode", "adaptive")
            .to_lowercase()
            .as_str()
        {
            "adaptive" => NotifyMode::Adaptive,
            "always" => NotifyMode::Always,
            "off" => NotifyMode::Off,
            other => return Err(Raw::err("notify_mode", other, "adaptive, always or off")),
        };
        let sink = match raw.string("sink", "elasticsearch").to_lowercase().as_str() {
            "elasticsearch" => Sink::Elasticsearch,
            "null" => Sink::Null,
            other => return Err(Raw::err("sink", other, "elasticsearch or null")),
        };
        let metrics_addr = match raw.string("metrics_addr", "127.0.0.1:9464").trim() {
            "" | "off" => None,
            v => Some(v.parse().map_err(|_| {
                Raw::err("metrics_addr", v, "host:port, e.g. 0.0.0.0:9464, or off")
            })?),
        };

        let cfg = Config {
            database_url: Secret::new(database_url.trim()),
            database_ca_file: raw.file("database_ca_file")?,
            elasticsearch_url: raw.url(
                "elasticsearch_url",
                "http://127.0.0.1:9200",
                &["http", "https"],
            )?,
            elasticsearch_username: raw.opt_string("elasticsearch_username"),
            elasticsearch_password: raw.opt_string("elasticsearch_password").map(Secret::new),
            elasticsearch_api_key: raw.opt_string("elasticsearch_api_key").map(Secret::new),
            elasticsearch_ca_file: raw.file("elasticsearch_ca_file")?,
            worker_id: raw
                .opt_string("worker_id")
                .unwrap_or_else(default_worker_id),
            projection: raw.string("projection", "search_index_to_elastic"),
            concurrency: raw.int("concurrency", 4, limits::CONCURRENCY)? as usize,
            bulk_size: raw.int("bulk_size", 500, limits::BULK_SIZE)? as usize,
            bulk_max_bytes: raw.int("bulk_max_bytes", 5 * 1024 * 1024, limits::BULK_MAX_BYTES)?
                as usize,
            poll_interval: raw.seconds(
                "poll_interval_seconds",
                5.0,
                limits::POLL_INTERVAL_SECONDS,
            )?,
            lease: raw.seconds("lease_seconds", 60.0, limits::LEASE_SECONDS)?,
            reclaim_interval: raw.seconds(
                "reclaim_interval_seconds",
                10.0,
                limits::RECLAIM_INTERVAL_SECONDS,
            )?,
            max_processing: raw.seconds(
                "max_processing_seconds",
                300.0,
                limits::MAX_PROCESSING_SECONDS,
            )?,
            max_attempts: raw.int("max_attempts", 12, limits::MAX_ATTEMPTS)? as i32,
            base_backoff: raw.seconds("base_backoff_seconds", 1.0, limits::BASE_BACKOFF_SECONDS)?,
            max_backoff: raw.seconds("max_backoff_seconds", 300.0, limits::MAX_BACKOFF_SECONDS)?,
            request_timeout: raw.seconds(
                "request_timeout_seconds",
                30.0,
                limits::REQUEST_TIMEOUT_SECONDS,
            )?,
            shutdown_grace: raw.seconds(
                "shutdown_grace_seconds",
                20.0,
                limits::SHUTDOWN_GRACE_SECONDS,
            )?,
            debounce: Duration::from_millis(raw.int("debounce_ms", 0, limits::DEBOUNCE_MS)?),
            metrics_addr,
            log_format,
            log_level: raw.string("log_level", "info"),
            notify_mode,
            sink,
        };
        cfg.check_relations(&raw)?;
        Ok(cfg)
    }

    /// Checks between settings: each names both variables.
    fn check_relations(&self, raw: &Raw) -> Result<(), ConfigError> {
        if self.lease <= self.request_timeout {
            return Err(ConfigError(format!(
                "invalid {}={:?}: expected more than {}={:?} (a lease must outlive the bulk request it covers)",
                Raw::var("lease_seconds"),
                raw.string("lease_seconds", "60"),
                Raw::var("request_timeout_seconds"),
                raw.string("request_timeout_seconds", "30"),
            )));
        }
        if self.max_backoff < self.base_backoff {
            return Err(ConfigError(format!(
                "invalid {}={:?}: expected at least {}={:?}",
                Raw::var("max_backoff_seconds"),
                raw.string("max_backoff_seconds", "300"),
                Raw::var("base_backoff_seconds"),
                raw.string("base_backoff_seconds", "1"),
            )));
        }
        if self.max_processing < self.request_timeout {
            return Err(ConfigError(format!(
                "invalid {}={:?}: expected at least {}={:?}",
                Raw::var("max_processing_seconds"),
                raw.string("max_processing_seconds", "300"),
                Raw::var("request_timeout_seconds"),
                raw.string("request_timeout_seconds", "30"),
            )));
        }
        if self.elasticsearch_api_key.is_some() && self.elasticsearch_username.is_some() {
            return Err(ConfigError(format!(
                "invalid {}: set either {} or {}/{}, not both",
                Raw::var("elasticsearch_api_key"),
                Raw::var("elasticsearch_api_key"),
                Raw::var("elasticsearch_username"),
                Raw::var("elasticsearch_password"),
            )));
        }
        if self.projection.trim().is_empty() {
            return Err(Raw::err(
                "projection",
                &self.projection,
                "a non-empty projection name",
            ));
        }
        Ok(())
    }

    /// The effective config as TOML-ish JSON with every secret redacted (for `config`).
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["database_url"] = serde_json::Value::String(redact_url(self.database_url.expose()));
        v
    }
}
