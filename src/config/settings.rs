//! The settings table: one row per setting, the one place that holds its name, environment
//! variable, default, unit, allowed values and one line of doc. The parser (`raw.rs`), the
//! relations between settings, `outbox-worker config --markdown` (`markdown.rs`), the
//! README's configuration table and the runbook's §5 tables all come from it
//! (tests/config.rs compares the docs).

use std::time::Duration;

use super::{Compression, Config, DeleteRecords, Discovery, LogFormat, NotifyMode, Sink};

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// Key in the TOML file and in `Config::from_pairs`.
    pub key: &'static str,
    /// Environment variable: `OUTBOX_` and the key in upper case.
    pub env: &'static str,
    pub default: DefaultValue,
    /// Unit of a number (`s`, `ms`, `bytes`, ...); empty for text.
    pub unit: &'static str,
    pub allowed: Allowed,
    /// One line for the operator.
    pub doc: &'static str,
}

#[derive(Debug)]
pub enum DefaultValue {
    /// This text, parsed like a value the operator gives.
    Text(&'static str),
    /// Nothing: the setting's feature is off until it is set.
    Unset,
    /// Computed at start-up, as the text says.
    Computed(&'static str),
}

/// What a setting accepts; each kind has one parser in `raw.rs`.
#[derive(Debug)]
pub enum Allowed {
    /// An integer from `lo` to `hi`.
    Int { lo: u64, hi: u64 },
    /// A number of seconds from `lo` to `hi`.
    Seconds { lo: f64, hi: f64 },
    /// One of these words, in any case.
    Word(&'static [&'static str]),
    /// A PostgreSQL URL, with libpq's `sslmode` if any.
    PostgresUrl,
    /// One or more http or https URLs with a host, separated by commas.
    HttpUrls,
    /// The path of a readable PEM file.
    PemFile,
    /// host:port, or `off` (or empty) for none.
    AddrOrOff,
    /// Text that must not be blank.
    NonEmpty,
    /// Any text; the words say what is meant.
    Text(&'static str),
}

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "database_url",
        env: "OUTBOX_DATABASE_URL",
        default: DefaultValue::Text("postgres://postgres@127.0.0.1:5432/outbox"),
        unit: "",
        allowed: Allowed::PostgresUrl,
        doc: "the outbox's PostgreSQL; the password is redacted in `config` output and errors",
    },
    Setting {
        key: "database_ca_file",
        env: "OUTBOX_DATABASE_CA_FILE",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::PemFile,
        doc: "CA for `sslmode=verify-ca` / `verify-full`; unset: the system roots",
    },
    Setting {
        key: "elasticsearch_url",
        env: "OUTBOX_ELASTICSEARCH_URL",
        default: DefaultValue::Text("http://127.0.0.1:9200"),
        unit: "",
        allowed: Allowed::HttpUrls,
        doc: "the search engine's base URL, or several nodes of one cluster separated by commas (credentials and TLS shared); requests go round robin to the nodes that are up",
    },
    Setting {
        key: "elasticsearch_discovery",
        env: "OUTBOX_ELASTICSEARCH_DISCOVERY",
        default: DefaultValue::Text("off"),
        unit: "",
        allowed: Allowed::Word(Discovery::WORDS),
        doc: "`nodes`: also send to the nodes `_nodes/http` lists (asked at start-up and every minute); the engine must publish addresses the worker can reach",
    },
    Setting {
        key: "elasticsearch_username",
        env: "OUTBOX_ELASTICSEARCH_USERNAME",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::Text("any text"),
        doc: "basic auth user (not with the API key)",
    },
    Setting {
        key: "elasticsearch_password",
        env: "OUTBOX_ELASTICSEARCH_PASSWORD",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::Text("any text"),
        doc: "basic auth password; redacted in `config` output",
    },
    Setting {
        key: "elasticsearch_api_key",
        env: "OUTBOX_ELASTICSEARCH_API_KEY",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::Text("any text"),
        doc: "sent as `Authorization: ApiKey …` (not with basic auth); redacted in `config` output",
    },
    Setting {
        key: "elasticsearch_ca_file",
        env: "OUTBOX_ELASTICSEARCH_CA_FILE",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::PemFile,
        doc: "extra CA trusted for the engine, besides the system roots",
    },
    Setting {
        key: "concurrency",
        env: "OUTBOX_CONCURRENCY",
        default: DefaultValue::Text("4"),
        unit: "requests",
        allowed: Allowed::Int { lo: 1, hi: 256 },
        doc: "`_bulk` requests in flight at once",
    },
    Setting {
        key: "bulk_size",
        env: "OUTBOX_BULK_SIZE",
        default: DefaultValue::Text("500"),
        unit: "events",
        allowed: Allowed::Int { lo: 1, hi: 10_000 },
        doc: "events per `_bulk` request, and rows per claim",
    },
    Setting {
        key: "bulk_max_bytes",
        env: "OUTBOX_BULK_MAX_BYTES",
        default: DefaultValue::Text("5242880"),
        unit: "bytes",
        allowed: Allowed::Int {
            lo: KIB,
            hi: 100 * MIB,
        },
        doc: "byte cap of one `_bulk` request body",
    },
    Setting {
        key: "bulk_compression",
        env: "OUTBOX_BULK_COMPRESSION",
        default: DefaultValue::Text("gzip"),
        unit: "",
        allowed: Allowed::Word(Compression::WORDS),
        doc: "`gzip`: request bodies sent gzip-compressed (`Content-Encoding: gzip`), 12x fewer bytes at no measurable cost in drain rate (bench); `none`: plain, for a proxy that must read or size them",
    },
    Setting {
        key: "bulk_pipeline",
        env: "OUTBOX_BULK_PIPELINE",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::Text("an ingest pipeline's id"),
        doc: "ingest pipeline sent on every index action (`pipeline`); unset: the index's default pipeline, if any",
    },
    Setting {
        key: "poll_interval_seconds",
        env: "OUTBOX_POLL_INTERVAL_SECONDS",
        default: DefaultValue::Text("5"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 0.01,
            hi: 3600.0,
        },
        doc: "fallback poll (±20 % jitter), the guarantee behind NOTIFY",
    },
    Setting {
        key: "lease_seconds",
        env: "OUTBOX_LEASE_SECONDS",
        default: DefaultValue::Text("60"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 1.0,
            hi: 86_400.0,
        },
        doc: "lease of a claim",
    },
    Setting {
        key: "reclaim_interval_seconds",
        env: "OUTBOX_RECLAIM_INTERVAL_SECONDS",
        default: DefaultValue::Text("10"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 0.1,
            hi: 3600.0,
        },
        doc: "how often the reclaimer looks for stuck events",
    },
    Setting {
        key: "max_processing_seconds",
        env: "OUTBOX_MAX_PROCESSING_SECONDS",
        default: DefaultValue::Text("300"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 1.0,
            hi: 86_400.0,
        },
        doc: "processing longer than this is stuck, even with a valid lease",
    },
    Setting {
        key: "max_attempts",
        env: "OUTBOX_MAX_ATTEMPTS",
        default: DefaultValue::Text("12"),
        unit: "attempts",
        allowed: Allowed::Int { lo: 1, hi: 1000 },
        doc: "then `failed` / `max_attempts_exceeded`",
    },
    Setting {
        key: "base_backoff_seconds",
        env: "OUTBOX_BASE_BACKOFF_SECONDS",
        default: DefaultValue::Text("1"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 0.001,
            hi: 3600.0,
        },
        doc: "ceiling of the first retry delay",
    },
    Setting {
        key: "max_backoff_seconds",
        env: "OUTBOX_MAX_BACKOFF_SECONDS",
        default: DefaultValue::Text("300"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 0.001,
            hi: 86_400.0,
        },
        doc: "cap of the retry delay (full jitter below it)",
    },
    Setting {
        key: "delete_records",
        env: "OUTBOX_DELETE_RECORDS",
        default: DefaultValue::Text("on"),
        unit: "",
        allowed: Allowed::Word(DeleteRecords::WORDS),
        doc: "`on`: acked deletes are recorded and older index events acked as superseded, unsent; `off` only for an outbox without deletes, or benches",
    },
    Setting {
        key: "delete_record_retention_seconds",
        env: "OUTBOX_DELETE_RECORD_RETENTION_SECONDS",
        default: DefaultValue::Text("604800"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 60.0,
            hi: 31_536_000.0,
        },
        doc: "how long a delete record is kept: longer than the latest an older index event may still arrive (backoff, lease, a replay of failed events)",
    },
    Setting {
        key: "request_timeout_seconds",
        env: "OUTBOX_REQUEST_TIMEOUT_SECONDS",
        default: DefaultValue::Text("30"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 0.1,
            hi: 3600.0,
        },
        doc: "timeout of one `_bulk` request",
    },
    Setting {
        key: "shutdown_grace_seconds",
        env: "OUTBOX_SHUTDOWN_GRACE_SECONDS",
        default: DefaultValue::Text("20"),
        unit: "s",
        allowed: Allowed::Seconds {
            lo: 0.0,
            hi: 3600.0,
        },
        doc: "in-flight bulks may finish within this after SIGTERM",
    },
    Setting {
        key: "debounce_ms",
        env: "OUTBOX_DEBOUNCE_MS",
        default: DefaultValue::Text("0"),
        unit: "ms",
        allowed: Allowed::Int { lo: 0, hi: 10_000 },
        doc: "optional wait after a notification, and before re-claiming what trickled in: larger claims, less load on busy producers, that much more latency",
    },
    Setting {
        key: "metrics_addr",
        env: "OUTBOX_METRICS_ADDR",
        default: DefaultValue::Text("127.0.0.1:9464"),
        unit: "",
        allowed: Allowed::AddrOrOff,
        doc: "where `/metrics`, `/healthz` and `/readyz` are served",
    },
    Setting {
        key: "console_listen",
        env: "OUTBOX_CONSOLE_LISTEN",
        default: DefaultValue::Text("127.0.0.1:9465"),
        unit: "",
        allowed: Allowed::AddrOrOff,
        doc: "where `outbox-worker console` serves its pages; outside loopback it needs OUTBOX_CONSOLE_TOKEN",
    },
    Setting {
        key: "console_token",
        env: "OUTBOX_CONSOLE_TOKEN",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::Text("16+ characters of A-Z a-z 0-9 . _ ~ + / = -"),
        doc: "the console's read token; unset: pages open on loopback only; redacted in `config` output",
    },
    Setting {
        key: "console_write_token",
        env: "OUTBOX_CONSOLE_WRITE_TOKEN",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::Text("16+ characters of A-Z a-z 0-9 . _ ~ + / = -"),
        doc: "the console's write token (replay); unset: the console is read-only; redacted in `config` output",
    },
    Setting {
        key: "console_metrics_urls",
        env: "OUTBOX_CONSOLE_METRICS_URLS",
        default: DefaultValue::Unset,
        unit: "",
        allowed: Allowed::Text("comma-separated http URLs"),
        doc: "workers' `/metrics` the console samples for its ack and failure chart; unset: no chart",
    },
    Setting {
        key: "worker_id",
        env: "OUTBOX_WORKER_ID",
        default: DefaultValue::Computed("hostname-pid"),
        unit: "",
        allowed: Allowed::Text("any text"),
        doc: "lease owner name; unique per running process",
    },
    Setting {
        key: "projection",
        env: "OUTBOX_PROJECTION",
        default: DefaultValue::Text("search_index_to_elastic"),
        unit: "",
        allowed: Allowed::NonEmpty,
        doc: "which outbox projection this worker drains",
    },
    Setting {
        key: "notify_mode",
        env: "OUTBOX_NOTIFY_MODE",
        default: DefaultValue::Text("adaptive"),
        unit: "",
        allowed: Allowed::Word(NotifyMode::WORDS),
        doc: "trigger installed by `migrate`, and the worker's side of it",
    },
    Setting {
        key: "log_format",
        env: "OUTBOX_LOG_FORMAT",
        default: DefaultValue::Text("text"),
        unit: "",
        allowed: Allowed::Word(LogFormat::WORDS),
        doc: "`json` for log pipelines; text has colours only on a terminal",
    },
    Setting {
        key: "log_level",
        env: "OUTBOX_LOG_LEVEL",
        default: DefaultValue::Text("info"),
        unit: "",
        allowed: Allowed::Text("tracing filter"),
        doc: "e.g. `info,outbox_worker=debug`",
    },
    Setting {
        key: "sink",
        env: "OUTBOX_SINK",
        default: DefaultValue::Text("elasticsearch"),
        unit: "",
        allowed: Allowed::Word(Sink::WORDS),
        doc: "`null` acks without sending: for benches only",
    },
];

