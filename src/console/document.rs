//! The document lookup (`/documents?index=..&doc_id=..[&projection=..]`): a document's
//! delete records and its events still in the outbox, each index event with whether a
//! record supersedes it and why, in words (docs/design.md §4, runbook §7.8).
//!
//! This file owns what the lookup asks for ([`parse`]), the verdict on one event (the
//! worker's own rule, `deletes::split_superseded`, restated on the page's rows: an index
//! event at or below the version of its projection's record is acked unsent), and the page.

use std::{fmt::Write, time::Duration};

use super::{
    filter::{BadInput, Fields, field},
    html::{age, esc, ts, url_component},
    queries::{DOCUMENT_EVENTS_CAP, DocEventRow, RecordRow},
};
use crate::{config::DeleteRecords, contract::Op, deletes::prune_interval};

/// The document looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocKey {
    pub index: String,
    pub doc_id: String,
    /// One projection's records and events; `None`: every projection's.
    pub projection: Option<String>,
}

impl DocKey {
    /// The page's own URL for this document (the links to it use the same).
    pub fn href(&self) -> String {
        let mut h = format!(
            "/documents?index={}&doc_id={}",
            url_component(&self.index),
            url_component(&self.doc_id)
        );
        if let Some(p) = &self.projection {
            let _ = write!(h, "&projection={}", url_component(p));
        }
        h
    }
}

/// The longest value a field may hold (the engine's `_id` is at most 512 bytes).
const MAX_CHARS: usize = 512;

fn text(f: &Fields, key: &'static str) -> Result<Option<String>, BadInput> {
    let bad = |why: &str| BadInput {
        field: key,
        why: why.into(),
    };
    match field(f, key) {
        None => Ok(None),
        Some(v) if v.chars().count() > MAX_CHARS => Err(bad("longer than 512 characters")),
        Some(v) if v.chars().any(char::is_control) => Err(bad("holds control characters")),
        Some(v) => Ok(Some(v.to_string())),
    }
}

/// The lookup the fields ask for: `Ok(None)` when they name nothing at all (the page shows
/// the empty form); index and doc_id are both required once anything is given.
pub fn parse(f: &Fields) -> Result<Option<DocKey>, BadInput> {
    let index = text(f, "index")?;
    let doc_id = text(f, "doc_id")?;
    let projection = text(f, "projection")?;
    let required = |field: &'static str| BadInput {
        field,
        why: "required: the lookup names a document by its index and doc_id".into(),
    };
    match (index, doc_id) {
        (None, None) if projection.is_none() => Ok(None),
        (None, _) => Err(required("index")),
        (_, None) => Err(required("doc_id")),
        (Some(index), Some(doc_id)) => Ok(Some(DocKey {
            index,
            doc_id,
            projection,
        })),
    }
}

/// What the worker does with one event of the document, given its projection's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An index event at or below the recorded version: acked unsent.
    Superseded { version: i64, deleted: i64 },
    /// An index event newer than the recorded delete: sent, the document comes back.
    Newer { version: i64, deleted: i64 },
    /// An index event of a document with no record in its projection: sent.
    NoRecord,
    /// A delete: always sent (the engine's external version settles an older one).
    Delete,
    /// Neither op: the worker fails it as invalid before any lookup.
    Invalid,
}

/// The worker's rule (`deletes::split_superseded`) on one event. Pure.
pub fn verdict(op: &str, version: i64, recorded: Option<i64>) -> Verdict {
    match (Op::parse(op), recorded) {
        (Some(Op::Delete), _) => Verdict::Delete,
        (Some(Op::Index), None) => Verdict::NoRecord,
        (Some(Op::Index), Some(deleted)) if version <= deleted => {
            Verdict::Superseded { version, deleted }
        }
        (Some(Op::Index), Some(deleted)) => Verdict::Newer { version, deleted },
        (None, _) => Verdict::Invalid,
    }
}

impl Verdict {
    /// A word for the table and the tests: superseded, sent, or invalid.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Superseded { .. } => "superseded",
            Verdict::Newer { .. } | Verdict::NoRecord | Verdict::Delete => "sent",
            Verdict::Invalid => "invalid",
        }
    }
}

