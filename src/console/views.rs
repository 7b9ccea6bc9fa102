//! The pages, as HTML text. Every value from the database or the request is escaped with
//! [`esc`]; the pages carry no script at all (the Content-Security-Policy forbids it).

use std::fmt::Write;

use chrono::Utc;

use super::{
    auth::Scope,
    csrf::CSRF_FIELD,
    document::{self, DocKey},
    filter::{DEFAULT_LIMIT, Fields, MAX_LIMIT, field},
    html::{age, cut, esc, ts, url_component},
    queries::{EventAudit, EventRow, Overview},
    rates,
};
use crate::{
    contract::Op,
    replay::{AuditRow, DryRun},
};

/// What every page needs to know about the request.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub scope: Scope,
    pub csrf: String,
    /// The console has a write token at all.
    pub writable: bool,
    /// The request came with a login cookie (a logout button makes sense).
    pub logged_in: bool,
    /// The database the console reads, password redacted.
    pub database: String,
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#234;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none}header .right{margin-left:auto;display:flex;gap:8px;align-items:center}
main{padding:8px 16px}table{border-collapse:collapse;margin:6px 0 14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}.failed{color:#b00}.stuck{color:#b60}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:30em;white-space:pre-wrap;word-break:break-all}
.note{color:#666}.err{background:#fee;border:1px solid #c99;padding:8px}.ok{background:#efe;border:1px solid #9c9;padding:8px}
form.inline{display:inline}label{display:inline-block;margin:2px 10px 2px 0}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ccc;padding:8px 14px;min-width:110px}.card b{font-size:22px;display:block}";

/// The whole document around a page's body.
pub fn layout(ctx: &Ctx, title: &str, body: &str) -> String {
    let scope = match (ctx.scope, ctx.writable) {
        (Scope::Write, _) => "write access".to_string(),
        (Scope::Read, true) => "read-only (log in with the write token to replay)".to_string(),
        (Scope::Read, false) => "read-only console".to_string(),
    };
    let logout = if ctx.logged_in {
        format!(
            r#"<form class="inline" method="post" action="/logout"><input type="hidden" name="{CSRF_FIELD}" value="{}"><button>log out</button></form>"#,
            esc(&ctx.csrf)
        )
    } else if ctx.writable {
        r#"<a href="/login">log in</a>"#.to_string()
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t} · outbox console</title><style>{STYLE}</style></head>
<body><header><b>outbox console</b><a href="/">overview</a><a href="/failed">failed</a><a href="/replay">replay</a><a href="/audit">audit</a><a href="/documents">documents</a>
<span class="right"><span id="scope">{scope}</span>{logout}</span></header>
<main><h1>{t}</h1>{body}<p class="note">database: {db}</p></main></body></html>"#,
        t = esc(title),
        db = esc(&ctx.database),
    )
}