/// The row of `key`. Every key the code asks for has a row; a missing one is a bug that the
/// tests below meet first.
pub fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting {key:?} in SETTINGS"))
}

/// How one duration setting must stand to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Greater,
    AtLeast,
}

/// A rule between two settings, checked once each is valid on its own.
pub struct Relation {
    pub setting: &'static str,
    pub must_be: Order,
    pub than: &'static str,
    /// Why, for the error; empty when it goes without saying.
    pub why: &'static str,
    /// (setting, than) as parsed.
    pub values: fn(&Config) -> (Duration, Duration),
}

pub const RELATIONS: &[Relation] = &[
    Relation {
        setting: "lease_seconds",
        must_be: Order::Greater,
        than: "request_timeout_seconds",
        why: "a lease must outlive the bulk request it covers",
        values: |c| (c.lease, c.request_timeout),
    },
    Relation {
        setting: "max_backoff_seconds",
        must_be: Order::AtLeast,
        than: "base_backoff_seconds",
        why: "",
        values: |c| (c.max_backoff, c.base_backoff),
    },
    Relation {
        setting: "delete_record_retention_seconds",
        must_be: Order::AtLeast,
        than: "max_backoff_seconds",
        why: "a record must outlive the longest retry delay of an older index event",
        values: |c| (c.delete_record_retention, c.max_backoff),
    },
    Relation {
        setting: "max_processing_seconds",
        must_be: Order::AtLeast,
        than: "request_timeout_seconds",
        why: "",
        values: |c| (c.max_processing, c.request_timeout),
    },
];

