//! The fault vocabulary (what `PUT /fault` and script steps accept) and the pure functions
//! that shape injected answers: Elasticsearch-style error bodies and the `_bulk` response
//! rewrite that turns chosen items into rejections.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What to do to a request (or to the listening socket, for `refuse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Close the listening socket: connect() gets ECONNREFUSED until the fault is cleared.
    Refuse,
    /// Answer the whole request with this status, never contacting the upstream.
    Status {
        status: u16,
        /// Raw body; default: an Elasticsearch-shaped `{"error":{..},"status":N}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
    },
    /// Hold the request for `ms`, then forward it (if the client is still there) and answer.
    Delay {
        ms: u64,
        /// Forward first (the upstream applies the write), then hold the answer.
        #[serde(default)]
        after_upstream: bool,
        /// After the delay, close the connection instead of answering.
        #[serde(default)]
        drop: bool,
    },
    /// Read the request, then write part of a response and reset the connection.
    Reset {
        /// Forward first (the upstream applies the write) and cut its real answer.
        #[serde(default)]
        after_upstream: bool,
        /// Where the answer is cut: in the headers (default) or in the body.
        #[serde(default)]
        at: CutAt,
    },
    /// Forward, then rewrite the `_bulk` answer so chosen items are rejected.
    Items {
        status: u16,
        /// Each item is chosen with this probability (seeded RNG).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fraction: Option<f64>,
        /// Items at positions N-1, 2N-1, ... of each response are chosen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        every: Option<u64>,
        /// `error.type` of rewritten items; default by status (429, 503).
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        error_type: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutAt {
    #[default]
    Headers,
    Body,
}

impl CutAt {
    pub fn name(self) -> &'static str {
        match self {
            CutAt::Headers => "headers",
            CutAt::Body => "body",
        }
    }
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Refuse => FaultKind::Refuse,
            Fault::Status { .. } => FaultKind::Status,
            Fault::Delay { .. } => FaultKind::Delay,
            Fault::Reset { .. } => FaultKind::Reset,
            Fault::Items { .. } => FaultKind::Items,
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Fault::Refuse | Fault::Reset { .. } => Ok(()),
            Fault::Status { status, .. } if !(400..=599).contains(status) => {
                Err(format!("status must be 400..=599, got {status}"))
            }
            Fault::Status { .. } => Ok(()),
            Fault::Delay { ms, .. } if *ms > 3_600_000 => Err("ms must be at most 3600000".into()),
            Fault::Delay { .. } => Ok(()),
            Fault::Items { status, .. } if !(400..=599).contains(status) => {
                Err(format!("status must be 400..=599, got {status}"))
            }
            Fault::Items {
                status, error_type, ..
            } if error_type.is_none() && !matches!(status, 429 | 503) => Err(format!(
                "give a \"type\" for item status {status} (defaults exist for 429 and 503)"
            )),
            Fault::Items { .. } => self.item_fault().map(|_| ()),
        }
    }

    /// The item rewrite this fault describes (`None` for other kinds).
    pub fn item_fault(&self) -> Result<ItemFault, String> {
        let Fault::Items {
            status,
            fraction,
            every,
            error_type,
            reason,
        } = self
        else {
            return Err("not an items fault".into());
        };
        let pick = match (fraction, every) {
            (Some(f), None) if (0.0..=1.0).contains(f) => Pick::Fraction(*f),
            (Some(f), None) => return Err(format!("fraction must be within 0..=1, got {f}")),
            (None, Some(0)) => return Err("every must be at least 1".into()),
            (None, Some(n)) => Pick::Every(*n),
            _ => return Err("give exactly one of \"fraction\" and \"every\"".into()),
        };
        let error_type = error_type.clone().unwrap_or_else(|| {
            match status {
                503 => "unavailable_shards_exception",
                _ => "es_rejected_execution_exception",
            }
            .to_string()
        });
        Ok(ItemFault {
            status: *status,
            error_type,
            reason: reason.clone().unwrap_or_else(|| "injected".into()),
            pick,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Refuse,
    Status,
    Delay,
    Reset,
    Items,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Refuse,
        FaultKind::Status,
        FaultKind::Delay,
        FaultKind::Reset,
        FaultKind::Items,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Refuse => "refuse",
            FaultKind::Status => "status",
            FaultKind::Delay => "delay",
            FaultKind::Reset => "reset",
            FaultKind::Items => "items",
        }
    }
}

