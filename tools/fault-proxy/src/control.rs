//! The fault state shared by the proxy and its control API: the current fault (with its
//! `times` budget), the schedule runner, the counters, and the JSON control endpoints.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::faults::{Fault, FaultKind, FaultSpec, ScriptStep, parse_script};

/// How long a control call waits for the listening socket to close or re-open.
const LISTENER_WAIT: Duration = Duration::from_secs(5);

/// Counters, all monotonic.
#[derive(Default)]
pub struct Stats {
    pub connections_accepted: AtomicU64,
    /// Established connections the proxy closed because `refuse` was set.
    pub connections_refused: AtomicU64,
    /// Connections reset mid-response by a `reset` fault.
    pub connections_reset: AtomicU64,
    pub requests_seen: AtomicU64,
    /// Requests sent to the upstream (whatever came back).
    pub forwarded: AtomicU64,
    /// Forwarded requests that got no answer (connect error, timeout, ...): answered 502.
    pub upstream_errors: AtomicU64,
    /// Delayed requests whose client left before the delay ended (not forwarded).
    pub client_gone: AtomicU64,
    pub items_rewritten: AtomicU64,
    faults: [AtomicU64; FaultKind::ALL.len()],
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_fault(&self, kind: FaultKind) {
        Stats::bump(&self.faults[kind as usize]);
    }

    fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut by_kind = serde_json::Map::new();
        for kind in FaultKind::ALL {
            by_kind.insert(kind.name().into(), json!(get(&self.faults[kind as usize])));
        }
        json!({
            "requests_seen": get(&self.requests_seen),
            "forwarded": get(&self.forwarded),
            "upstream_errors": get(&self.upstream_errors),
            "client_gone": get(&self.client_gone),
            "faults_injected": by_kind,
            "items_rewritten": get(&self.items_rewritten),
            "connections_accepted": get(&self.connections_accepted),
            "connections_refused": get(&self.connections_refused),
            "connections_reset": get(&self.connections_reset),
        })
    }
}

/// The fault in force.
struct Active {
    spec: FaultSpec,
    /// Requests it may still be applied to (`None`: until replaced or cleared).
    remaining: Option<u64>,
    /// Requests it was applied to so far; also numbers the per-request RNGs.
    applied: u64,
    seed: u64,
}

/// What to do to one request.
pub struct Decision {
    pub fault: Fault,
    /// Seed and sequence number of this application, for [`crate::faults::request_rng`].
    pub seed: u64,
    pub seq: u64,
}

struct ScriptRun {
    handle: JoinHandle<()>,
    steps: usize,
    applied: Arc<AtomicUsize>,
    started: Instant,
}

pub struct Shared {
    pub stats: Stats,
    seed: u64,
    current: Mutex<Option<Active>>,
    /// Wanted state of the listening socket: true while a `refuse` fault is set.
    refuse: watch::Sender<bool>,
    /// Actual state of the listening socket, kept by the accept loop.
    listening: watch::Sender<bool>,
    script: Mutex<Option<ScriptRun>>,
}

impl Shared {
    pub fn new(seed: u64) -> Arc<Shared> {
        Arc::new(Shared {
            stats: Stats::default(),
            seed,
            current: Mutex::new(None),
            refuse: watch::Sender::new(false),
            listening: watch::Sender::new(false),
            script: Mutex::new(None),
        })
    }

    /// The fault for a request to `path`, if any; spends one unit of its `times` budget.
    pub fn decide(&self, path: &str) -> Option<Decision> {
        let mut current = self.current.lock().expect("fault state lock");
        let active = current.as_mut()?;
        if !active.spec.matches(path) {
            return None;
        }
        let decision = Decision {
            fault: active.spec.fault.clone(),
            seed: active.seed,
            seq: active.applied,
        };
        active.applied += 1;
        if let Some(left) = active.remaining.as_mut() {
            *left -= 1;
            if *left == 0 {
                tracing::info!(
                    kind = active.spec.fault.kind().name(),
                    "fault used up, passing through"
                );
                *current = None;
            }
        }
        Some(decision)
    }

    /// Install (or clear, with `None`) the current fault. Its RNG starts afresh from its seed.
    pub fn set_fault(&self, spec: Option<FaultSpec>, origin: &str) {
        let refuse = matches!(&spec, Some(s) if s.fault == Fault::Refuse);
        match &spec {
            Some(s) => tracing::info!(
                origin,
                fault = %serde_json::to_string(s).unwrap_or_default(),
                "fault set"
            ),
            None => tracing::info!(origin, "fault cleared, passing through"),
        }
        *self.current.lock().expect("fault state lock") = spec.map(|spec| Active {
            remaining: spec.times,
            applied: 0,
            seed: spec.seed.unwrap_or(self.seed),
            spec,
        });
        self.refuse.send_replace(refuse);
    }

