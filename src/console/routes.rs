//! The handlers. Each page: who is asking (401 without a valid token when one is needed),
//! what it asks (400 naming the bad field), what the database says (404 for an unknown
//! event, 503 when the database does not answer), then the HTML. Every POST is checked for
//! CSRF first (403), and replay for the write scope (403).

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{
    Console,
    auth::{Access, Scope, TOKEN_COOKIE, cookie, host_is_loopback},
    csrf::{self, CSRF_COOKIE, CSRF_FIELD},
    document,
    filter::{self, Fields, field},
    queries, views,
    views::Ctx,
};
use crate::{replay, sql, stats::FailedRow};

pub(super) fn router(c: Console) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/failed", get(failed))
        .route("/events/{id}", get(event))
        .route("/replay", get(replay_page).post(replay_execute))
        .route("/audit", get(audit))
        .route("/documents", get(documents))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .with_state(c)
}

/// A refusal or a failure, rendered as a page with its status.
struct Refusal(StatusCode, String);

impl Console {
    /// Who is asking: their scope and this browser's CSRF token (a new one if it has none).
    fn ctx(&self, headers: &HeaderMap) -> Result<(Ctx, bool), Box<Response>> {
        let a = &self.inner.access;
        let presented = Access::presented(headers);
        let existing = cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 32);
        let fresh = existing.is_none();
        let csrf = existing.unwrap_or_else(csrf::new_token);
        if !a.needs_login() {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !host_is_loopback(host) {
                let mut r = (
                    StatusCode::FORBIDDEN,
                    format!(
                        "this console has no OUTBOX_CONSOLE_TOKEN, so it answers on loopback names only (127.0.0.1, [::1], localhost), not {host:?}\n"
                    ),
                )
                    .into_response();
                secure(r.headers_mut());
                return Err(Box::new(r));
            }
        }
        let Some(scope) = a.scope(presented.as_deref()) else {
            let ctx = Ctx {
                scope: Scope::Read,
                csrf: csrf.clone(),
                writable: a.writable(),
                logged_in: false,
                database: "(log in to see)".into(),
            };
            let why = if presented.is_some() {
                "the token is not accepted: log in again"
            } else {
                "this console needs a token: log in"
            };
            return Err(Box::new(page(
                &ctx,
                fresh,
                StatusCode::UNAUTHORIZED,
                "Log in",
                &views::login_body(&csrf, Some(why)),
            )));
        };
        Ok((
            Ctx {
                scope,
                csrf,
                writable: a.writable(),
                logged_in: cookie(headers, TOKEN_COOKIE).is_some(),
                database: self.inner.database.clone(),
            },
            fresh,
        ))
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, Refusal> {
        self.inner.pool.get().await.map_err(|e| {
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the database is unreachable: {}",
                    crate::error_chain::error_chain(&e)
                ),
            )
        })
    }
}

fn db_error(e: tokio_postgres::Error) -> Refusal {
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the database answered: {}", crate::db::error_text(&e)),
    )
}

/// A page: security headers on every one, and the CSRF cookie when the browser had none.
fn page(ctx: &Ctx, fresh_csrf: bool, status: StatusCode, title: &str, body: &str) -> Response {
    let mut r = (status, views::layout(ctx, title, body)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(h);
    if fresh_csrf {
        set_cookie(
            h,
            &format!(
                "{CSRF_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                ctx.csrf
            ),
        );
    }
    r
}

fn secure(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn set_cookie(h: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.append(header::SET_COOKIE, v);
    }
}

fn refused(ctx: &Ctx, fresh: bool, r: Refusal) -> Response {
    let title = match r.0 {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::SERVICE_UNAVAILABLE => "Database unavailable",
        _ => "Bad request",
    };
    page(ctx, fresh, r.0, title, &views::error_body(&r.1))
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure(r.headers_mut());
    r
}

macro_rules! ctx_or_return {
    ($c:expr, $headers:expr) => {
        match $c.ctx(&$headers) {
            Ok(v) => v,
            Err(r) => return *r,
        }
    };
}

macro_rules! or_refuse {
    ($ctx:expr, $fresh:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return refused(&$ctx, $fresh, r),
        }
    };
}

