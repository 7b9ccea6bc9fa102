//! The producer's contract in one place: the table and the columns a producer writes, the op
//! codes, the one insert every producer in this repository goes through, and the stable codes
//! the worker writes back (`status`, `error_reason`). Producers, dashboards and the runbook's
//! SQL use these names: they do not change.
//!
//! Adding a producer column (say `routing`): a migration, a row of [`PRODUCER_COLUMNS`] and a
//! field of [`NewEvent`]. If the worker reads it back: one name in `sql/claim.sql`'s RETURNING,
//! a field of `event::ClaimedEvent`, and the encoder.

use std::{fmt, sync::LazyLock};

use tokio_postgres::{
    GenericClient, Statement,
    types::{ToSql, Type},
};

/// The outbox table producers insert into.
pub const TABLE: &str = "outbox_events";

/// `projection` when the producer sets none (the migration's column default).
pub const DEFAULT_PROJECTION: &str = "search_index_to_elastic";

/// One column a producer writes.
pub struct Column {
    pub name: &'static str,
    /// Its PostgreSQL type, as the migration declares it.
    pub sql_type: &'static str,
    /// The type of the array it is bound as: the statement goes out typed, in one round
    /// trip, with no prepare first.
    array_type: Type,
    /// Its values over a batch of events, bound as one array of `sql_type`.
    values: for<'a> fn(&'a [NewEvent]) -> Box<dyn ToSql + Sync + Send + 'a>,
}

/// The producer's columns, in the order [`insert`] binds them. Every other column is the
/// worker's (`id`, `status`, `attempts`, the lease, `error_reason`, ...).
pub const PRODUCER_COLUMNS: &[Column] = &[
    Column {
        name: "index_name",
        sql_type: "text",
        array_type: Type::TEXT_ARRAY,
        values: |evs| each(evs, |e| e.index_name.as_str()),
    },
    Column {
        name: "doc_id",
        sql_type: "text",
        array_type: Type::TEXT_ARRAY,
        values: |evs| each(evs, |e| e.doc_id.as_str()),
    },
    Column {
        name: "op",
        sql_type: "text",
        array_type: Type::TEXT_ARRAY,
        values: |evs| each(evs, |e| e.op.as_str()),
    },
    Column {
        name: "payload",
        sql_type: "jsonb",
        array_type: Type::JSONB_ARRAY,
        values: |evs| each(evs, |e| e.payload.as_ref()),
    },
    Column {
        name: "projection",
        sql_type: "text",
        array_type: Type::TEXT_ARRAY,
        values: |evs| each(evs, |e| e.projection.as_str()),
    },
    Column {
        name: "doc_version",
        sql_type: "bigint",
        array_type: Type::INT8_ARRAY,
        values: |evs| each(evs, |e| e.doc_version),
    },
    Column {
        name: "routing",
        sql_type: "text",
        array_type: Type::TEXT_ARRAY,
        values: |evs| each(evs, |e| e.routing.as_deref()),
    },
];

/// One field of every event, as one array.
fn each<'a, T: ToSql + Sync + Send + 'a>(
    events: &'a [NewEvent],
    field: impl Fn(&'a NewEvent) -> T,
) -> Box<dyn ToSql + Sync + Send + 'a> {
    Box::new(events.iter().map(field).collect::<Vec<T>>())
}

/// What an event asks the search engine to do with its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Write `payload` as the document.
    Index,
    /// Remove the document (a missing one is fine).
    Delete,
}

impl Op {
    pub const ALL: [Op; 2] = [Op::Index, Op::Delete];

    /// The code stored in the `op` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Index => "index",
            Op::Delete => "delete",
        }
    }

    pub fn parse(code: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == code)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event as a producer writes it. Only the builder methods' columns are optional.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub index_name: String,
    pub doc_id: String,
    pub op: Op,
    /// The document, a JSON object; `None` for a delete.
    pub payload: Option<serde_json::Value>,
    pub projection: String,
    /// External version; `None` lets the outbox id stand in for it.
    pub doc_version: Option<i64>,
    /// The engine's routing value for the document, sent on index and delete alike;
    /// `None`: routed by `_id`.
    pub routing: Option<String>,
}

impl NewEvent {
    /// Write `payload` as document `doc_id` of `index`.
    pub fn index(
        index: impl Into<String>,
        doc_id: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self::new(index, doc_id, Op::Index, Some(payload))
    }

    /// Remove document `doc_id` of `index`.
    pub fn delete(index: impl Into<String>, doc_id: impl Into<String>) -> Self {
        Self::new(index, doc_id, Op::Delete, None)
    }

