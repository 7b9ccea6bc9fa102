//! Values as the operator gave them, before parsing: from the TOML file, the environment or
//! explicit pairs, every name checked against the settings table. Then one parser per kind
//! of setting; each fails with one line naming the variable, the value and what is allowed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use figment::{
    Figment,
    providers::{Format, Toml},
    value::{Dict, Num, Value},
};
use url::Url;

use super::{
    ConfigError, ENV_PREFIX, redact_url,
    settings::{Allowed, CONFIG_FILE_VARIABLE, DefaultValue, SETTINGS, Setting, setting},
    suggest,
};

/// The given text of each setting, by key; a later source overrides an earlier one.
#[derive(Default)]
pub struct Raw {
    given: HashMap<&'static str, String>,
}

impl Raw {
    /// The TOML file's values; a key that is no setting stops here.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let dict: Dict = Figment::from(Toml::file(path))
            .extract()
            .map_err(|e| ConfigError(format!("cannot read configuration: {e}")))?;
        let pairs = dict.iter().map(|(k, v)| (k.clone(), value_text(v)));
        self.add_keys(pairs, &format!(" in {}", path.display()))
    }

    /// Values by key (lower case, without the prefix); `place` says where they come from.
    pub fn add_keys(
        &mut self,
        pairs: impl IntoIterator<Item = (String, String)>,
        place: &str,
    ) -> Result<(), ConfigError> {
        let mut unknown = Vec::new();
        for (key, value) in pairs {
            match SETTINGS.iter().find(|s| s.key == key) {
                Some(s) => {
                    self.given.insert(s.key, value);
                }
                None => unknown.push(key),
            }
        }
        refuse_unknown("key", unknown, SETTINGS.iter().map(|s| s.key), place)
    }

    /// The `OUTBOX_*` variables among `vars` (the prefix in any case, as before); one that is
    /// neither a setting nor `OUTBOX_CONFIG` stops here. Others are not ours to judge.
    pub fn add_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut unknown = Vec::new();
        for (name, value) in vars {
            let upper = name.trim().to_ascii_uppercase();
            if !upper.starts_with(ENV_PREFIX) || upper == CONFIG_FILE_VARIABLE {
                continue;
            }
            match SETTINGS.iter().find(|s| s.env == upper) {
                Some(s) => {
                    self.given.insert(s.key, value);
                }
                None => unknown.push(name),
            }
        }
        let known = SETTINGS.iter().map(|s| s.env).chain([CONFIG_FILE_VARIABLE]);
        refuse_unknown("variable", unknown, known, "")
    }

    /// The text as given, else the default's; `None` for an unset or computed default.
    fn text_of(&self, s: &Setting) -> Option<&str> {
        match (self.given.get(s.key), &s.default) {
            (Some(v), _) => Some(v),
            (None, DefaultValue::Text(t)) => Some(t),
            (None, _) => None,
        }
    }

    /// The text of a setting that always has one (a default of its own).
    fn required(&self, s: &Setting) -> &str {
        self.text_of(s)
            .unwrap_or_else(|| panic!("{} needs a default in SETTINGS", s.key))
    }

    /// The value to name in an error about a relation.
    pub fn shown(&self, key: &str) -> &str {
        self.text_of(setting(key)).unwrap_or_default()
    }

    pub fn int(&self, key: &str) -> Result<u64, ConfigError> {
        let s = setting(key);
        let Allowed::Int { lo, hi } = s.allowed else {
            panic!("{key} is not an integer setting");
        };
        let v = self.required(s);
        match v.trim().parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(invalid(s, v)),
        }
    }

    pub fn seconds(&self, key: &str) -> Result<Duration, ConfigError> {
        let s = setting(key);
        let Allowed::Seconds { lo, hi } = s.allowed else {
            panic!("{key} is not a seconds setting");
        };
        let v = self.required(s);
        match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && lo <= n && n <= hi => Ok(Duration::from_secs_f64(n)),
            _ => Err(invalid(s, v)),
        }
    }

    /// A word setting, parsed by its type's `FromStr` (the parser the CLI uses too).
    pub fn word<T: FromStr>(&self, key: &str) -> Result<T, ConfigError> {
        let s = setting(key);
        assert!(matches!(s.allowed, Allowed::Word(_)), "{key}: not words");
        let v = self.required(s);
        v.parse().map_err(|_| invalid(s, v))
    }

    /// The PostgreSQL URL, trimmed, once tokio-postgres and the sslmode split accept it.
    pub fn postgres_url(&self, key: &str) -> Result<String, ConfigError> {
        let s = setting(key);
        assert!(
            matches!(s.allowed, Allowed::PostgresUrl),
            "{key}: not a URL"
        );
        let v = self.required(s).trim();
        // Never echo the password back.
        let refuse = |expected: &str| invalid_as(s, &redact_url(v), expected);
        if !Url::parse(v)
            .as_ref()
            .is_ok_and(|u| matches!(u.scheme(), "postgres" | "postgresql"))
        {
            return Err(refuse(&s.expected()));
        }
        let (without_sslmode, _) =
            crate::tls::split_sslmode(v).map_err(|e| refuse(&e.to_string()))?;
        without_sslmode
            .parse::<tokio_postgres::Config>()
            .map_err(|e| refuse(&format!("a valid PostgreSQL URL ({e})")))?;
        Ok(v.to_string())
    }

    /// One URL, or several separated by commas (the nodes of one cluster). An empty or
    /// malformed entry, or one given twice, is refused naming its place in the list.
    pub fn http_urls(&self, key: &str) -> Result<Vec<Url>, ConfigError> {
        let s = setting(key);
        assert!(matches!(s.allowed, Allowed::HttpUrls), "{key}: not URLs");
        let v = self.required(s);
        let entries: Vec<&str> = v.split(',').collect();
        if let [one] = entries.as_slice() {
            let url = parse_http_url(one)
                .ok_or_else(|| invalid_as(s, &redact_url(one), &s.expected()))?;
            return Ok(vec![url]);
        }
        let n = entries.len();
        let mut urls: Vec<Url> = Vec::with_capacity(n);
        for (i, entry) in entries.iter().enumerate() {
            let place = format!("invalid {} entry {} of {n}", s.env, i + 1);
            if entry.trim().is_empty() {
                return Err(ConfigError(format!(
                    "{place}: empty (expected {})",
                    s.expected()
                )));
            }
            let Some(url) = parse_http_url(entry) else {
                return Err(ConfigError(format!(
                    "{place} {:?}: expected a URL with scheme http or https",
                    redact_url(entry.trim())
                )));
            };
            if urls.contains(&url) {
                return Err(ConfigError(format!(
                    "{place} {:?}: given twice",
                    redact_url(entry.trim())
                )));
            }
            urls.push(url);
        }
        Ok(urls)
    }

    pub fn pem_file(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let s = setting(key);
        assert!(matches!(s.allowed, Allowed::PemFile), "{key}: not a file");
        let Some(v) = self.opt_text(key) else {
            return Ok(None);
        };
        let path = PathBuf::from(&v);
        if !path.is_file() {
            return Err(invalid(s, &v));
        }
        Ok(Some(path))
    }

    /// host:port; `off` or empty is none.
    pub fn addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        let s = setting(key);
        assert!(
            matches!(s.allowed, Allowed::AddrOrOff),
            "{key}: not an address"
        );
        match self.required(s).trim() {
            "" | "off" => Ok(None),
            v => v.parse().map(Some).map_err(|_| invalid(s, v)),
        }
    }

    /// Text that must not be blank.
    pub fn non_empty(&self, key: &str) -> Result<String, ConfigError> {
        let s = setting(key);
        assert!(matches!(s.allowed, Allowed::NonEmpty), "{key}: not a name");
        let v = self.required(s);
        if v.trim().is_empty() {
            return Err(invalid(s, v));
        }
        Ok(v.to_string())
    }

    /// Free text, as given or its default.
    pub fn text(&self, key: &str) -> String {
        self.text_of(setting(key)).unwrap_or_default().to_string()
    }

    /// Free text; blank is the same as unset.
    pub fn opt_text(&self, key: &str) -> Option<String> {
        self.text_of(setting(key))
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
    }
}

