//! Events -> NDJSON `_bulk` body, and the chunking of a claim by count and bytes.
//!
//! Every action carries `version_type=external` and the event's version, so a stale write
//! can never overwrite a newer one, whatever the concurrency or number of workers. An event
//! with a routing value sends it on its action, index and delete alike; index actions carry
//! the default ingest pipeline (OUTBOX_BULK_PIPELINE) when one is set.

use crate::{contract::Op, event::ClaimedEvent};

/// One bulk request: the events it carries, in order, and their body.
#[derive(Debug)]
pub struct Chunk {
    pub events: Vec<(ClaimedEvent, Op)>,
    pub body: Vec<u8>,
}

/// Append one action line (and the document line for `index`) to `buf`; `pipeline`: the
/// ingest pipeline of index actions.
pub fn encode_event(buf: &mut Vec<u8>, ev: &ClaimedEvent, op: Op, pipeline: Option<&str>) {
    buf.extend_from_slice(match op {
        Op::Index => b"{\"index\":{\"_index\":",
        Op::Delete => b"{\"delete\":{\"_index\":",
    });
    write_json_str(buf, &ev.index_name);
    buf.extend_from_slice(b",\"_id\":");
    write_json_str(buf, &ev.doc_id);
    buf.extend_from_slice(b",\"version\":");
    buf.extend_from_slice(itoa(ev.version).as_bytes());
    if let Some(routing) = &ev.routing {
        buf.extend_from_slice(b",\"routing\":");
        write_json_str(buf, routing);
    }
    if let (Op::Index, Some(pipeline)) = (op, pipeline) {
        buf.extend_from_slice(b",\"pipeline\":");
        write_json_str(buf, pipeline);
    }
    buf.extend_from_slice(b",\"version_type\":\"external\"}}\n");
    if op == Op::Index {
        // PostgreSQL prints jsonb on one line with every control character escaped,
        // so the stored text is a valid NDJSON line as it is.
        buf.extend_from_slice(ev.payload.as_deref().unwrap_or("{}").as_bytes());
        buf.push(b'\n');
    }
}

fn itoa(v: i64) -> String {
    v.to_string()
}

fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *buf, s).expect("writing to a Vec cannot fail");
}

/// The size `encode_event` will add, without encoding (for the byte cap).
fn encoded_len_estimate(ev: &ClaimedEvent, pipeline: Option<&str>) -> usize {
    64 + ev.index_name.len()
        + ev.doc_id.len()
        + ev.routing.as_ref().map_or(0, |r| r.len() + 12)
        + pipeline.map_or(0, |p| p.len() + 13)
        + ev.payload.as_ref().map_or(0, |p| p.len() + 1)
}