    fn new(
        index: impl Into<String>,
        doc_id: impl Into<String>,
        op: Op,
        payload: Option<serde_json::Value>,
    ) -> Self {
        NewEvent {
            index_name: index.into(),
            doc_id: doc_id.into(),
            op,
            payload,
            projection: DEFAULT_PROJECTION.to_string(),
            doc_version: None,
            routing: None,
        }
    }

    /// The document's external version: it must grow with every change of the document
    /// (taken under the row lock, e.g. from a sequence), so a stale write never wins.
    pub fn version(mut self, version: i64) -> Self {
        self.doc_version = Some(version);
        self
    }

    /// Custom routing: the same value must come with every event of the document (a
    /// delete without it would miss a document indexed with it).
    pub fn routing(mut self, routing: impl Into<String>) -> Self {
        self.routing = Some(routing.into());
        self
    }

    /// The projection whose workers deliver this event.
    pub fn projection(mut self, projection: impl Into<String>) -> Self {
        self.projection = projection.into();
        self
    }
}

/// `INSERT .. SELECT * FROM unnest(<one array per producer column>)`: one statement, so one
/// wake of the notify trigger, however many events.
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = PRODUCER_COLUMNS.iter().map(|c| c.name).collect();
    let arrays: Vec<String> = PRODUCER_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, c.sql_type))
        .collect();
    format!(
        "INSERT INTO {TABLE} ({}) SELECT * FROM unnest({})",
        names.join(", "),
        arrays.join(", ")
    )
});

/// The same insert, returning the ids. They come from the sequence in the order unnest
/// yields the rows, so sorted they are in the order of the events.
static INSERT_RETURNING_IDS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH inserted AS ({} RETURNING id) SELECT id FROM inserted ORDER BY id",
        *INSERT_SQL
    )
});

/// Insert `events` in one statement, inside whatever transaction `client` has open (the
/// producer's own, with its business change). Returns how many rows were inserted. Needs
/// only the INSERT privilege, like an application (docs/roles.sql). An empty slice runs
/// nothing, so it wakes no worker either.
///
/// From a pool connection, pass the `tokio_postgres::Client` it wraps.
pub async fn insert(
    client: &impl GenericClient,
    events: &[NewEvent],
) -> Result<u64, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let arrays = bind(events);
    client
        .execute_typed(INSERT_SQL.as_str(), &params(&arrays))
        .await
}

/// [`insert`], returning the new events' ids in the order of `events`. RETURNING needs the
/// SELECT privilege on `id` as well, which a least-privilege producer does not have.
pub async fn insert_returning_ids(
    client: &impl GenericClient,
    events: &[NewEvent],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let arrays = bind(events);
    let rows = client
        .query_typed(INSERT_RETURNING_IDS_SQL.as_str(), &params(&arrays))
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The plain insert prepared once on a connection, for producers that insert often:
/// [`insert_prepared`] then skips the parse and plan that [`insert`] pays on every call.
pub async fn prepare_insert(
    client: &impl GenericClient,
) -> Result<Statement, tokio_postgres::Error> {
    client
        .prepare_typed(INSERT_SQL.as_str(), &array_types())
        .await
}

/// [`insert`] through a statement of [`prepare_insert`] on the same connection.
pub async fn insert_prepared(
    client: &impl GenericClient,
    statement: &Statement,
    events: &[NewEvent],
) -> Result<u64, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let arrays = bind(events);
    client.execute(statement, &values(&arrays)).await
}

/// [`prepare_insert`] for [`insert_returning_ids_prepared`].
pub async fn prepare_insert_returning_ids(
    client: &impl GenericClient,
) -> Result<Statement, tokio_postgres::Error> {
    client
        .prepare_typed(INSERT_RETURNING_IDS_SQL.as_str(), &array_types())
        .await
}

/// [`insert_returning_ids`] through a statement of [`prepare_insert_returning_ids`].
pub async fn insert_returning_ids_prepared(
    client: &impl GenericClient,
    statement: &Statement,
    events: &[NewEvent],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let arrays = bind(events);
    let rows = client.query(statement, &values(&arrays)).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn array_types() -> Vec<Type> {
    PRODUCER_COLUMNS
        .iter()
        .map(|c| c.array_type.clone())
        .collect()
}

/// [`params`] without their types, for a prepared statement (it knows them).
fn values<'a>(arrays: &'a [Box<dyn ToSql + Sync + Send + 'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params(arrays).into_iter().map(|(value, _)| value).collect()
}

/// One array per producer column, in the order of [`PRODUCER_COLUMNS`].
fn bind(events: &[NewEvent]) -> Vec<Box<dyn ToSql + Sync + Send + '_>> {
    PRODUCER_COLUMNS
        .iter()
        .map(|c| (c.values)(events))
        .collect()
}