impl Relation {
    pub fn holds(&self, cfg: &Config) -> bool {
        let (a, b) = (self.values)(cfg);
        match self.must_be {
            Order::Greater => a > b,
            Order::AtLeast => a >= b,
        }
    }
}

/// "a, b or c": the words of a `Word` setting as an error names them.
pub fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

impl Setting {
    /// What an error says is allowed ("expected {this}").
    pub fn expected(&self) -> String {
        match self.allowed {
            Allowed::Int { lo, hi } => format!("an integer from {lo} to {hi}"),
            Allowed::Seconds { lo, hi } => format!("a number of seconds from {lo} to {hi}"),
            Allowed::Word(words) => one_of(words),
            Allowed::PostgresUrl => "a URL like postgres://user:password@host:5432/dbname".into(),
            Allowed::HttpUrls => {
                "a URL with scheme http or https, or several separated by commas".into()
            }
            Allowed::PemFile => "a readable file".into(),
            Allowed::AddrOrOff => "host:port, e.g. 0.0.0.0:9464, or off".into(),
            Allowed::NonEmpty => "a non-empty name".into(),
            Allowed::Text(what) => what.into(),
        }
    }
}

/// Read by clap in main.rs: the TOML file's path, not a setting.
pub const CONFIG_FILE_VARIABLE: &str = "OUTBOX_CONFIG";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ENV_PREFIX;

    #[test]
    fn each_variable_is_the_prefix_and_the_key_in_upper_case() {
        for s in SETTINGS {
            assert_eq!(s.env, format!("{ENV_PREFIX}{}", s.key.to_uppercase()));
        }
    }

    #[test]
    fn keys_are_unique_and_relations_name_settings() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[..i].iter().all(|t| t.key != s.key),
                "{} twice",
                s.key
            );
        }
        for r in RELATIONS {
            assert!(matches!(
                setting(r.setting).allowed,
                Allowed::Seconds { .. }
            ));
            assert!(matches!(setting(r.than).allowed, Allowed::Seconds { .. }));
        }
    }

    #[test]
    fn numeric_defaults_lie_in_their_range_and_seconds_are_in_s() {
        for s in SETTINGS {
            let DefaultValue::Text(t) = s.default else {
                continue;
            };
            match s.allowed {
                Allowed::Int { lo, hi } => {
                    let n: u64 = t.parse().unwrap();
                    assert!((lo..=hi).contains(&n), "{}", s.key);
                }
                Allowed::Seconds { lo, hi } => {
                    let n: f64 = t.parse().unwrap();
                    assert!(lo <= n && n <= hi, "{}", s.key);
                    assert_eq!(s.unit, "s", "{}", s.key);
                }
                _ => assert_eq!(s.unit, "", "{} is text: no unit", s.key),
            }
        }
    }

    #[test]
    fn the_defaults_make_a_valid_config() {
        let cfg = Config::from_pairs([]).expect("defaults are valid");
        assert_eq!(cfg.bulk_size, 500);
        assert_eq!(cfg.bulk_max_bytes, 5 * 1024 * 1024);
        assert_eq!(cfg.debounce, Duration::ZERO);
        assert_eq!(cfg.notify_mode, NotifyMode::Adaptive);
        assert_eq!(cfg.bulk_compression, Compression::Gzip);
    }

    #[test]
    fn one_of_reads_like_a_sentence() {
        assert_eq!(one_of(&["text", "json"]), "text or json");
        assert_eq!(
            one_of(&["adaptive", "always", "off"]),
            "adaptive, always or off"
        );
        assert_eq!(one_of(&["only"]), "only");
    }
}