/// Why, in words, for an event in `status` (pending, processing, failed) of `projection`.
pub fn explain(v: Verdict, status: &str, projection: &str) -> String {
    let sent = if status == "failed" {
        "if replayed, it is sent"
    } else {
        "it is sent"
    };
    match v {
        Verdict::Superseded { version, deleted } => {
            let when = match status {
                "failed" => "if replayed, the worker acks it as superseded, unsent (the replay's dry run names it too)",
                "processing" => "the worker that claimed it acks it as superseded, unsent (its claim looked the record up, unless the delete's ack came after that claim)",
                _ => "when a worker claims it, it is acked as superseded, unsent",
            };
            format!(
                "Superseded: its version {version} is at most the version deleted, {deleted}, recorded for projection {projection}. Sending it would bring the deleted document back once the engine has forgotten the delete's tombstone, so {when}, counted in outbox_acked_total{{kind=\"superseded_by_delete\"}}. The document stays deleted."
            )
        }
        Verdict::Newer { version, deleted } => format!(
            "Not superseded: its version {version} is newer than the version deleted, {deleted}: {sent} and the document is indexed again (created after the delete)."
        ),
        Verdict::NoRecord => format!(
            "Not superseded: no delete of this document is recorded for projection {projection} (never deleted, or the record was pruned after the retention): {sent}, and the engine's external version refuses it if the index holds this version or a newer one."
        ),
        Verdict::Delete => "A delete: never superseded by a record. It is sent (the engine's external version settles an older delete), and its ack writes the record, or raises it to this version.".into(),
        Verdict::Invalid => "Neither index nor delete: the worker fails it as invalid before it looks records up.".into(),
    }
}

/// When the record's prune comes, in words: `prunes_in_seconds` on the database's clock.
pub fn prune_words(prunes_in_seconds: f64, retention: Duration) -> String {
    let every = age(prune_interval(retention).as_secs_f64());
    if prunes_in_seconds > 0.0 {
        format!(
            "kept for {} more (OUTBOX_DELETE_RECORD_RETENTION_SECONDS={}; the prune runs every {every})",
            age(prunes_in_seconds),
            retention.as_secs()
        )
    } else {
        format!(
            "older than the retention (OUTBOX_DELETE_RECORD_RETENTION_SECONDS={}) by {}: the next prune (every {every}) removes it",
            retention.as_secs(),
            age(-prunes_in_seconds)
        )
    }
}

/// What the page is given.
pub struct Lookup<'a> {
    pub key: &'a DocKey,
    pub records: &'a [RecordRow],
    pub events: &'a [DocEventRow],
    pub retention: Duration,
    pub mode: DeleteRecords,
    /// The workers' superseded-by-delete acks and how many workers answered, when the
    /// console scrapes their /metrics.
    pub superseded_acks: Option<(f64, usize)>,
    pub metrics_configured: bool,
}

impl Lookup<'_> {
    /// Nothing known: no record and no event (the page answers 404).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.events.is_empty()
    }
}

/// The lookup form, filled with what the request gave (also on the overview, empty).
pub fn form(f: Option<&DocKey>) -> String {
    let v = |pick: fn(&DocKey) -> Option<&str>| esc(f.and_then(pick).unwrap_or(""));
    format!(
        r#"<form method="get" action="/documents" id="document-lookup">
<label>index <input name="index" value="{ix}"></label>
<label>doc_id <input name="doc_id" value="{id}"></label>
<label>projection <input name="projection" placeholder="every projection" value="{pr}"></label>
<button id="look-up">look up</button></form>"#,
        ix = v(|k| Some(&k.index)),
        id = v(|k| Some(&k.doc_id)),
        pr = v(|k| k.projection.as_deref()),
    )
}