fn params<'a>(
    arrays: &'a [Box<dyn ToSql + Sync + Send + 'a>],
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    arrays
        .iter()
        .zip(PRODUCER_COLUMNS)
        .map(|(a, c)| (a.as_ref() as &(dyn ToSql + Sync), c.array_type.clone()))
        .collect()
}

/// The stored states of an event. `stuck` is derived (processing past its lease, or for too
/// long), never stored. The SQL guards spell these codes as literals, which the partial
/// indexes need; a test keeps them and the migration's CHECK in step with this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting to be claimed; may carry `next_retry_at`.
    Pending,
    /// Claimed by one worker under a lease.
    Processing,
    /// Terminal: never revived automatically, only by an audited replay.
    Failed,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Pending, Status::Processing, Status::Failed];

    /// The code stored in the `status` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Failed => "failed",
        }
    }

    pub fn parse(code: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == code)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event failed, or why its retry was scheduled: the `error_reason` column, the
/// `reason` label of the metrics and the `reason` field of the logs. Short and stable.
///
/// Two reasons are equal when their codes are (the engine's `error.type` is not checked
/// against the worker's own codes when it is passed through).
#[derive(Debug, Clone)]
pub enum ErrorReason {
    /// The event cannot be sent at all (unknown op, empty doc id, payload not an object...).
    InvalidEvent,
    /// 413 for a document sent alone.
    DocumentTooLarge,
    /// The event's own retryable failures used up OUTBOX_MAX_ATTEMPTS.
    MaxAttemptsExceeded,
    /// Reclaimed at OUTBOX_MAX_ATTEMPTS: a poison event that keeps killing its workers.
    LeaseExpired,
    /// The engine could not be connected to.
    EngineUnreachable,
    /// The bulk request timed out.
    RequestTimeout,
    /// Another transport failure.
    ConnectionError,
    /// 429 with no `error.type`.
    TooManyRequests,
    /// 5xx with no `error.type`.
    ServerError,
    /// A response the worker could not read item by item.
    MalformedResponse,
    /// 401 on the whole request: the operator's problem, never the event's.
    Unauthorized,
    /// 403 on the whole request: likewise.
    Forbidden,
    /// `http_<status>`: refused with this status and no `error.type` to say why.
    Http(HttpCode),
    /// The engine's own `error.type` (`mapper_parsing_exception`, ...), passed through.
    Engine(String),
}

/// The code `http_<status>`, spelled once when it is made.
#[derive(Debug, Clone)]
pub struct HttpCode {
    status: u16,
    code: String,
}

impl HttpCode {
    pub fn status(&self) -> u16 {
        self.status
    }
}

impl ErrorReason {
    /// The worker's own fixed codes; with `http_<status>` they are every code it spells itself.
    pub const OWN: [ErrorReason; 12] = [
        ErrorReason::InvalidEvent,
        ErrorReason::DocumentTooLarge,
        ErrorReason::MaxAttemptsExceeded,
        ErrorReason::LeaseExpired,
        ErrorReason::EngineUnreachable,
        ErrorReason::RequestTimeout,
        ErrorReason::ConnectionError,
        ErrorReason::TooManyRequests,
        ErrorReason::ServerError,
        ErrorReason::MalformedResponse,
        ErrorReason::Unauthorized,
        ErrorReason::Forbidden,
    ];

    pub fn http(status: u16) -> Self {
        ErrorReason::Http(HttpCode {
            status,
            code: format!("http_{status}"),
        })
    }

    /// The reason a stored code stands for. Never fails: a code the worker does not spell
    /// itself is the engine's.
    pub fn parse(code: &str) -> Self {
        if let Some(own) = ErrorReason::OWN.into_iter().find(|r| r.as_str() == code) {
            return own;
        }
        match code.strip_prefix("http_").map(str::parse::<u16>) {
            Some(Ok(status)) if ErrorReason::http(status).as_str() == code => {
                ErrorReason::http(status)
            }
            _ => ErrorReason::Engine(code.to_string()),
        }
    }

