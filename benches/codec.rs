//! CPU cost of the worker's pure stages on one 500-event chunk: NDJSON encoding, outcome
//! classification of the `_bulk` response, and coalescing by document. Throughput is in
//! events, so the figures compare directly with the end-to-end events/s of `outbox-bench`.
//!
//!     cargo bench --bench codec            (add `-- --quick` for a short run)

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use outbox_worker::{
    bulk::{classify::classify_response, encode},
    contract::Op,
    event::{ClaimedEvent, coalesce_by_document},
};

const CHUNK: usize = 500;
/// The worker's default byte cap (OUTBOX_BULK_MAX_BYTES): never reached by 500 such events.
const MAX_BYTES: usize = 5 * 1024 * 1024;

/// A product document as PostgreSQL prints jsonb (key order, `": "` and `", "`), about
/// 300 bytes like the end-to-end bench's documents.
fn payload(i: usize) -> String {
    format!(
        concat!(
            r#"{{"id": {i}, "name": "oak lamp {i}", "tags": ["steel", "linen"], "stock": {stock}, "version": {i}, "price_cents": {price}, "description": "#,
            r#""a sturdy product number {i} with a description long enough to look like a real catalogue entry", "#,
            r#""updated_at": "2026-01-01T12:00:00.000000+00:00"}}"#
        ),
        i = i,
        stock = i % 500,
        price = (i * 7919) % 100_000,
    )
}

fn event(i: usize, doc: usize) -> ClaimedEvent {
    ClaimedEvent {
        id: i as i64 + 1,
        index_name: "demo_products".into(),
        doc_id: doc.to_string(),
        op: Op::Index.to_string(),
        payload: Some(payload(i)),
        version: i as i64 + 1,
        routing: None,
        attempts: 1,
        deferrals: 0,
        created_epoch: 0.0,
        piece: None,
    }
}

fn events(n: usize) -> Vec<(ClaimedEvent, Op)> {
    (0..n).map(|i| (event(i, i), Op::Index)).collect()
}

/// A `_bulk` response body in the shape `filter_path` leaves (what the worker asks for).
/// Every `error_every`-th item fails: alternately a 429 (retry) and a mapping error (fail).
fn filtered_response(n: usize, error_every: Option<usize>) -> Vec<u8> {
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let item = match error_every {
            Some(k) if i % k == k - 1 && (i / k) % 2 == 0 => {
                r#"{"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation [shard_detail=[p][0][P], shard_coordinating_and_primary_bytes=0, replica_bytes=0]"}}}"#.to_string()
            }
            Some(k) if i % k == k - 1 => format!(
                r#"{{"index":{{"status":400,"error":{{"type":"document_parsing_exception","reason":"[1:{i}] failed to parse field [price_cents] of type [long] in document with id '{i}'. Preview of field's value: 'abc'"}}}}}}"#
            ),
            _ => r#"{"index":{"status":201}}"#.to_string(),
        };
        items.push(item);
    }
    format!(
        r#"{{"errors":{},"items":[{}]}}"#,
        error_every.is_some(),
        items.join(",")
    )
    .into_bytes()
}

/// The same all-success response without `filter_path`: what the engine sends by default.
fn full_response(n: usize) -> Vec<u8> {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"index":{{"_index":"demo_products","_id":"{i}","_version":{v},"result":"created","_shards":{{"total":2,"successful":1,"failed":0}},"_seq_no":{i},"_primary_term":1,"status":201}}}}"#,
                v = i + 1
            )
        })
        .collect();
    format!(
        r#"{{"took":12,"errors":false,"items":[{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn encoding(c: &mut Criterion) {
    let evs = events(CHUNK);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(CHUNK as u64));
    // `chunk` takes the events by value: the clone is set-up, not measured.
    g.bench_function("chunk_500", |b| {
        b.iter_batched(
            || evs.clone(),
            |evs| encode::chunk(evs, CHUNK, MAX_BYTES, None),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("encode_all_500", |b| {
        b.iter(|| encode::encode_all(black_box(&evs), None))
    });
    g.finish();
}

fn classification(c: &mut Criterion) {
    let ops = vec![Op::Index; CHUNK];
    let cases = [
        ("all_success_filtered_500", filtered_response(CHUNK, None)),
        ("all_success_unfiltered_500", full_response(CHUNK)),
        // One item in ten fails (half retried, half terminal): an unusually bad response.
        ("mixed_10pct_errors_500", filtered_response(CHUNK, Some(10))),
    ];
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(CHUNK as u64));
    for (name, body) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| classify_response(200, black_box(body), black_box(&ops)))
        });
    }
    g.finish();
}

fn coalescing(c: &mut Criterion) {
    let unique: Vec<ClaimedEvent> = (0..CHUNK).map(|i| event(i, i)).collect();
    // 100 documents with 5 versions each, interleaved as a busy producer writes them.
    let repeated: Vec<ClaimedEvent> = (0..CHUNK).map(|i| event(i, i % 100)).collect();
    let mut g = c.benchmark_group("coalesce");
    g.throughput(Throughput::Elements(CHUNK as u64));
    for (name, evs) in [
        ("unique_docs_500", &unique),
        ("5_versions_per_doc_500", &repeated),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(|| evs.clone(), coalesce_by_document, BatchSize::SmallInput)
        });
    }
    g.finish();
}

criterion_group!(benches, encoding, classification, coalescing);
criterion_main!(benches);