pub fn error_body(message: &str) -> String {
    format!(r#"<p class="err" id="error">{}</p>"#, esc(message))
}

pub fn login_body(csrf: &str, message: Option<&str>) -> String {
    let msg = message.map(error_body).unwrap_or_default();
    format!(
        r#"{msg}<form method="post" action="/login"><input type="hidden" name="{CSRF_FIELD}" value="{c}">
<label>token <input type="password" name="token" autocomplete="current-password" autofocus></label> <button id="login">log in</button></form>
<p class="note">The read token (OUTBOX_CONSOLE_TOKEN) shows the pages; the write token (OUTBOX_CONSOLE_WRITE_TOKEN) also replays.</p>"#,
        c = esc(csrf)
    )
}

fn count_of(o: &Overview, status: &str) -> i64 {
    o.stats
        .by_status
        .iter()
        .filter(|r| r.status == status)
        .map(|r| r.events)
        .sum()
}

pub fn overview(o: &Overview, chart: Option<&rates::Rates>) -> String {
    let mut b = String::new();
    let retry: i64 = o.stats.by_status.iter().map(|r| r.retry_scheduled).sum();
    let _ = write!(
        b,
        r#"<h2>States</h2><div class="cards">
<div class="card">pending<b id="count-pending">{}</b></div>
<div class="card">processing<b id="count-processing">{}</b></div>
<div class="card failed">failed<b id="count-failed">{}</b></div>
<div class="card stuck">stuck<b id="count-stuck">{}</b></div>
<div class="card">oldest pending<b id="oldest-pending">{}</b></div>
<div class="card">retry scheduled<b id="count-retry">{retry}</b></div></div>"#,
        count_of(o, "pending"),
        count_of(o, "processing"),
        count_of(o, "failed"),
        o.stats.stuck_total,
        o.stats
            .oldest_pending_age_seconds
            .map(age)
            .unwrap_or_else(|| "none".into()),
    );
    if !o.stats.stuck.is_empty() {
        b.push_str("<p>stuck by lease owner: ");
        for s in &o.stats.stuck {
            let _ = write!(
                b,
                "{} ({} since {}) ",
                esc(s.lease_owner.as_deref().unwrap_or("-")),
                s.events,
                ts(s.since)
            );
        }
        b.push_str("</p>");
    }

    // By projection and index: one row per pair, a column per state.
    b.push_str(r#"<h2>By projection and index</h2><table id="by-projection-index"><tr><th>projection</th><th>index</th><th>pending</th><th>processing</th><th>failed</th></tr>"#);
    let mut pairs: Vec<(&str, &str)> = o
        .by_projection_index
        .iter()
        .map(|r| (r.projection.as_str(), r.index_name.as_str()))
        .collect();
    pairs.dedup();
    if pairs.is_empty() {
        b.push_str(
            r#"<tr><td colspan="5" class="note">nothing pending, processing or failed</td></tr>"#,
        );
    }
    for (p, i) in pairs {
        let n = |status: &str| -> i64 {
            o.by_projection_index
                .iter()
                .filter(|r| r.projection == p && r.index_name == i && r.status == status)
                .map(|r| r.events)
                .sum()
        };
        let _ = write!(
            b,
            r#"<tr data-projection="{pe}" data-index="{ie}"><td>{pe}</td><td>{ie}</td><td class="n" data-status="pending">{}</td><td class="n" data-status="processing">{}</td><td class="n failed" data-status="failed">{}</td></tr>"#,
            n("pending"),
            n("processing"),
            n("failed"),
            pe = esc(p),
            ie = esc(i),
        );
    }
    b.push_str("</table>");

    b.push_str("<h2>Acks and failures, last hour</h2>");
    match chart {
        Some(r) => {
            b.push_str(&rates::chart_svg(&r.series(Utc::now())));
            let _ = write!(
                b,
                r#"<p class="note">From the workers' /metrics (OUTBOX_CONSOLE_METRICS_URLS), sampled every 10 s since the console started ({} samples).</p>"#,
                r.scrapes
            );
            for e in &r.errors {
                let _ = write!(b, r#"<p class="err">scrape: {}</p>"#, esc(e));
            }
        }
        None => b.push_str(r#"<p class="note" id="no-chart">No chart: set OUTBOX_CONSOLE_METRICS_URLS to the workers' /metrics URLs. The database records no time of ack (the log is insert-only), so acks per minute come from the workers' counters.</p>"#),
    }

    b.push_str("<h2>Look a document up</h2>");
    b.push_str(&document::form(None));
    b.push_str(r#"<p class="note">Its delete record (runbook §7.8) and its events still in the outbox, with whether the record supersedes each index event, and why.</p>"#);

    b.push_str(r#"<h2>Workers seen</h2><table id="workers"><tr><th>worker</th><th>leases</th><th>events held</th><th>first lease expires</th><th>waiting for NOTIFY</th><th>connections</th><th>last activity</th></tr>"#);
    if o.workers.is_empty() {
        b.push_str(r#"<tr><td colspan="7" class="note">no worker holds a lease, waits, or is connected</td></tr>"#);
    }
    for w in &o.workers {
        let waiting = if w.waiting {
            format!(
                "yes, since {} (heartbeat: valid until {})",
                ts(w.waiting_since),
                ts(w.waiting_until)
            )
        } else if w.waiting_until.is_some() {
            format!("no (last heartbeat expired {})", ts(w.waiting_until))
        } else {
            "no".into()
        };
        let _ = write!(
            b,
            r#"<tr data-worker="{id}"><td>{id}</td><td class="n" data-col="leases">{}</td><td class="n">{}</td><td>{}</td><td>{}</td><td class="n" data-col="connections">{}</td><td>{}</td></tr>"#,
            w.leases,
            w.events,
            ts(w.first_lease_expires_at),
            esc(&waiting),
            w.connections,
            ts(w.last_activity),
            id = esc(w.worker_id.as_deref().unwrap_or("-")),
        );
    }
    let _ = write!(
        b,
        r#"</table><p class="note">Trigger mode {}. Connections and last activity come from pg_stat_activity (application_name "outbox-worker pool|listen &lt;id&gt;").</p>"#,
        esc(&o.stats.notify_mode)
    );

    b.push_str(r#"<h2>Cleanup horizon</h2><table id="dead-tuples"><tr><th>table</th><th>dead tuples</th></tr>"#);
    for (t, n) in &o.dead_tuples {
        let _ = write!(b, r#"<tr><td>{}</td><td class="n">{n}</td></tr>"#, esc(t));
    }
    b.push_str(r#"</table><table id="xmin-holders"><tr><th>holding cleanup back</th><th>who</th><th>age (xids)</th><th>age</th></tr>"#);
    if o.holders.is_empty() {
        b.push_str(
            r#"<tr><td colspan="4" class="note">nothing holds a snapshot or an xid</td></tr>"#,
        );
    }
    for h in &o.holders {
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td>{}</td><td class="n">{}</td><td>{}</td></tr>"#,
            esc(&h.kind),
            esc(&h.who),
            h.xid_age
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            h.age_seconds.map(age).unwrap_or_else(|| "-".into()),
        );
    }
    b.push_str(r#"</table><p class="note">VACUUM removes no dead tuple younger than the oldest of these (runbook §7.5).</p>"#);
    b
}

pub fn failed(rows: &[crate::stats::FailedRow]) -> String {
    let mut b = String::new();
    let total: i64 = rows.iter().map(|r| r.events).sum();
    let _ = write!(
        b,
        r#"<p><b id="failed-total">{total}</b> failed events. Failed is terminal: only a replay moves them back to pending.</p>
<table id="failed-by-reason"><tr><th>error_reason</th><th>events</th><th>first seen</th><th>last seen</th><th>sample error</th><th>sample events</th><th></th></tr>"#
    );
    for r in rows {
        let reason = r.error_reason.as_deref().unwrap_or("-");
        let ids: Vec<String> = r
            .sample_ids
            .iter()
            .map(|id| format!(r#"<a href="/events/{id}">{id}</a>"#))
            .collect();
        let _ = write!(
            b,
            r#"<tr data-reason="{re}"><td>{re}</td><td class="n">{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td><a href="/replay?error_reason={}">replay…</a></td></tr>"#,
            r.events,
            ts(r.oldest_failed_at),
            ts(r.newest_failed_at),
            esc(&cut(r.sample_error.as_deref().unwrap_or(""), 300)),
            ids.join(" "),
            url_component(reason),
            re = esc(reason),
        );
    }
    b.push_str("</table>");
    b
}

pub fn event(e: &EventRow, audit: &[EventAudit]) -> String {
    let mut b = String::new();
    let row = |b: &mut String, k: &str, v: String| {
        let _ = write!(
            b,
            r#"<tr><th>{k}</th><td id="ev-{k}">{}</td></tr>"#,
            esc(&v)
        );
    };
    b.push_str(r#"<table id="event">"#);
    row(&mut b, "id", e.id.to_string());
    row(&mut b, "status", e.status.clone());
    row(&mut b, "projection", e.projection.clone());
    row(&mut b, "index_name", e.index_name.clone());
    row(&mut b, "doc_id", e.doc_id.clone());
    row(&mut b, "op", e.op.clone());
    row(
        &mut b,
        "doc_version",
        e.doc_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "- (the event id)".into()),
    );
    row(&mut b, "attempts", e.attempts.to_string());
    row(&mut b, "replay_count", e.replay_count.to_string());
    row(
        &mut b,
        "error_reason",
        e.error_reason.clone().unwrap_or_default(),
    );
    row(&mut b, "created_at", ts(Some(e.created_at)));
    row(&mut b, "failed_at", ts(e.failed_at));
    row(&mut b, "next_retry_at", ts(e.next_retry_at));
    row(
        &mut b,
        "lease_owner",
        e.lease_owner.clone().unwrap_or_default(),
    );
    row(&mut b, "lease_expires_at", ts(e.lease_expires_at));
    row(&mut b, "processing_started_at", ts(e.processing_started_at));
    b.push_str("</table>");
    if matches!(Op::parse(&e.op), Some(Op::Index | Op::Delete)) {
        let key = DocKey {
            index: e.index_name.clone(),
            doc_id: e.doc_id.clone(),
            projection: Some(e.projection.clone()),
        };
        let _ = write!(
            b,
            r#"<p><a id="ev-document" href="{}">this document: its delete record and its events</a> <span class="note">(whether a recorded delete supersedes this event, and why)</span></p>"#,
            esc(&key.href())
        );
    }
    if let Some(err) = &e.error {
        let _ = write!(b, r#"<h2>Error</h2><pre id="ev-error">{}</pre>"#, esc(err));
    }
    match (&e.payload_head, e.payload_bytes) {
        (Some(p), Some(n)) => {
            let note = if e.payload_cut == Some(true) {
                format!(
                    "{n} bytes; the first {} characters shown",
                    p.chars().count()
                )
            } else {
                format!("{n} bytes")
            };
            let _ = write!(
                b,
                r#"<h2>Payload <span class="note">({note})</span></h2><pre id="ev-payload">{}</pre>"#,
                esc(p)
            );
        }
        _ => b.push_str(r#"<h2>Payload</h2><p class="note">none (a delete)</p>"#),
    }
    b.push_str(r#"<h2>Replays of this event</h2><table id="ev-audit"><tr><th>audit</th><th>when</th><th>actor</th><th>reason</th><th>events in that replay</th></tr>"#);
    if audit.is_empty() {
        b.push_str(r#"<tr><td colspan="5" class="note">never replayed</td></tr>"#);
    }
    for a in audit {
        let _ = write!(
            b,
            r##"<tr><td><a href="/audit#a{id}">#{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td></tr>"##,
            ts(Some(a.replayed_at)),
            esc(&a.actor),
            esc(&a.reason),
            a.event_count,
            id = a.id,
        );
    }
    b.push_str("</table>");
    if e.status == "failed" {
        let _ = write!(
            b,
            r#"<p><a href="/replay?ids={}">replay this event…</a></p>"#,
            e.id
        );
    }
    b
}

/// The filter form, filled with what the request gave.
pub fn replay_form(f: &Fields, reasons: &[String]) -> String {
    let v = |k: &str| esc(field(f, k).unwrap_or(""));
    let mut options = String::new();
    for r in reasons {
        let _ = write!(options, r#"<option value="{}">"#, esc(r));
    }
    format!(
        r#"<form method="get" action="/replay" id="replay-filter">
<label>error_reason <input name="error_reason" list="reasons" value="{er}"></label><datalist id="reasons">{options}</datalist>
<label>index <input name="index" value="{ix}"></label>
<label>projection <input name="projection" value="{pr}"></label>
<label>failed since <input name="since" placeholder="2h or 2026-01-02T03:04:05Z" value="{si}"></label>
<label>failed before <input name="until" placeholder="30m or RFC 3339" value="{un}"></label>
<label>limit <input name="limit" type="number" min="1" max="{MAX_LIMIT}" value="{li}"></label>
<input type="hidden" name="ids" value="{ids}">
<button id="preview">dry run</button></form>
<p class="note">A dry run lists exactly what would move and changes nothing. Only failed events ever match.</p>"#,
        er = v("error_reason"),
        ix = v("index"),
        pr = v("projection"),
        si = v("since"),
        un = v("until"),
        ids = v("ids"),
        li = field(f, "limit")
            .map(esc)
            .unwrap_or_else(|| DEFAULT_LIMIT.to_string()),
    )
}

/// The dry run's list, and the confirm form when the request may write.
pub fn replay_preview(ctx: &Ctx, f: &Fields, d: &DryRun) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<h2>Dry run: <span id="dry-run-count">{}</span> failed events would move to pending</h2>"#,
        d.matched
    );
    if d.matched as i64 == d.filter.limit {
        let _ = write!(
            b,
            r#"<p class="note">The limit ({}) was reached: more may match. Replay these, then run the dry run again.</p>"#,
            d.filter.limit
        );
    }
    b.push_str(r#"<table id="dry-run"><tr><th>id</th><th>error_reason</th><th>index</th><th>doc_id</th><th>failed at</th></tr>"#);
    for e in &d.events {
        let _ = write!(
            b,
            r#"<tr><td><a href="/events/{id}">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(e.error_reason.as_deref().unwrap_or("-")),
            esc(&e.index_name),
            esc(&e.doc_id),
            ts(e.failed_at),
            id = e.id,
        );
    }
    b.push_str("</table>");
    if d.matched == 0 {
        return b;
    }
    if ctx.scope < Scope::Write {
        b.push_str(r#"<p class="note" id="read-only">Read-only: replaying needs the write token (OUTBOX_CONSOLE_WRITE_TOKEN); <a href="/login">log in</a> with it.</p>"#);
        return b;
    }
    let ids: Vec<String> = d.events.iter().map(|e| e.id.to_string()).collect();
    let hidden = |k: &str| {
        format!(
            r#"<input type="hidden" name="{k}" value="{}">"#,
            esc(field(f, k).unwrap_or(""))
        )
    };
    let _ = write!(
        b,
        r#"<h2>Confirm</h2><form method="post" action="/replay" id="replay-confirm">
<input type="hidden" name="{CSRF_FIELD}" value="{csrf}">{h1}{h2}{h3}{h4}{h5}{h6}
<input type="hidden" name="ids" value="{ids}"><input type="hidden" name="expected" value="{n}">
<label>reason (required, kept in the audit trail) <input name="reason" id="reason" size="50"></label>
<label>who <input name="actor" id="actor" placeholder="your name"></label>
<button id="confirm">Replay {n} events</button></form>
<p class="note">Exactly the {n} events listed move: the form carries their ids. The audit row is written in the same statement as the move.</p>"#,
        csrf = esc(&ctx.csrf),
        h1 = hidden("error_reason"),
        h2 = hidden("index"),
        h3 = hidden("projection"),
        h4 = hidden("since"),
        h5 = hidden("until"),
        h6 = hidden("limit"),
        ids = ids.join(","),
        n = d.matched,
    );
    b
}

pub fn audit(rows: &[AuditRow], replayed: Option<i64>) -> String {
    let mut b = String::new();
    if let Some(id) = replayed
        && let Some(r) = rows.iter().find(|r| r.id == id)
    {
        let _ = write!(
            b,
            r#"<p class="ok" id="replayed">Replayed {} events (audit #{}). They are pending again; a worker delivers them.</p>"#,
            r.event_count, r.id
        );
    }
    b.push_str(r#"<table id="audit"><tr><th>#</th><th>when</th><th>actor</th><th>reason</th><th>events</th><th>filter</th><th>event ids</th></tr>"#);
    if rows.is_empty() {
        b.push_str(r#"<tr><td colspan="7" class="note">no replays yet</td></tr>"#);
    }
    for r in rows {
        let ids: Vec<String> = r
            .event_ids
            .iter()
            .take(20)
            .map(|id| format!(r#"<a href="/events/{id}">{id}</a>"#))
            .collect();
        let more = if r.event_ids.len() > 20 { " …" } else { "" };
        let _ = write!(
            b,
            r#"<tr id="a{id}" data-audit="{id}"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td><code>{}</code></td><td>{}{more}</td></tr>"#,
            ts(Some(r.replayed_at)),
            esc(&r.actor),
            esc(&r.reason),
            r.event_count,
            esc(&cut(&r.filter.to_string(), 300)),
            ids.join(" "),
            id = r.id,
        );
    }
    b.push_str("</table>");
    b
}