    /// The code stored in `error_reason`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorReason::Http(h) => &h.code,
            ErrorReason::Engine(t) => t,
            own => own.static_code().expect("every fixed reason has a code"),
        }
    }

    fn static_code(&self) -> Option<&'static str> {
        Some(match self {
            ErrorReason::InvalidEvent => "invalid_event",
            ErrorReason::DocumentTooLarge => "document_too_large",
            ErrorReason::MaxAttemptsExceeded => "max_attempts_exceeded",
            ErrorReason::LeaseExpired => "lease_expired",
            ErrorReason::EngineUnreachable => "engine_unreachable",
            ErrorReason::RequestTimeout => "request_timeout",
            ErrorReason::ConnectionError => "connection_error",
            ErrorReason::TooManyRequests => "too_many_requests",
            ErrorReason::ServerError => "server_error",
            ErrorReason::MalformedResponse => "malformed_response",
            ErrorReason::Unauthorized => "unauthorized",
            ErrorReason::Forbidden => "forbidden",
            ErrorReason::Http(_) | ErrorReason::Engine(_) => return None,
        })
    }
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for ErrorReason {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ErrorReason {}

impl std::hash::Hash for ErrorReason {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for ErrorReason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<&str> for ErrorReason {
    fn from(code: &str) -> Self {
        ErrorReason::parse(code)
    }
}

/// As a metric label value (`"reason" => reason`); the worker's own codes are not copied.
impl From<ErrorReason> for metrics::SharedString {
    fn from(reason: ErrorReason) -> Self {
        match reason.static_code() {
            Some(code) => metrics::SharedString::const_str(code),
            None => metrics::SharedString::from(reason.as_str().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_back_to_what_printed_them() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(op));
        }
        assert_eq!(Op::parse("upsert"), None);
        assert_eq!(Op::parse("Index"), None);
        for s in Status::ALL {
            assert_eq!(Status::parse(&s.to_string()), Some(s));
        }
        assert_eq!(
            Status::parse("stuck"),
            None,
            "stuck is derived, never stored"
        );
        for r in ErrorReason::OWN {
            let parsed = ErrorReason::parse(r.as_str());
            assert_eq!(parsed, r);
            assert!(parsed.static_code().is_some(), "{r} parsed as the engine's");
        }
    }

    #[test]
    fn reasons_the_worker_does_not_spell_are_the_engines() {
        assert!(matches!(
            ErrorReason::parse("http_400"),
            ErrorReason::Http(ref h) if h.status() == 400
        ));
        assert_eq!(ErrorReason::http(413).to_string(), "http_413");
        for code in ["mapper_parsing_exception", "http_", "http_x1", "http_0400"] {
            assert_eq!(
                ErrorReason::parse(code),
                ErrorReason::Engine(code.to_string()),
                "{code}"
            );
            assert!(matches!(ErrorReason::parse(code), ErrorReason::Engine(_)));
        }
        // Equal codes are equal reasons, whoever spelled them.
        assert_eq!(
            ErrorReason::Engine("server_error".into()),
            ErrorReason::ServerError
        );
        assert_eq!(ErrorReason::from("lease_expired"), "lease_expired");
        let label: metrics::SharedString = ErrorReason::LeaseExpired.into();
        assert_eq!(&*label, "lease_expired");
    }

    #[test]
    fn the_insert_binds_every_producer_column_in_order() {
        assert_eq!(
            INSERT_SQL.as_str(),
            "INSERT INTO outbox_events (index_name, doc_id, op, payload, projection, doc_version, routing) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::bigint[], $7::text[])"
        );
        let events = [
            NewEvent::index("i", "a", serde_json::json!({"n": 1})).version(7),
            NewEvent::delete("i", "b").projection("other").routing("r1"),
        ];
        // Each column binds one value per event; the debug form shows which.
        let bound: Vec<String> = bind(&events).iter().map(|a| format!("{a:?}")).collect();
        assert_eq!(
            bound,
            [
                r#"["i", "i"]"#,
                r#"["a", "b"]"#,
                r#"["index", "delete"]"#,
                r#"[Some(Object {"n": Number(1)}), None]"#,
                r#"["search_index_to_elastic", "other"]"#,
                "[Some(7), None]",
                r#"[None, Some("r1")]"#,
            ]
        );
    }

    /// The migrations create every producer column with the type this module binds, and
    /// the default projection this module writes.
    #[test]
    fn producer_columns_match_the_migration() {
        // The log's definition (schema 0003): what producers insert into; and the columns
        // later migrations add to it (`ALTER TABLE outbox_events ADD COLUMN name type;`).
        let migration = include_str!("../migrations/0003_insert_only_log.sql")
            .split("CREATE TABLE outbox_events (")
            .nth(1)
            .expect("0003 creates the log");
        let added: Vec<String> = include_str!("../migrations/0005_delete_records.sql")
            .lines()
            .filter_map(|l| l.strip_prefix("ALTER TABLE outbox_events ADD COLUMN "))
            .map(|l| l.trim_end_matches(';').to_string())
            .collect();
        let declared = |name: &str| -> Vec<String> {
            migration
                .lines()
                .map(str::to_string)
                .chain(added.iter().cloned())
                .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .find(|words| words.first().map(String::as_str) == Some(name))
                .unwrap_or_else(|| panic!("no column {name} in the migrations"))
        };
        for c in PRODUCER_COLUMNS {
            assert_eq!(
                declared(c.name)[1].trim_end_matches(','),
                c.sql_type,
                "type of {}",
                c.name
            );
        }
        assert!(
            declared("projection")
                .join(" ")
                .contains(&format!("DEFAULT '{DEFAULT_PROJECTION}'"))
        );
    }

    /// The README's table of the producer's contract names these columns and types, in order.
    #[test]
    fn readme_lists_the_producer_columns() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("## The producer's contract")
            .nth(1)
            .expect("README has the producer's contract");
        let listed: Vec<&str> = section
            .lines()
            .skip_while(|l| !l.starts_with("| column"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('`').nth(1).unwrap_or(l))
            .collect();
        let ours: Vec<String> = PRODUCER_COLUMNS
            .iter()
            .map(|c| format!("{} {}", c.name, c.sql_type))
            .collect();
        assert_eq!(listed, ours);
    }

    /// Every status the SQL spells is a `Status`: the migration's CHECK lists exactly them,
    /// and each quoted literal on a line of `sql/` that sets or tests `status` is one.
    #[test]
    fn sql_spells_only_status_codes() {
        let migration = include_str!("../migrations/0003_insert_only_log.sql");
        let check = migration
            .split("CHECK (status IN (")
            .nth(1)
            .and_then(|rest| rest.split("))").next())
            .expect("the migration checks status");
        let checked: Vec<&str> = check.split(", ").map(|c| c.trim_matches('\'')).collect();
        let ours: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(checked, ours);

        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut lines_seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("--")) {
                if !line.contains("status") {
                    continue;
                }
                lines_seen += 1;
                for literal in line.split('\'').skip(1).step_by(2) {
                    assert!(
                        Status::parse(literal).is_some(),
                        "{}: '{literal}' is not a status: {line}",
                        path.display()
                    );
                }
            }
        }
        assert!(lines_seen > 10, "the SQL guards were not found");
    }

    /// The runbook's glossary (§3, in both languages) names exactly these codes: its state
    /// table the `Status` codes and the derived `stuck`; its `error_reason` table the
    /// worker's own codes, beside examples of the engine's `error.type` (not a closed list).
    #[test]
    fn runbook_glossary_names_exactly_these_codes() {
        for (name, text) in [
            ("docs/runbook.en.md", include_str!("../docs/runbook.en.md")),
            ("docs/runbook.md", include_str!("../docs/runbook.md")),
        ] {
            let section = text
                .split("\n## 3)")
                .nth(1)
                .and_then(|rest| rest.split("\n## ").next())
                .unwrap_or_else(|| panic!("{name} has no §3"));

            // State rows open with the state in bold: `| **failed (terminal)** | ...`.
            let states: Vec<&str> = section
                .lines()
                .filter_map(|l| l.strip_prefix("| **"))
                .map(|l| l.split(|c: char| !c.is_ascii_lowercase()).next().unwrap())
                .collect();
            // stuck is derived (processing past its lease), never stored: not a Status.
            let mut want: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            want.push("stuck");
            assert_eq!(states, want, "{name}: state table");

            // The error_reason column of the table whose header names it.
            let column = section
                .lines()
                .skip_while(|l| !(l.starts_with('|') && l.contains("| error_reason |")))
                .skip(2)
                .take_while(|l| l.starts_with('|'))
                .map(|l| l.split('|').nth(2).expect("a row has an error_reason cell"));
            let mut own = Vec::new();
            for cell in column {
                for code in cell.split('`').skip(1).step_by(2) {
                    if code.starts_with("http_<") {
                        own.push("http_<status>".to_string());
                        continue;
                    }
                    match ErrorReason::parse(code) {
                        ErrorReason::Engine(t) => assert!(
                            t.ends_with("_exception") || t == "error.type" || t == "error",
                            "{name}: `{t}` is neither a code of the worker nor an engine type"
                        ),
                        r => own.push(r.to_string()),
                    }
                }
            }
            own.sort();
            own.dedup();
            let mut want: Vec<String> = ErrorReason::OWN.iter().map(|r| r.to_string()).collect();
            want.push("http_<status>".to_string());
            want.sort();
            assert_eq!(own, want, "{name}: error_reason table");
        }
    }
}
