//! The settings table as Markdown: the cells every docs table shows (README, runbook §5) and
//! `outbox-worker config --markdown`.

use std::fmt::Write;

use super::settings::{
    Allowed, DefaultValue, KIB, MIB, Order, RELATIONS, SETTINGS, Setting, setting,
};

/// The sslmode values `tls.rs` accepts, as the docs list them.
const SSLMODES: &str = "disable/prefer/require/verify-ca/verify-full";

impl Setting {
    /// The row's cells as every docs table shows them: variable, default, unit, allowed.
    pub fn cells(&self) -> [String; 4] {
        let default = match self.default {
            DefaultValue::Text(t) => match self.allowed {
                Allowed::Int { .. } | Allowed::Seconds { .. } => with_size(t, self.unit),
                _ => format!("`{t}`"),
            },
            DefaultValue::Unset => "—".into(),
            DefaultValue::Computed(how) => how.into(),
        };
        let mut allowed = match self.allowed {
            Allowed::Int { lo, hi } if self.unit == "bytes" => {
                format!("{}–{}", size(lo), size(hi))
            }
            Allowed::Int { lo, hi } => format!("{lo}–{hi}"),
            Allowed::Seconds { lo, hi } => format!("{lo}–{hi}"),
            Allowed::Word(words) => words.join(", "),
            Allowed::PostgresUrl => format!("postgres URL; `sslmode={SSLMODES}`"),
            Allowed::HttpUrls => "http or https URL, or several, comma-separated".into(),
            Allowed::PemFile => "PEM file".into(),
            Allowed::AddrOrOff => "host:port or `off`".into(),
            Allowed::NonEmpty => "non-empty text".into(),
            Allowed::Text(what) => what.into(),
        };
        for r in RELATIONS {
            let (sign, other) = match r.must_be {
                Order::Greater if r.setting == self.key => (">", r.than),
                Order::AtLeast if r.setting == self.key => ("≥", r.than),
                Order::Greater if r.than == self.key => ("<", r.setting),
                Order::AtLeast if r.than == self.key => ("≤", r.setting),
                _ => continue,
            };
            write!(allowed, "; {sign} `{}`", setting(other).env).unwrap();
        }
        [
            format!("`{}`", self.env),
            default,
            self.unit.into(),
            allowed,
        ]
    }
}

/// "5242880 (5 MiB)" for a byte count, the number alone otherwise.
fn with_size(text: &str, unit: &str) -> String {
    match text.parse::<u64>() {
        Ok(n) if unit == "bytes" && n >= KIB => format!("{n} ({})", size(n)),
        _ => text.to_string(),
    }
}

/// A byte count in KiB or MiB when it is a whole number of them.
fn size(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        n.to_string()
    }
}

/// The settings as a Markdown table: `outbox-worker config --markdown`, and the README's.
pub fn markdown() -> String {
    let mut out =
        String::from("| variable | default | unit | allowed | meaning |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let [var, default, unit, allowed] = s.cells();
        writeln!(
            out,
            "| {var} | {default} | {unit} | {allowed} | {} |",
            s.doc
        )
        .unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_render_defaults_units_ranges_and_relations() {
        assert_eq!(
            setting("bulk_max_bytes").cells(),
            [
                "`OUTBOX_BULK_MAX_BYTES`",
                "5242880 (5 MiB)",
                "bytes",
                "1 KiB–100 MiB"
            ]
        );
        assert_eq!(
            setting("lease_seconds").cells(),
            [
                "`OUTBOX_LEASE_SECONDS`",
                "60",
                "s",
                "1–86400; > `OUTBOX_REQUEST_TIMEOUT_SECONDS`"
            ]
        );
        assert_eq!(
            setting("request_timeout_seconds").cells()[3],
            "0.1–3600; < `OUTBOX_LEASE_SECONDS`; ≤ `OUTBOX_MAX_PROCESSING_SECONDS`"
        );
        assert_eq!(
            setting("notify_mode").cells(),
            [
                "`OUTBOX_NOTIFY_MODE`",
                "`adaptive`",
                "",
                "adaptive, always, off"
            ]
        );
        assert_eq!(setting("database_ca_file").cells()[1], "—");
        assert_eq!(setting("worker_id").cells()[1], "hostname-pid");
    }

    #[test]
    fn markdown_has_a_row_per_setting() {
        let md = markdown();
        assert_eq!(md.lines().count(), 2 + SETTINGS.len());
        assert!(md.contains(
            "| `OUTBOX_BULK_SIZE` | 500 | events | 1–10000 | events per `_bulk` request, and rows per claim |"
        ));
    }
}