async fn overview(State(c): State<Console>, headers: HeaderMap) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    let client = or_refuse!(ctx, fresh, c.client().await);
    let o = or_refuse!(
        ctx,
        fresh,
        queries::overview(&client, &c.inner.cfg)
            .await
            .map_err(db_error)
    );
    let rates = c
        .inner
        .rates
        .as_ref()
        .map(|r| r.lock().expect("rates lock"));
    let body = views::overview(&o, rates.as_deref());
    drop(rates);
    page(&ctx, fresh, StatusCode::OK, "Overview", &body)
}

async fn failed_rows(client: &tokio_postgres::Client) -> Result<Vec<FailedRow>, Refusal> {
    Ok(client
        .query(sql::STATS_FAILED_BY_REASON, &[])
        .await
        .map_err(db_error)?
        .iter()
        .map(FailedRow::from_row)
        .collect())
}

async fn failed(State(c): State<Console>, headers: HeaderMap) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    let client = or_refuse!(ctx, fresh, c.client().await);
    let rows = or_refuse!(ctx, fresh, failed_rows(&client).await);
    page(
        &ctx,
        fresh,
        StatusCode::OK,
        "Failed events by reason",
        &views::failed(&rows),
    )
}

async fn event(State(c): State<Console>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    let Ok(id) = id.parse::<i64>() else {
        return refused(
            &ctx,
            fresh,
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("{id:?} is not an event id (a whole number)"),
            ),
        );
    };
    let client = or_refuse!(ctx, fresh, c.client().await);
    let ev = or_refuse!(
        ctx,
        fresh,
        queries::event(&client, id).await.map_err(db_error)
    );
    let Some(ev) = ev else {
        return refused(
            &ctx,
            fresh,
            Refusal(
                StatusCode::NOT_FOUND,
                format!("no event {id} in the outbox: it was delivered (acked) or never existed"),
            ),
        );
    };
    let audit = or_refuse!(
        ctx,
        fresh,
        queries::event_audit(&client, id).await.map_err(db_error)
    );
    page(
        &ctx,
        fresh,
        StatusCode::OK,
        &format!("Event {id}"),
        &views::event(&ev, &audit),
    )
}

fn bad_input(e: filter::BadInput) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, format!("malformed filter: {e}"))
}

async fn replay_page(
    State(c): State<Console>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    let fields = filter::fields(q.as_deref().unwrap_or(""));
    let client = or_refuse!(ctx, fresh, c.client().await);
    let reasons: Vec<String> = or_refuse!(ctx, fresh, failed_rows(&client).await)
        .into_iter()
        .filter_map(|r| r.error_reason)
        .collect();
    let mut body = views::replay_form(&fields, &reasons);
    if !filter::names_a_filter(&fields) {
        if q.is_some_and(|q| !q.is_empty()) {
            body.insert_str(
                0,
                &views::error_body(
                    "name at least one of error_reason, index, projection, since, until: a replay never takes the whole failed pile from the console",
                ),
            );
            return page(&ctx, fresh, StatusCode::BAD_REQUEST, "Replay", &body);
        }
        return page(&ctx, fresh, StatusCode::OK, "Replay", &body);
    }
    let f = match filter::parse(&fields) {
        Ok(f) => f,
        Err(e) => {
            body.insert_str(0, &views::error_body(&format!("malformed filter: {e}")));
            return page(&ctx, fresh, StatusCode::BAD_REQUEST, "Replay", &body);
        }
    };
    let d = or_refuse!(
        ctx,
        fresh,
        replay::dry_run(&client, &f).await.map_err(db_error)
    );
    body.push_str(&views::replay_preview(&ctx, &fields, &d));
    page(&ctx, fresh, StatusCode::OK, "Replay", &body)
}