/// An http or https URL with a host, or None.
fn parse_http_url(v: &str) -> Option<Url> {
    let url = Url::parse(v.trim()).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()))
        .then_some(url)
}

/// `invalid OUTBOX_X="value": expected …`, the one shape of every value error.
pub fn invalid(s: &Setting, value: &str) -> ConfigError {
    invalid_as(s, value, &s.expected())
}

fn invalid_as(s: &Setting, shown: &str, expected: &str) -> ConfigError {
    ConfigError(format!("invalid {}={shown:?}: expected {expected}", s.env))
}

/// One line naming every unknown name and the valid name nearest to each.
fn refuse_unknown<'a>(
    what: &str,
    mut unknown: Vec<String>,
    known: impl Iterator<Item = &'a str>,
    place: &str,
) -> Result<(), ConfigError> {
    unknown.sort();
    let known: Vec<&str> = known.collect();
    let guess = |name: &str| suggest::nearest(name, known.iter().copied()).unwrap_or("?");
    match unknown.as_slice() {
        [] => Ok(()),
        [one] => Err(ConfigError(format!(
            "unknown {what} {one}{place}: did you mean {}?",
            guess(one)
        ))),
        many => {
            let each: Vec<String> = many
                .iter()
                .map(|n| format!("{n} (did you mean {}?)", guess(n)))
                .collect();
            Err(ConfigError(format!(
                "unknown {what}s {}{place}",
                each.join(", ")
            )))
        }
    }
}