/// Split validated events into chunks of at most `max_events` events and about
/// `max_bytes` bytes each (one event alone may exceed the byte cap: it goes alone).
pub fn chunk(
    events: Vec<(ClaimedEvent, Op)>,
    max_events: usize,
    max_bytes: usize,
    pipeline: Option<&str>,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = Chunk {
        events: Vec::new(),
        body: Vec::new(),
    };
    for (ev, op) in events {
        let add = encoded_len_estimate(&ev, pipeline);
        if !current.events.is_empty()
            && (current.events.len() >= max_events || current.body.len() + add > max_bytes)
        {
            chunks.push(std::mem::replace(
                &mut current,
                Chunk {
                    events: Vec::new(),
                    body: Vec::new(),
                },
            ));
        }
        encode_event(&mut current.body, &ev, op, pipeline);
        current.events.push((ev, op));
    }
    if !current.events.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Re-encode a subset of events (after a split).
pub fn encode_all(events: &[(ClaimedEvent, Op)], pipeline: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    for (ev, op) in events {
        encode_event(&mut body, ev, *op, pipeline);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ev;

    fn lines(body: &[u8]) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'), "bulk body must end with a newline");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn index_action_carries_external_version_and_payload() {
        let mut body = Vec::new();
        encode_event(&mut body, &ev(7, "doc-1", 42), Op::Index, None);
        let l = lines(&body);
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0],
            serde_json::json!({"index": {"_index": "idx", "_id": "doc-1", "version": 42, "version_type": "external"}})
        );
        assert_eq!(l[1], serde_json::json!({"v": 42}));
        assert!(!String::from_utf8(body).unwrap().contains("\"_type\""));
    }

    #[test]
    fn delete_has_no_document_line() {
        let mut e = ev(1, "d", 3);
        e.payload = None;
        e.op = "delete".into();
        let mut body = Vec::new();
        encode_event(&mut body, &e, Op::Delete, None);
        let l = lines(&body);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["delete"]["_id"], "d");
    }

    #[test]
    fn routing_goes_on_index_and_delete_and_the_pipeline_on_index_only() {
        let mut indexed = ev(1, "a", 5);
        indexed.routing = Some("user\"7".into());
        let mut deleted = ev(2, "b", 6);
        deleted.op = "delete".into();
        deleted.payload = None;
        deleted.routing = Some("u8".into());
        let plain = ev(3, "c", 7);
        let body = encode_all(
            &[
                (indexed, Op::Index),
                (deleted, Op::Delete),
                (plain, Op::Index),
            ],
            Some("stamp"),
        );
        let l = lines(&body);
        assert_eq!(
            l[0],
            serde_json::json!({"index": {"_index": "idx", "_id": "a", "version": 5,
                "routing": "user\"7", "pipeline": "stamp", "version_type": "external"}})
        );
        assert_eq!(
            l[2],
            serde_json::json!({"delete": {"_index": "idx", "_id": "b", "version": 6,
                "routing": "u8", "version_type": "external"}})
        );
        assert_eq!(
            l[3],
            serde_json::json!({"index": {"_index": "idx", "_id": "c", "version": 7,
                "pipeline": "stamp", "version_type": "external"}})
        );
        // Without a pipeline or routing, the action is as before.
        assert!(!String::from_utf8(encode_all(&[(ev(4, "d", 1), Op::Index)], None))
            .unwrap()
            .contains("pipeline"));
    }

    #[test]
    fn ids_with_quotes_newlines_and_unicode_are_escaped() {
        let tricky = "a\"b\\c\nd\u{2028}é😀/x";
        let mut e = ev(1, tricky, 1);
        e.index_name = "idx\"q".into();
        // A payload as PostgreSQL prints jsonb: escapes, unicode kept.
        e.payload = Some(r#"{"t": "line1\nline2 \"q\" é😀"}"#.into());
        let mut body = Vec::new();
        encode_event(&mut body, &e, Op::Index, None);
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(
            text.matches('\n').count(),
            2,
            "exactly one newline per line"
        );
        let l = lines(&body);
        assert_eq!(l[0]["index"]["_id"], tricky);
        assert_eq!(l[0]["index"]["_index"], "idx\"q");
        assert_eq!(l[1]["t"], "line1\nline2 \"q\" é😀");
    }

    #[test]
    fn chunks_respect_count_and_byte_caps() {
        let events: Vec<_> = (0..10)
            .map(|i| (ev(i, &format!("d{i}"), i), Op::Index))
            .collect();
        let by_count = chunk(events, 4, 1 << 20, None);
        assert_eq!(
            by_count.iter().map(|c| c.events.len()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );

        let mut big = ev(100, "big", 1);
        big.payload = Some(format!("{{\"x\":\"{}\"}}", "y".repeat(5000)));
        let events = vec![
            (ev(1, "a", 1), Op::Index),
            (big, Op::Index),
            (ev(2, "b", 1), Op::Index),
        ];
        let by_bytes = chunk(events, 100, 1000, None);
        assert_eq!(
            by_bytes.iter().map(|c| c.events.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        for c in &by_bytes {
            assert_eq!(c.body, encode_all(&c.events, None));
        }
    }
}
