//! The price of the delete records' lookup (issue #13): the worker drains the same backlog
//! with OUTBOX_DELETE_RECORDS=on and =off, in interleaved pairs, into the null sink (the
//! database path alone, where the lookup's one query per claim weighs the most) and into
//! the engine (what a user sees).
//!
//! Before each arm, the fresh schema gets one delete record per document of the backlog,
//! at version 0 (the events carry versions from 1), so every lookup finds a record for every
//! document it asks about and supersedes nothing: the whole backlog is still sent. The
//! lookup's cost at its worst, with nothing saved in return.

use outbox_worker::{config::NotifyMode, contract::DEFAULT_PROJECTION};

use crate::{
    ctx::Ctx,
    drain::{self, Run},
    worker::Spec,
};

/// One arm: `n` events over documents that all have a record; the lookup on or off; into
/// the null sink or the engine.
pub async fn drain_arm(
    ctx: &Ctx,
    base: &Spec,
    n: usize,
    lookup: bool,
    null_sink: bool,
) -> anyhow::Result<Run> {
    let schema = ctx.create_schema("deletes", NotifyMode::Adaptive).await?;
    let result = async {
        let db = ctx.connect(&schema.url).await?;
        // The backlog's documents are 1..=n of the index named like the schema.
        db.execute(
            "INSERT INTO outbox_delete_records
                 (projection, index_name, doc_id, routing, doc_version, event_id, deleted_at)
             SELECT $1, $2, g::text, NULL, 0, 0, now()
             FROM generate_series(1, $3::bigint) AS g",
            &[&DEFAULT_PROJECTION, &schema.name, &(n as i64)],
        )
        .await?;
        db.batch_execute("ANALYZE outbox_delete_records").await?;
        let spec = Spec {
            null_sink,
            delete_records: lookup,
            ..base.clone()
        };
        let mut run = drain::worker_drain_in(ctx, &schema, &spec, n).await?;
        run.what = format!(
            "worker_{}_{}",
            if null_sink { "null_sink" } else { "engine" },
            if lookup { "delete_lookup" } else { "no_lookup" }
        );
        anyhow::Ok(run)
    }
    .await;
    ctx.drop_schema(&schema).await;
    if !null_sink {
        ctx.delete_index(&schema.name).await;
    }
    result
}
