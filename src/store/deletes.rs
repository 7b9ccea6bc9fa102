//! The delete records (docs/design.md §4, "Deletes never resurrect"): the lookup before a
//! claim is sent (sql/delete_records_find.sql), the write beside a delete's ack
//! (sql/delete_records_write.sql, called from outcomes.rs inside the ack's transaction),
//! and the prune by age (sql/prune_delete_records.sql).

use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};

use crate::{
    db::DbError,
    deletes::{DeleteRecord, Recorded},
    sql,
};

/// The recorded deletes among `keys` (index name, document id) of `projection`: one query.
pub async fn find(
    pool: &Pool,
    projection: &str,
    keys: &[(&str, &str)],
) -> Result<Vec<Recorded>, DbError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let indexes: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let docs: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::DELETE_RECORDS_FIND).await?;
    let rows = client
        .query(&stmt, &[&projection, &indexes, &docs])
        .await?;
    Ok(rows
        .iter()
        .map(|r| Recorded {
            index_name: r.get(0),
            doc_id: r.get(1),
            version: r.get(2),
        })
        .collect())
}

/// Write the records of acked deletes, on the connection (and in the transaction) of their
/// ack. The highest version of each document stays.
pub async fn write(
    client: &impl GenericClient,
    projection: &str,
    records: &[DeleteRecord],
) -> Result<(), DbError> {
    if records.is_empty() {
        return Ok(());
    }
    let indexes: Vec<&str> = records.iter().map(|r| r.index_name.as_str()).collect();
    let docs: Vec<&str> = records.iter().map(|r| r.doc_id.as_str()).collect();
    let routings: Vec<Option<&str>> = records.iter().map(|r| r.routing.as_deref()).collect();
    let versions: Vec<i64> = records.iter().map(|r| r.version).collect();
    let events: Vec<i64> = records.iter().map(|r| r.event_id).collect();
    let stmt = client.prepare_cached(sql::DELETE_RECORDS_WRITE).await?;
    client
        .execute(
            &stmt,
            &[&projection, &indexes, &docs, &routings, &versions, &events],
        )
        .await?;
    Ok(())
}

/// Delete at most `batch` records older than `retention`; how many went.
pub async fn prune(pool: &Pool, retention: Duration, batch: i64) -> Result<u64, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::PRUNE_DELETE_RECORDS).await?;
    Ok(client
        .execute(&stmt, &[&retention.as_secs_f64(), &batch])
        .await?)
}

/// How many delete records are kept.
pub async fn count(pool: &Pool) -> Result<i64, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql::COUNT_DELETE_RECORDS).await?;
    Ok(client.query_one(&stmt, &[]).await?.get(0))
}
