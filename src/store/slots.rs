//! The slots of the insert-only tables: one attempt to empty a slot of the log
//! (sql/truncate_slot.sql) or of the pieces (sql/truncate_pieces.sql), both functions in
//! functions/outbox_truncate_slot.sql, and its answer.

use deadpool_postgres::Pool;

use crate::{db::DbError, sql};

/// What one attempt at a slot found (`outbox_truncate_slot`'s answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotResult {
    Empty,
    Active,
    Unclaimed,
    Leased,
    /// A piece in the pieces' slot has not ended.
    Open,
    Busy,
    Truncated,
}

impl SlotResult {
    pub fn parse(s: &str) -> Option<SlotResult> {
        Some(match s {
            "empty" => SlotResult::Empty,
            "active" => SlotResult::Active,
            "unclaimed" => SlotResult::Unclaimed,
            "leased" => SlotResult::Leased,
            "open" => SlotResult::Open,
            "busy" => SlotResult::Busy,
            "truncated" => SlotResult::Truncated,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SlotResult::Empty => "empty",
            SlotResult::Active => "active",
            SlotResult::Unclaimed => "unclaimed",
            SlotResult::Leased => "leased",
            SlotResult::Open => "open",
            SlotResult::Busy => "busy",
            SlotResult::Truncated => "truncated",
        }
    }
}

/// The insert-only tables that rotate by slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The log, `outbox_events` (migrations/0003).
    Log,
    /// `outbox_pieces` with `outbox_piece_ends` (migrations/0004).
    Pieces,
}

impl Part {
    pub const ALL: [Part; 2] = [Part::Log, Part::Pieces];

    /// The table, as metrics and logs name it.
    pub fn table(self) -> &'static str {
        match self {
            Part::Log => "outbox_events",
            Part::Pieces => "outbox_pieces",
        }
    }

    fn statement(self) -> &'static str {
        match self {
            Part::Log => sql::TRUNCATE_SLOT,
            Part::Pieces => sql::TRUNCATE_PIECES,
        }
    }
}

/// One attempt at one slot of `part`.
pub async fn truncate_slot(
    pool: &Pool,
    part: Part,
    slot: i32,
    lock_timeout: &str,
) -> Result<SlotResult, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(part.statement()).await?;
    let row = client.query_one(&stmt, &[&slot, &lock_timeout]).await?;
    let answer: String = row.get(0);
    Ok(SlotResult::parse(&answer).expect("outbox_truncate_* answers one of SlotResult"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_of_the_function_parses_and_prints_back() {
        for s in [
            "empty",
            "active",
            "unclaimed",
            "leased",
            "open",
            "busy",
            "truncated",
        ] {
            assert_eq!(SlotResult::parse(s).map(|r| r.as_str()), Some(s));
        }
        assert_eq!(SlotResult::parse("other"), None);
    }
}