/// A fault plus the options every kind accepts: `times`, `path_prefix` and `seed`.
/// Unknown keys are refused, so a typo never silently turns into pass-through.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSpec {
    #[serde(flatten)]
    pub fault: Fault,
    /// Apply to the next N matching requests only, then pass through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Only requests whose path starts with this are affected (e.g. "/_bulk").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Seed for this fault's RNG (default: the proxy's `--seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl FaultSpec {
    pub fn from_value(value: Value) -> Result<FaultSpec, String> {
        let Value::Object(mut map) = value else {
            return Err("a fault is a JSON object with a \"kind\"".into());
        };
        let times = match map.remove("times") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Some(n),
                _ => return Err("times must be an integer >= 1".into()),
            },
        };
        let path_prefix = match map.remove("path_prefix") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if p.starts_with('/') => Some(p),
            Some(_) => return Err("path_prefix must be a string starting with '/'".into()),
        };
        let seed = match map.remove("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("seed must be an unsigned integer")?),
        };
        let fault: Fault =
            serde_json::from_value(Value::Object(map)).map_err(|e| format!("bad fault: {e}"))?;
        fault.validate()?;
        if fault == Fault::Refuse && (times.is_some() || path_prefix.is_some()) {
            return Err(
                "refuse closes the listening socket: it takes no times or path_prefix \
                 (use a script to bound it in time)"
                    .into(),
            );
        }
        Ok(FaultSpec {
            fault,
            times,
            path_prefix,
            seed,
        })
    }

    /// Does the fault apply to a request for `path`? Without a `path_prefix`, every request
    /// except that `items` faults only take `_bulk` requests (nothing else has items).
    pub fn matches(&self, path: &str) -> bool {
        match (&self.path_prefix, &self.fault) {
            (Some(prefix), _) => path.starts_with(prefix.as_str()),
            (None, Fault::Items { .. }) => path.ends_with("/_bulk"),
            (None, _) => true,
        }
    }
}

impl<'de> Deserialize<'de> for FaultSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        FaultSpec::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// One step of a schedule: at `at_ms` after the schedule starts, set `fault` (null = clear).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    pub at_ms: u64,
    pub fault: Option<FaultSpec>,
}

/// Parse a schedule (a JSON list of steps); steps are returned in time order.
pub fn parse_script(bytes: &[u8]) -> Result<Vec<ScriptStep>, String> {
    let mut steps: Vec<ScriptStep> =
        serde_json::from_slice(bytes).map_err(|e| format!("bad script: {e}"))?;
    steps.sort_by_key(|s| s.at_ms);
    Ok(steps)
}

/// How rewritten items are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// Each item independently with this probability (seeded RNG, in item order).
    Fraction(f64),
    /// Positions N-1, 2N-1, ... of each response (every Nth item).
    Every(u64),
}

/// A validated `items` fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFault {
    pub status: u16,
    pub error_type: String,
    pub reason: String,
    pub pick: Pick,
}

/// The RNG of the `n`-th request a fault applies to: decisions depend only on the seed and
/// on `n`, not on how concurrent requests interleave their completion.
pub fn request_rng(seed: u64, n: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A rewritten `_bulk` answer and the positions of the items that were turned into errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    pub body: Vec<u8>,
    pub positions: Vec<usize>,
}

/// Rewrite a `_bulk` response body: the chosen items keep their action and position (and
/// `_index` / `_id` when present) but get `status` and an `error` instead of their result;
/// `errors` becomes true. The rest of the document is left as it was.
///
/// Returns `None` when the body is not a JSON object with an `items` array (left untouched).
/// With no item chosen the body is returned byte for byte.
pub fn rewrite_bulk_items(body: &[u8], fault: &ItemFault, rng: &mut impl Rng) -> Option<Rewritten> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let root = doc.as_object_mut()?;
    let items = root.get_mut("items")?.as_array_mut()?;
    let mut positions = Vec::new();
    for (i, item) in items.iter_mut().enumerate() {
        let chosen = match fault.pick {
            Pick::Fraction(p) => rng.random_bool(p),
            Pick::Every(n) => (i as u64 + 1).is_multiple_of(n),
        };
        if !chosen {
            continue;
        }
        let Some(actions) = item.as_object_mut() else {
            continue;
        };
        // One key per item: the action name ("index", "delete", ...).
        let Some(result) = actions.values_mut().next() else {
            continue;
        };
        let mut rejected = Map::new();
        if let Some(old) = result.as_object() {
            for key in ["_index", "_id"] {
                if let Some(v) = old.get(key) {
                    rejected.insert(key.to_string(), v.clone());
                }
            }
        }
        rejected.insert("status".into(), json!(fault.status));
        rejected.insert(
            "error".into(),
            json!({"type": fault.error_type, "reason": fault.reason}),
        );
        *result = Value::Object(rejected);
        positions.push(i);
    }
    if positions.is_empty() {
        return Some(Rewritten {
            body: body.to_vec(),
            positions,
        });
    }
    root.insert("errors".into(), Value::Bool(true));
    let body = serde_json::to_vec(&doc).ok()?;
    Some(Rewritten { body, positions })
}