/// A TOML value as the text a variable would give, so one parser serves both.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(_, s) => s.clone(),
        Value::Num(_, n) => num_text(n),
        Value::Bool(_, b) => b.to_string(),
        Value::Char(_, c) => c.to_string(),
        other => format!("{other:?}"),
    }
}

fn num_text(n: &Num) -> String {
    match *n {
        Num::U8(v) => v.to_string(),
        Num::U16(v) => v.to_string(),
        Num::U32(v) => v.to_string(),
        Num::U64(v) => v.to_string(),
        Num::U128(v) => v.to_string(),
        Num::USize(v) => v.to_string(),
        Num::I8(v) => v.to_string(),
        Num::I16(v) => v.to_string(),
        Num::I32(v) => v.to_string(),
        Num::I64(v) => v.to_string(),
        Num::I128(v) => v.to_string(),
        Num::ISize(v) => v.to_string(),
        Num::F32(v) => v.to_string(),
        Num::F64(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Raw, ConfigError> {
        let mut raw = Raw::default();
        raw.add_env(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        Ok(raw)
    }

    fn err(r: Result<Raw, ConfigError>) -> String {
        r.err().expect("refused").0
    }

    #[test]
    fn an_unknown_variable_names_the_nearest_setting() {
        assert_eq!(
            err(env(&[("OUTBOX_BULK_SIZ", "5")])),
            "unknown variable OUTBOX_BULK_SIZ: did you mean OUTBOX_BULK_SIZE?"
        );
        assert_eq!(
            err(env(&[("OUTBOX_CONFG", "/x.toml")])),
            "unknown variable OUTBOX_CONFG: did you mean OUTBOX_CONFIG?"
        );
    }

    #[test]
    fn several_unknown_variables_are_one_line() {
        assert_eq!(
            err(env(&[
                ("OUTBOX_LEASE_SECOND", "60"),
                ("OUTBOX_BLUK_SIZE", "5")
            ])),
            "unknown variables OUTBOX_BLUK_SIZE (did you mean OUTBOX_BULK_SIZE?), \
             OUTBOX_LEASE_SECOND (did you mean OUTBOX_LEASE_SECONDS?)"
        );
    }

    #[test]
    fn known_and_foreign_variables_pass() {
        let raw = env(&[
            ("OUTBOX_BULK_SIZE", "7"),
            ("outbox_concurrency", "3"),
            ("OUTBOX_CONFIG", "/etc/outbox.toml"),
            ("PATH", "/bin"),
            ("OUTBOXING", "x"),
        ])
        .unwrap();
        assert_eq!(raw.int("bulk_size").unwrap(), 7);
        assert_eq!(raw.int("concurrency").unwrap(), 3);
        assert_eq!(raw.int("max_attempts").unwrap(), 12, "the default");
    }

    #[test]
    fn an_unknown_key_names_the_place_and_the_nearest_key() {
        let mut raw = Raw::default();
        let e = raw
            .add_keys([("bulk_siz".to_string(), "5".to_string())], " in a.toml")
            .unwrap_err();
        assert_eq!(
            e.0,
            "unknown key bulk_siz in a.toml: did you mean bulk_size?"
        );
    }

    #[test]
    fn each_kind_refuses_with_variable_value_and_allowed() {
        let refused = |var: &str, value: &str, parse: fn(&Raw) -> Result<(), ConfigError>| {
            parse(&env(&[(var, value)]).unwrap()).unwrap_err().0
        };
        assert_eq!(
            refused("OUTBOX_BULK_SIZE", "0", |r| r.int("bulk_size").map(drop)),
            "invalid OUTBOX_BULK_SIZE=\"0\": expected an integer from 1 to 10000"
        );
        assert_eq!(
            refused("OUTBOX_LEASE_SECONDS", "inf", |r| r
                .seconds("lease_seconds")
                .map(drop)),
            "invalid OUTBOX_LEASE_SECONDS=\"inf\": expected a number of seconds from 1 to 86400"
        );
        assert_eq!(
            refused("OUTBOX_SINK", "disk", |r| r
                .word::<crate::config::Sink>("sink")
                .map(drop)),
            "invalid OUTBOX_SINK=\"disk\": expected elasticsearch or null"
        );
        assert_eq!(
            refused("OUTBOX_PROJECTION", " ", |r| r
                .non_empty("projection")
                .map(drop)),
            "invalid OUTBOX_PROJECTION=\" \": expected a non-empty name"
        );
        assert_eq!(
            refused("OUTBOX_ELASTICSEARCH_URL", "ftp://h", |r| r
                .http_urls("elasticsearch_url")
                .map(drop)),
            "invalid OUTBOX_ELASTICSEARCH_URL=\"ftp://h/\": expected a URL with scheme http or https, \
             or several separated by commas"
        );
        let db = refused("OUTBOX_DATABASE_URL", "mysql://u:s3cret@h/x", |r| {
            r.postgres_url("database_url").map(drop)
        });
        assert!(db.starts_with("invalid OUTBOX_DATABASE_URL="), "{db}");
        assert!(!db.contains("s3cret"), "{db}");
    }

    #[test]
    fn a_list_of_urls_names_the_entry_it_refuses() {
        let urls = |v: &str| {
            env(&[("OUTBOX_ELASTICSEARCH_URL", v)])
                .unwrap()
                .http_urls("elasticsearch_url")
        };
        let got = urls("http://a:9201, http://b:9202/").unwrap();
        let got: Vec<&str> = got.iter().map(Url::as_str).collect();
        assert_eq!(got, vec!["http://a:9201/", "http://b:9202/"]);
        assert_eq!(
            urls("http://a:9201,,http://b:9202").unwrap_err().0,
            "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 3: empty (expected a URL with scheme \
             http or https, or several separated by commas)"
        );
        assert_eq!(
            urls("http://a:9201,").unwrap_err().0,
            "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 2: empty (expected a URL with scheme \
             http or https, or several separated by commas)"
        );
        assert_eq!(
            urls("http://a:9201,b:9202").unwrap_err().0,
            "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 2 \"b:9202\": expected a URL with scheme http or https"
        );
        assert_eq!(
            urls("http://a:9201,http://a:9201/").unwrap_err().0,
            "invalid OUTBOX_ELASTICSEARCH_URL entry 2 of 2 \"http://a:9201/\": given twice"
        );
        let secret = urls("http://a:9201,ftp://u:s3cret@b").unwrap_err().0;
        assert!(!secret.contains("s3cret"), "{secret}");
    }

    #[test]
    fn off_or_empty_turns_the_metrics_address_off() {
        for v in ["off", "", " "] {
            let raw = env(&[("OUTBOX_METRICS_ADDR", v)]).unwrap();
            assert_eq!(raw.addr("metrics_addr").unwrap(), None, "{v:?}");
        }
        assert_eq!(
            Raw::default().addr("metrics_addr").unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
    }

    #[test]
    fn blank_optional_text_is_unset() {
        let raw = env(&[("OUTBOX_ELASTICSEARCH_USERNAME", "  ")]).unwrap();
        assert_eq!(raw.opt_text("elasticsearch_username"), None);
        assert_eq!(raw.opt_text("worker_id"), None, "computed: no text");
    }
}