/// The POST's CSRF check, before anything else is looked at.
fn check_csrf(headers: &HeaderMap, fields: &Fields) -> Result<(), Refusal> {
    csrf::verify_request(headers, field(fields, CSRF_FIELD)).map_err(|e| {
        tracing::warn!(refusal = %e, "console: a POST refused by the CSRF check");
        Refusal(StatusCode::FORBIDDEN, format!("refused (CSRF): {e}"))
    })
}

async fn replay_execute(State(c): State<Console>, headers: HeaderMap, body: String) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    let fields = filter::fields(&body);
    or_refuse!(ctx, fresh, check_csrf(&headers, &fields));
    if ctx.scope < Scope::Write {
        let why = if c.inner.access.writable() {
            "replay needs the write token: log in with OUTBOX_CONSOLE_WRITE_TOKEN"
        } else {
            "this console is read-only: start it with OUTBOX_CONSOLE_WRITE_TOKEN to replay"
        };
        return refused(&ctx, fresh, Refusal(StatusCode::FORBIDDEN, why.into()));
    }
    let mut f = or_refuse!(ctx, fresh, filter::parse(&fields).map_err(bad_input));
    // The ids pin the events; the limit must not cut them.
    if let Some(ids) = &f.ids {
        f.limit = f.limit.max(ids.len() as i64);
    }
    let bad = |m: &str| refused(&ctx, fresh, Refusal(StatusCode::BAD_REQUEST, m.into()));
    let Some(reason) = field(&fields, "reason") else {
        return bad(
            "a reason is required: say why these events are replayed (it goes into the audit trail)",
        );
    };
    if reason.chars().count() > 2000 {
        return bad("reason: longer than 2000 characters");
    }
    let ids = match &f.ids {
        Some(ids) if !ids.is_empty() => ids.len(),
        _ => {
            return bad(
                "nothing to replay: run the dry run first; the confirm step names the events",
            );
        }
    };
    match field(&fields, "expected").map(str::parse::<usize>) {
        Some(Ok(n)) if n == ids => {}
        _ => {
            return bad("expected: the confirmed number of events does not match the events named");
        }
    }
    let actor = match field(&fields, "actor") {
        Some(a) if a.chars().count() <= 100 && !a.chars().any(char::is_control) => {
            format!("{a} (console)")
        }
        Some(_) => return bad("who: at most 100 printable characters"),
        None => "console".to_string(),
    };
    let client = or_refuse!(ctx, fresh, c.client().await);
    let r = or_refuse!(
        ctx,
        fresh,
        replay::execute(&client, &f, &actor, reason)
            .await
            .map_err(db_error)
    );
    tracing::info!(
        audit_id = r.audit_id,
        count = r.count,
        actor,
        reason,
        "replayed from the console"
    );
    see_other(&format!("/audit?replayed={}", r.audit_id))
}

async fn audit(State(c): State<Console>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    let fields = filter::fields(q.as_deref().unwrap_or(""));
    let replayed = match field(&fields, "replayed").map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return refused(
                &ctx,
                fresh,
                Refusal(StatusCode::BAD_REQUEST, "replayed: not an audit id".into()),
            );
        }
    };
    let client = or_refuse!(ctx, fresh, c.client().await);
    let rows = or_refuse!(
        ctx,
        fresh,
        replay::audit_trail(&client, 200).await.map_err(db_error)
    );
    page(
        &ctx,
        fresh,
        StatusCode::OK,
        "Replay audit trail",
        &views::audit(&rows, replayed),
    )
}