/// Elasticsearch's whole-request error shape: `{"error":{"root_cause":[..],"type":..,
/// "reason":..},"status":N}`, with a type that fits the status.
pub fn default_error_body(status: u16) -> String {
    let (error_type, reason) = match status {
        400 => (
            "action_request_validation_exception",
            "Validation Failed: 1: injected by fault-proxy;",
        ),
        401 => (
            "security_exception",
            "injected: missing authentication credentials for REST request [/_bulk]",
        ),
        403 => (
            "security_exception",
            "injected: action [indices:data/write/bulk] is unauthorized",
        ),
        413 => (
            "content_too_long_exception",
            "injected: request content is too long",
        ),
        429 => (
            "es_rejected_execution_exception",
            "injected: rejected execution of coordinating operation",
        ),
        503 => (
            "cluster_block_exception",
            "injected: blocked by: [SERVICE_UNAVAILABLE/2/no master];",
        ),
        _ => ("fault_proxy_injected_exception", "injected by fault-proxy"),
    };
    json!({
        "error": {
            "root_cause": [{"type": error_type, "reason": reason}],
            "type": error_type,
            "reason": reason,
        },
        "status": status,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTERED: &str = r#"{"errors":false,"items":[{"index":{"status":201}},{"index":{"status":201}},{"delete":{"status":200}},{"index":{"status":201}},{"index":{"status":201}},{"index":{"status":201}}]}"#;

    fn every(n: u64, status: u16) -> ItemFault {
        Fault::Items {
            status,
            fraction: None,
            every: Some(n),
            error_type: None,
            reason: None,
        }
        .item_fault()
        .unwrap()
    }

    fn fraction(f: f64) -> ItemFault {
        Fault::Items {
            status: 429,
            fraction: Some(f),
            every: None,
            error_type: None,
            reason: None,
        }
        .item_fault()
        .unwrap()
    }

    fn statuses(body: &[u8]) -> Vec<u64> {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                item.as_object().unwrap().values().next().unwrap()["status"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn every_nth_item_is_rejected_in_place() {
        let out = rewrite_bulk_items(FILTERED.as_bytes(), &every(2, 429), &mut request_rng(0, 0))
            .unwrap();
        assert_eq!(out.positions, vec![1, 3, 5]);
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["errors"], json!(true));
        assert_eq!(statuses(&out.body), vec![201, 429, 200, 429, 201, 429]);
        assert_eq!(
            v["items"][1],
            json!({"index": {"status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "injected"}}})
        );
        // The action name of each item is kept (item 2 is a delete, untouched).
        assert_eq!(v["items"][2], json!({"delete": {"status": 200}}));
    }

    #[test]
    fn every_one_rejects_all_and_503_has_its_own_type() {
        let out = rewrite_bulk_items(FILTERED.as_bytes(), &every(1, 503), &mut request_rng(0, 0))
            .unwrap();
        assert_eq!(out.positions, (0..6).collect::<Vec<_>>());
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["items"][2]["delete"]["status"], json!(503));
        assert_eq!(
            v["items"][2]["delete"]["error"]["type"],
            json!("unavailable_shards_exception")
        );
    }

    #[test]
    fn every_larger_than_the_batch_leaves_the_body_byte_for_byte() {
        let out = rewrite_bulk_items(FILTERED.as_bytes(), &every(7, 429), &mut request_rng(0, 0))
            .unwrap();
        assert!(out.positions.is_empty());
        assert_eq!(out.body, FILTERED.as_bytes());
    }

    #[test]
    fn full_responses_keep_index_and_id_and_drop_the_result() {
        let body = r#"{"took":5,"errors":false,"items":[{"index":{"_index":"a","_id":"1","_version":3,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}}]}"#;
        let out =
            rewrite_bulk_items(body.as_bytes(), &every(1, 429), &mut request_rng(0, 0)).unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["took"], json!(5));
        assert_eq!(
            v["items"][0]["index"],
            json!({"_index": "a", "_id": "1", "status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "injected"}})
        );
    }

    #[test]
    fn fraction_is_deterministic_per_seed_and_request() {
        let items: Vec<String> = (0..64)
            .map(|_| r#"{"index":{"status":201}}"#.into())
            .collect();
        let body = format!(r#"{{"errors":false,"items":[{}]}}"#, items.join(","));
        let run = |seed, n| {
            rewrite_bulk_items(body.as_bytes(), &fraction(0.3), &mut request_rng(seed, n))
                .unwrap()
                .positions
        };
        let a = run(42, 0);
        assert_eq!(a, run(42, 0));
        assert_ne!(a, run(42, 1), "the next request draws other items");
        assert_ne!(a, run(43, 0), "another seed draws other items");
        assert!(a.len() > 5 && a.len() < 35, "about 30% of 64: {}", a.len());
    }

    #[test]
    fn fraction_bounds() {
        let none = rewrite_bulk_items(FILTERED.as_bytes(), &fraction(0.0), &mut request_rng(1, 0))
            .unwrap();
        assert!(none.positions.is_empty());
        let all = rewrite_bulk_items(FILTERED.as_bytes(), &fraction(1.0), &mut request_rng(1, 0))
            .unwrap();
        assert_eq!(all.positions.len(), 6);
    }

    #[test]
    fn non_bulk_bodies_are_left_alone() {
        let f = every(1, 429);
        let mut rng = request_rng(0, 0);
        assert!(rewrite_bulk_items(b"<html>gateway</html>", &f, &mut rng).is_none());
        assert!(
            rewrite_bulk_items(br#"{"error":{"type":"x"},"status":400}"#, &f, &mut rng).is_none()
        );
        assert!(rewrite_bulk_items(b"[1,2]", &f, &mut rng).is_none());
        // An empty item list is a bulk answer with nothing to choose.
        let empty = rewrite_bulk_items(br#"{"items":[]}"#, &f, &mut rng).unwrap();
        assert!(empty.positions.is_empty());
    }

    #[test]
    fn specs_parse_with_common_options() {
        let spec = FaultSpec::from_value(json!({
            "kind": "items", "status": 429, "every": 3, "times": 2, "path_prefix": "/_bulk"
        }))
        .unwrap();
        assert_eq!(spec.times, Some(2));
        assert!(spec.matches("/_bulk"));
        assert!(!spec.matches("/_cluster/health"));
        assert_eq!(spec.fault.item_fault().unwrap().pick, Pick::Every(3));

        let spec =
            FaultSpec::from_value(json!({"kind": "items", "status": 503, "fraction": 1})).unwrap();
        assert!(spec.matches("/_bulk") && spec.matches("/logs/_bulk"));
        assert!(
            !spec.matches("/_cluster/health"),
            "items faults take _bulk requests only"
        );

        let spec = FaultSpec::from_value(json!({"kind": "status", "status": 413})).unwrap();
        assert!(spec.matches("/anything"));
        // Serialises back to the same flat shape (GET /fault).
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"kind": "status", "status": 413})
        );

        let spec = FaultSpec::from_value(json!({"kind": "refuse"})).unwrap();
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"kind": "refuse"})
        );

        let spec: FaultSpec = serde_json::from_str(r#"{"kind":"reset","at":"body"}"#).unwrap();
        assert_eq!(
            spec.fault,
            Fault::Reset {
                after_upstream: false,
                at: CutAt::Body
            }
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in [
            json!({"kind": "items", "status": 429, "fracton": 0.3}),
            json!({"kind": "items", "status": 429}),
            json!({"kind": "items", "status": 429, "fraction": 0.3, "every": 2}),
            json!({"kind": "items", "status": 429, "fraction": 1.5}),
            json!({"kind": "items", "status": 429, "every": 0}),
            json!({"kind": "items", "status": 400, "every": 2}),
            json!({"kind": "status", "status": 200}),
            json!({"kind": "refuse", "times": 1}),
            json!({"kind": "delay", "ms": 10, "times": 0}),
            json!({"kind": "teleport"}),
            json!({"kind": "status", "status": 429, "path_prefix": "_bulk"}),
            json!("refuse"),
        ] {
            assert!(FaultSpec::from_value(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn scripts_are_sorted_and_allow_null_steps() {
        let steps =
            parse_script(br#"[{"at_ms":500,"fault":null},{"at_ms":0,"fault":{"kind":"refuse"}}]"#)
                .unwrap();
        assert_eq!(steps[0].at_ms, 0);
        assert_eq!(steps[0].fault.as_ref().unwrap().fault, Fault::Refuse);
        assert_eq!(steps[1].fault, None);
        assert!(parse_script(br#"[{"at_ms":0,"fault":{"kind":"nope"}}]"#).is_err());
        assert!(parse_script(br#"{"at_ms":0}"#).is_err());
    }

    #[test]
    fn default_error_bodies_are_elasticsearch_shaped() {
        for (status, ty) in [
            (400, "action_request_validation_exception"),
            (413, "content_too_long_exception"),
            (429, "es_rejected_execution_exception"),
            (401, "security_exception"),
        ] {
            let v: Value = serde_json::from_str(&default_error_body(status)).unwrap();
            assert_eq!(v["status"], json!(status));
            assert_eq!(v["error"]["type"], json!(ty));
            assert_eq!(v["error"]["root_cause"][0]["type"], json!(ty));
        }
    }
}