/// The page: the records, then the events with their verdicts, then the counter.
pub fn page(l: &Lookup) -> String {
    let mut b = form(Some(l.key));
    let k = l.key;
    let _ = write!(
        b,
        r#"<p>Document <code id="doc-id">{}</code> in index <code>{}</code>{}.</p>"#,
        esc(&k.doc_id),
        esc(&k.index),
        k.projection
            .as_deref()
            .map(|p| format!(", projection <code>{}</code>", esc(p)))
            .unwrap_or_else(|| ", every projection".into()),
    );
    if l.mode == DeleteRecords::Off {
        b.push_str(r#"<p class="err" id="records-off">This console's configuration has OUTBOX_DELETE_RECORDS=off. Workers running with it off record no delete and supersede nothing: there, a late, older index event can bring a deleted document back (runbook §7.8).</p>"#);
    }
    if l.is_empty() {
        let _ = write!(
            b,
            r#"<p class="note" id="nothing-found">No delete record and no event of this document in the outbox. Either it was never deleted and all its events were delivered (acked), or its delete was recorded more than OUTBOX_DELETE_RECORD_RETENTION_SECONDS={} ago and pruned, or the index, doc_id or projection is not the one the producer wrote (they compare exactly).</p>"#,
            l.retention.as_secs()
        );
        return b;
    }

    b.push_str("<h2>Delete record</h2>");
    if l.records.is_empty() {
        let _ = write!(
            b,
            r#"<p class="note" id="no-record">No delete of this document is recorded: never deleted, a delete still pending, or a record older than the retention ({}) and pruned. Nothing is superseded by a record.</p>"#,
            age(l.retention.as_secs_f64())
        );
    } else {
        b.push_str(r#"<table id="delete-records"><tr><th>projection</th><th>version deleted</th><th>routing</th><th>deleted at (acked)</th><th>delete event</th><th>prune</th></tr>"#);
        for r in l.records {
            let _ = write!(
                b,
                r#"<tr data-projection="{p}"><td>{p}</td><td class="n" data-col="version">{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td data-col="prune">{}</td></tr>"#,
                r.doc_version,
                esc(r.routing.as_deref().unwrap_or("-")),
                ts(Some(r.deleted_at)),
                r.event_id,
                esc(&prune_words(r.prunes_in_seconds, l.retention)),
                p = esc(&r.projection),
            );
        }
        b.push_str(r#"</table><p class="note">One record per document and projection, at the highest version deleted, written in the transaction of the delete's ack. The delete event itself was acked, so it is no longer in the outbox. An index event of the same projection whose version is at most the recorded one is acked as superseded, unsent; after the prune, such an event would be sent again.</p>"#);
    }

    b.push_str("<h2>Events still in the outbox</h2>");
    if l.events.is_empty() {
        b.push_str(r#"<p class="note" id="no-events">None: every event of this document was delivered (acked), superseded ones included.</p>"#);
    } else {
        b.push_str(r#"<table id="document-events"><tr><th>id</th><th>projection</th><th>op</th><th>state</th><th>version</th><th>routing</th><th>attempts</th><th>created (failed)</th><th>verdict</th><th>why</th></tr>"#);
        for e in l.events.iter().take(DOCUMENT_EVENTS_CAP as usize) {
            let recorded = l
                .records
                .iter()
                .find(|r| r.projection == e.projection)
                .map(|r| r.doc_version);
            let v = verdict(&e.op, e.version, recorded);
            let status = match (&e.status[..], &e.error_reason) {
                ("failed", Some(r)) => format!("failed ({r})"),
                (s, _) => s.to_string(),
            };
            let version = if e.producer_version {
                e.version.to_string()
            } else {
                format!("{} (the id: no doc_version)", e.version)
            };
            let _ = write!(
                b,
                r#"<tr data-event="{id}" data-verdict="{w}"><td><a href="/events/{id}">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td>{}</td><td class="n">{}</td><td>{}</td><td class="verdict">{w}</td><td>{}</td></tr>"#,
                esc(&e.projection),
                esc(&e.op),
                esc(&status),
                esc(&version),
                esc(e.routing.as_deref().unwrap_or("-")),
                e.attempts,
                match e.failed_at {
                    Some(f) => format!("{} ({})", ts(Some(e.created_at)), ts(Some(f))),
                    None => ts(Some(e.created_at)),
                },
                esc(&explain(v, &e.status, &e.projection)),
                id = e.id,
                w = v.word(),
            );
        }
        b.push_str("</table>");
        if l.events.len() as i64 > DOCUMENT_EVENTS_CAP {
            let _ = write!(
                b,
                r#"<p class="note">The oldest {DOCUMENT_EVENTS_CAP} events are shown; there are more.</p>"#
            );
        }
        b.push_str(r#"<p class="note">Besides records, a claim that holds several events of one document sends only the newest version and acks the others as superseded (outbox_superseded_total).</p>"#);
    }

    b.push_str(r#"<h2>Superseded acks</h2>"#);
    match l.superseded_acks {
        Some((n, workers)) => {
            let _ = write!(
                b,
                r#"<p>The scraped workers ({workers}) have acked <b id="superseded-acks">{}</b> index events as superseded by a delete record since each started (outbox_acked_total{{kind="superseded_by_delete"}}; the counter counts every document, not this one alone).</p>"#,
                n.round()
            );
        }
        None if l.metrics_configured => b.push_str(r#"<p class="note" id="superseded-acks-none">No worker's /metrics has answered yet (the console samples them every 10 s).</p>"#),
        None => b.push_str(r#"<p class="note" id="superseded-acks-none">Set OUTBOX_CONSOLE_METRICS_URLS to the workers' /metrics URLs to see how many index events they acked as superseded by a delete record.</p>"#),
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::filter::fields;

    #[test]
    fn the_lookup_needs_an_index_and_a_doc_id() {
        assert_eq!(parse(&fields("")).unwrap(), None);
        assert_eq!(parse(&fields("index=&doc_id=+")).unwrap(), None);
        assert_eq!(
            parse(&fields("index=orders&doc_id=a%20b&projection=p")).unwrap(),
            Some(DocKey {
                index: "orders".into(),
                doc_id: "a b".into(),
                projection: Some("p".into()),
            })
        );
        for (q, field) in [
            ("doc_id=a", "index"),
            ("index=orders", "doc_id"),
            ("index=orders&doc_id=", "doc_id"),
            ("projection=p", "index"),
            ("index=o&doc_id=a%00b", "doc_id"),
            ("index=o&doc_id=a&projection=p%0Aq", "projection"),
        ] {
            assert_eq!(parse(&fields(q)).unwrap_err().field, field, "{q}");
        }
        let long = format!("index=o&doc_id={}", "x".repeat(513));
        assert_eq!(parse(&fields(&long)).unwrap_err().field, "doc_id");
    }

    #[test]
    fn the_href_round_trips() {
        let k = DocKey {
            index: "a&b".into(),
            doc_id: "é/1".into(),
            projection: None,
        };
        let q = k.href();
        assert_eq!(q, "/documents?index=a%26b&doc_id=%C3%A9%2F1");
        let back = parse(&fields(q.split_once('?').unwrap().1)).unwrap();
        assert_eq!(back, Some(k));
    }

    #[test]
    fn verdicts_follow_the_workers_rule() {
        assert_eq!(
            verdict("index", 2, Some(3)),
            Verdict::Superseded {
                version: 2,
                deleted: 3
            }
        );
        assert_eq!(verdict("index", 3, Some(3)).word(), "superseded");
        assert_eq!(
            verdict("index", 4, Some(3)),
            Verdict::Newer {
                version: 4,
                deleted: 3
            }
        );
        assert_eq!(verdict("index", 1, None), Verdict::NoRecord);
        assert_eq!(verdict("delete", 1, Some(3)), Verdict::Delete);
        assert_eq!(verdict("upsert", 1, Some(3)), Verdict::Invalid);
    }

    #[test]
    fn the_words_say_why_and_when() {
        let sup = verdict("index", 2, Some(3));
        let failed = explain(sup, "failed", "p");
        assert!(
            failed.contains("version 2 is at most the version deleted, 3"),
            "{failed}"
        );
        assert!(failed.contains("if replayed"), "{failed}");
        assert!(explain(sup, "pending", "p").contains("when a worker claims it"));
        assert!(explain(verdict("index", 4, Some(3)), "pending", "p").contains("newer"));
        assert!(explain(Verdict::NoRecord, "pending", "p").contains("no delete"));
        assert!(explain(Verdict::NoRecord, "failed", "p").contains("if replayed, it is sent"));
    }

    #[test]
    fn the_prune_is_said_in_time() {
        let week = Duration::from_secs(604_800);
        let kept = prune_words(3600.0 * 30.0, week);
        assert!(kept.starts_with("kept for 1 d 6 h more"), "{kept}");
        assert!(kept.contains("every 10 min 0 s"), "{kept}");
        let due = prune_words(-90.0, week);
        assert!(due.contains("by 1 min 30 s: the next prune"), "{due}");
    }
}