/// A document's lookup. 400 naming the field when index or doc_id is missing or malformed;
/// 404 when the database knows nothing of the document (no record, no event): the page
/// says so and keeps the form, and a script (curl -f) tells "nothing known" from a found
/// document, as /events/{id} answers 404 for an event no longer in the outbox.
async fn documents(
    State(c): State<Console>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    let fields = filter::fields(q.as_deref().unwrap_or(""));
    let key = match document::parse(&fields) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return page(
                &ctx,
                fresh,
                StatusCode::OK,
                "Document lookup",
                &document::form(None),
            );
        }
        Err(e) => {
            let mut body = views::error_body(&e.to_string());
            body.push_str(&document::form(None));
            return page(
                &ctx,
                fresh,
                StatusCode::BAD_REQUEST,
                "Document lookup",
                &body,
            );
        }
    };
    let client = or_refuse!(ctx, fresh, c.client().await);
    let retention = c.inner.cfg.delete_record_retention;
    let (records, events) = or_refuse!(
        ctx,
        fresh,
        queries::document(&client, &key, retention)
            .await
            .map_err(db_error)
    );
    let rates = c
        .inner
        .rates
        .as_ref()
        .map(|r| r.lock().expect("rates lock").superseded_total());
    let lookup = document::Lookup {
        key: &key,
        records: &records,
        events: &events,
        retention,
        mode: c.inner.cfg.delete_records,
        superseded_acks: rates.flatten(),
        metrics_configured: rates.is_some(),
    };
    let status = if lookup.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    page(
        &ctx,
        fresh,
        status,
        &format!("Document {}", key.doc_id),
        &document::page(&lookup),
    )
}

fn anonymous_ctx(c: &Console, headers: &HeaderMap) -> (Ctx, bool) {
    let existing = cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 32);
    let fresh = existing.is_none();
    (
        Ctx {
            scope: Scope::Read,
            csrf: existing.unwrap_or_else(csrf::new_token),
            writable: c.inner.access.writable(),
            logged_in: cookie(headers, TOKEN_COOKIE).is_some(),
            database: "(log in to see)".into(),
        },
        fresh,
    )
}

async fn login_page(State(c): State<Console>, headers: HeaderMap) -> Response {
    let (ctx, fresh) = anonymous_ctx(&c, &headers);
    page(
        &ctx,
        fresh,
        StatusCode::OK,
        "Log in",
        &views::login_body(&ctx.csrf, None),
    )
}

async fn login(State(c): State<Console>, headers: HeaderMap, body: String) -> Response {
    let (ctx, fresh) = anonymous_ctx(&c, &headers);
    let fields = filter::fields(&body);
    or_refuse!(ctx, fresh, check_csrf(&headers, &fields));
    let token = field(&fields, "token");
    let accepted = token.is_some()
        && crate::config::valid_console_token(token.unwrap_or(""))
        && c.inner.access.scope(token).is_some()
        && (c.inner.access.needs_login() || c.inner.access.scope(token) == Some(Scope::Write));
    if !accepted {
        tracing::warn!("console: a log-in with a token that is not accepted");
        return page(
            &ctx,
            fresh,
            StatusCode::UNAUTHORIZED,
            "Log in",
            &views::login_body(&ctx.csrf, Some("the token is not accepted")),
        );
    }
    let mut r = see_other("/");
    set_cookie(
        r.headers_mut(),
        &format!(
            "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            token.unwrap_or("")
        ),
    );
    r
}

async fn logout(State(c): State<Console>, headers: HeaderMap, body: String) -> Response {
    let (ctx, fresh) = anonymous_ctx(&c, &headers);
    let fields = filter::fields(&body);
    or_refuse!(ctx, fresh, check_csrf(&headers, &fields));
    let mut r = see_other("/login");
    set_cookie(
        r.headers_mut(),
        &format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

async fn not_found(State(c): State<Console>, headers: HeaderMap) -> Response {
    let (ctx, fresh) = ctx_or_return!(c, headers);
    refused(
        &ctx,
        fresh,
        Refusal(StatusCode::NOT_FOUND, "no such page".into()),
    )
}