    fn current_json(&self) -> Value {
        match &*self.current.lock().expect("fault state lock") {
            None => json!({"fault": null}),
            Some(a) => json!({
                "fault": a.spec,
                "remaining": a.remaining,
                "applied": a.applied,
                "seed": a.seed,
            }),
        }
    }

    pub fn refuse_rx(&self) -> watch::Receiver<bool> {
        self.refuse.subscribe()
    }

    pub fn set_listening(&self, listening: bool) {
        self.listening.send_replace(listening);
    }

    /// Wait until the listening socket matches the wanted state (closed while refusing).
    async fn settle_listener(&self) -> bool {
        let want_open = !*self.refuse.borrow();
        let mut rx = self.listening.subscribe();
        tokio::time::timeout(LISTENER_WAIT, rx.wait_for(|open| *open == want_open))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Run a schedule from now, replacing any running one.
    pub fn start_script(self: &Arc<Self>, mut steps: Vec<ScriptStep>) {
        self.stop_script();
        let started = Instant::now();
        let applied = Arc::new(AtomicUsize::new(0));
        let count = steps.len();
        // Steps due now take effect before this returns (steps are in time order).
        let due = steps.iter().take_while(|s| s.at_ms == 0).count();
        for step in steps.drain(..due) {
            self.set_fault(step.fault, "script@0ms");
            applied.fetch_add(1, Ordering::Relaxed);
        }
        let shared = Arc::clone(self);
        let done = Arc::clone(&applied);
        let handle = tokio::spawn(async move {
            for step in steps {
                tokio::time::sleep_until(started + Duration::from_millis(step.at_ms)).await;
                shared.set_fault(step.fault, &format!("script@{}ms", step.at_ms));
                done.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!("script finished");
        });
        tracing::info!(steps = count, "script started");
        *self.script.lock().expect("script lock") = Some(ScriptRun {
            handle,
            steps: count,
            applied,
            started,
        });
    }

    /// Stop the running schedule, if any (the fault it set last stays).
    pub fn stop_script(&self) -> bool {
        match self.script.lock().expect("script lock").take() {
            Some(run) if !run.handle.is_finished() => {
                run.handle.abort();
                tracing::info!("script stopped");
                true
            }
            _ => false,
        }
    }

    fn script_json(&self) -> Value {
        match &*self.script.lock().expect("script lock") {
            None => json!({"running": false, "steps": 0, "applied": 0}),
            Some(run) => json!({
                "running": !run.handle.is_finished(),
                "steps": run.steps,
                "applied": run.applied.load(Ordering::Relaxed),
                "elapsed_ms": run.started.elapsed().as_millis() as u64,
            }),
        }
    }
}

/// `GET/PUT/DELETE /fault`, `GET /stats`, `GET/PUT/DELETE /script`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/fault", get(get_fault).put(put_fault).delete(delete_fault))
        .route("/stats", get(get_stats))
        .route(
            "/script",
            get(get_script).put(put_script).delete(delete_script),
        )
        .with_state(shared)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    reply(StatusCode::BAD_REQUEST, json!({"error": message}))
}

/// Answer once the listening socket reflects the new fault (so a caller can rely on
/// connect() being refused, or accepted again, as soon as it has the answer).
async fn settled(shared: &Shared) -> Response {
    if shared.settle_listener().await {
        reply(StatusCode::OK, shared.current_json())
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the listening socket did not reach the wanted state in time (port taken?)",
                   "state": shared.current_json()}),
        )
    }
}

async fn get_fault(State(shared): State<Arc<Shared>>) -> Response {
    reply(StatusCode::OK, shared.current_json())
}

async fn put_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("invalid JSON: {e}"))
        .and_then(FaultSpec::from_value)
    {
        Ok(spec) => spec,
        Err(e) => return bad_request(e),
    };
    shared.stop_script();
    shared.set_fault(Some(spec), "control");
    settled(&shared).await
}

async fn delete_fault(State(shared): State<Arc<Shared>>) -> Response {
    shared.stop_script();
    shared.set_fault(None, "control");
    settled(&shared).await
}

async fn get_stats(State(shared): State<Arc<Shared>>) -> Response {
    let mut stats = shared.stats.to_json();
    stats["listening"] = json!(*shared.listening.borrow());
    stats["current"] = shared.current_json();
    stats["script"] = shared.script_json();
    reply(StatusCode::OK, stats)
}

async fn get_script(State(shared): State<Arc<Shared>>) -> Response {
    reply(StatusCode::OK, shared.script_json())
}

async fn put_script(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_script(&body) {
        Ok(steps) => {
            shared.start_script(steps);
            reply(StatusCode::OK, shared.script_json())
        }
        Err(e) => bad_request(e),
    }
}

async fn delete_script(State(shared): State<Arc<Shared>>) -> Response {
    let stopped = shared.stop_script();
    reply(StatusCode::OK, json!({"stopped": stopped}))
}
