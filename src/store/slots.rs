//! The log's slots: one attempt to empty a slot (sql/truncate_slot.sql, which calls
//! functions/outbox_truncate_slot.sql), and its answer.

use deadpool_postgres::Pool;

use crate::{db::DbError, sql};

/// What one attempt at a slot found (`outbox_truncate_slot`'s answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotResult {
    Empty,
    Active,
    Unclaimed,
    Leased,
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
            SlotResult::Busy => "busy",
            SlotResult::Truncated => "truncated",
        }
    }
}

/// One attempt at one slot.
pub async fn truncate_slot(
    pool: &Pool,
    slot: i32,
    lock_timeout: &str,
) -> Result<SlotResult, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::TRUNCATE_SLOT).await?;
    let row = client.query_one(&stmt, &[&slot, &lock_timeout]).await?;
    let answer: String = row.get(0);
    Ok(SlotResult::parse(&answer).expect("outbox_truncate_slot answers one of SlotResult"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_of_the_function_parses_and_prints_back() {
        for s in ["empty", "active", "unclaimed", "leased", "busy", "truncated"] {
            assert_eq!(SlotResult::parse(s).map(|r| r.as_str()), Some(s));
        }
        assert_eq!(SlotResult::parse("other"), None);
    }
}
