//! The engine's nodes: which one takes the next request (round robin over the nodes that are
//! up), which are down and when each is probed again, and the per-node metrics. The
//! decisions are pure functions on literal states (`pick`, `after`, `due_for_probe`); `Nodes`
//! holds the shared state and applies them. The HTTP side is in client.rs.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use url::Url;

use crate::{backoff::EventBackoff, metrics as m};

/// First and longest wait before a down node is probed again (doubling in between). One
/// small GET every 10 s to a dead node costs nothing; a node back is used within 10 s.
pub const PROBE_BACKOFF: EventBackoff = EventBackoff {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(10),
};

/// One node: where its endpoints are, and its name in metrics and logs.
#[derive(Debug, Clone)]
pub struct Node {
    /// `host:port`: never the credentials or the path.
    pub label: String,
    pub bulk_url: Url,
    pub health_url: Url,
}

impl Node {
    /// A node from its base URL; `filter_path` is the `_bulk` answer's filter.
    pub fn new(base: &Url, filter_path: &str) -> Node {
        let mut bulk_url = base.join("_bulk").expect("joining a path to a URL");
        bulk_url
            .query_pairs_mut()
            .append_pair("filter_path", filter_path);
        // `local`: answered from the node's own cluster state, so a node cut off from the
        // cluster manager still says it is alive; `GET /` is refused by some distributions
        // (405 on the Elasticsearch test zip).
        let health_url = base
            .join("_cluster/health?local=true")
            .expect("joining a path to a URL");
        Node {
            label: label(base),
            bulk_url,
            health_url,
        }
    }
}

/// `host:port` of a base URL (the scheme's port when none is given).
pub fn label(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// What the worker believes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Failed `failures` times in a row; probed again from `next_probe` on.
    Down { failures: i32, next_probe: Instant },
}

/// What one answer (or its absence) says about the node, not about the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The node answered: it is up, whatever it said about the events.
    Answered,
    /// 429 on the whole request: the node is alive but busy. The request goes to another
    /// node; this one is not marked down (the cluster's backpressure usually covers every
    /// node, and marking it down would pile its share onto the others).
    Throttled,
    /// Refused connection, timeout, reset, 5xx on the whole request: the node is down.
    Failed,
}

/// The verdict from an HTTP status (`None`: no answer at all).
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        None | Some(500..=599) => Verdict::Failed,
        Some(429) => Verdict::Throttled,
        Some(_) => Verdict::Answered,
    }
}

/// The node for the next try of a request: round robin from `cursor` over the nodes that are
/// up and not yet `tried` by this request; if none is up, the untried down node whose probe
/// is due first (the request doubles as its probe, so one node alone behaves as before:
/// always tried). None once every node was tried.
pub fn pick(health: &[Health], cursor: usize, tried: &[usize]) -> Option<usize> {
    let n = health.len();
    let untried = |i: &usize| !tried.contains(i);
    (0..n)
        .map(|k| (cursor + k) % n)
        .filter(untried)
        .find(|&i| health[i] == Health::Up)
        .or_else(|| {
            (0..n)
                .filter(untried)
                .min_by_key(|&i| match health[i] {
                    Health::Up => None,
                    Health::Down { next_probe, .. } => Some(next_probe),
                })
        })
}

/// A node's health after a verdict at `now`: up when it answered, down with a growing probe
/// delay after each failure; a throttled node keeps its state.
pub fn after(h: Health, v: Verdict, now: Instant, backoff: &EventBackoff) -> Health {
    match (v, h) {
        (Verdict::Answered, _) => Health::Up,
        (Verdict::Throttled, h) => h,
        (Verdict::Failed, Health::Up) => Health::Down {
            failures: 1,
            next_probe: now + backoff.ceiling(1, 0),
        },
        (Verdict::Failed, Health::Down { failures, .. }) => {
            let failures = failures.saturating_add(1);
            Health::Down {
                failures,
                next_probe: now + backoff.ceiling(failures, 0),
            }
        }
    }
}

/// The down nodes whose probe is due at `now`.
pub fn due_for_probe(health: &[Health], now: Instant) -> Vec<usize> {
    health
        .iter()
        .enumerate()
        .filter_map(|(i, h)| match h {
            Health::Down { next_probe, .. } if *next_probe <= now => Some(i),
            _ => None,
        })
        .collect()
}

/// Addresses from a `GET _nodes/http` answer (`nodes.*.http.publish_address`, either
/// `ip:port` or `hostname/ip:port`), as `host:port`.
pub fn published_addresses(answer: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = answer["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|nodes| nodes.values())
        .filter_map(|n| n["http"]["publish_address"].as_str())
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .filter(|a| !a.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

struct State {
    nodes: Vec<Node>,
    health: Vec<Health>,
    cursor: usize,
}

/// The nodes of one cluster and what the worker believes of each; shared by every request.
pub struct Nodes {
    state: Mutex<State>,
}

impl Nodes {
    /// All nodes start up: the first request to a dead one marks it down.
    pub fn new(nodes: Vec<Node>) -> Nodes {
        assert!(!nodes.is_empty(), "at least one engine node");
        for n in &nodes {
            set_up_gauge(&n.label, true);
        }
        let health = vec![Health::Up; nodes.len()];
        Nodes {
            state: Mutex::new(State {
                nodes,
                health,
                cursor: 0,
            }),
        }
    }

    /// The node for the next try of a request (see [`pick`]); the cursor moves on.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, Node)> {
        let mut s = self.state.lock().unwrap();
        let i = pick(&s.health, s.cursor, tried)?;
        s.cursor = (i + 1) % s.nodes.len();
        Some((i, s.nodes[i].clone()))
    }

    /// Record a verdict on node `i`; logs and metrics when it goes down or comes back.
    pub fn record(&self, i: usize, v: Verdict, why: &str) {
        let mut s = self.state.lock().unwrap();
        let before = s.health[i];
        let now = after(before, v, Instant::now(), &PROBE_BACKOFF);
        s.health[i] = now;
        let node = &s.nodes[i].label;
        match (before, now) {
            (Health::Up, Health::Down { next_probe, .. }) => {
                set_up_gauge(node, false);
                tracing::warn!(node = %node, error = %why, probe_in_ms = next_probe.saturating_duration_since(Instant::now()).as_millis() as u64, "engine node down; requests go to the other nodes");
            }
            (Health::Down { .. }, Health::Up) => {
                set_up_gauge(node, true);
                tracing::info!(node = %node, "engine node up again");
            }
            _ => {}
        }
    }

    /// The down nodes whose probe is due now.
    pub fn due_for_probe(&self) -> Vec<(usize, Node)> {
        let s = self.state.lock().unwrap();
        due_for_probe(&s.health, Instant::now())
            .into_iter()
            .map(|i| (i, s.nodes[i].clone()))
            .collect()
    }

    /// Add the nodes not known yet (discovery); returns the labels added.
    pub fn add(&self, nodes: Vec<Node>) -> Vec<String> {
        let mut s = self.state.lock().unwrap();
        let mut added = Vec::new();
        for n in nodes {
            if s.nodes.iter().all(|k| k.label != n.label) {
                set_up_gauge(&n.label, true);
                added.push(n.label.clone());
                s.nodes.push(n);
                s.health.push(Health::Up);
            }
        }
        added
    }

    /// How many nodes are up, of how many.
    pub fn up_count(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        let up = s.health.iter().filter(|h| **h == Health::Up).count();
        (up, s.nodes.len())
    }
}

fn set_up_gauge(node: &str, up: bool) {
    metrics::gauge!(m::ENGINE_NODE_UP, "node" => node.to_string()).set(if up { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Health = Health::Up;

    fn down(at: Instant, secs: u64) -> Health {
        Health::Down {
            failures: 1,
            next_probe: at + Duration::from_secs(secs),
        }
    }

    #[test]
    fn pick_goes_round_robin_over_the_nodes_that_are_up() {
        let t = Instant::now();
        let h = [UP, down(t, 5), UP];
        assert_eq!(pick(&h, 0, &[]), Some(0));
        assert_eq!(pick(&h, 1, &[]), Some(2), "skips the down node");
        assert_eq!(pick(&h, 2, &[]), Some(2));
        assert_eq!(pick(&h, 3, &[]), Some(0), "the cursor wraps");
    }

    #[test]
    fn pick_sends_a_retry_to_another_node_and_stops_when_all_were_tried() {
        let t = Instant::now();
        let h = [UP, UP, UP];
        assert_eq!(pick(&h, 0, &[0]), Some(1));
        assert_eq!(pick(&h, 0, &[0, 1]), Some(2));
        assert_eq!(pick(&h, 0, &[0, 1, 2]), None);
        // The up ones first, then the down one as the last resort.
        let h = [UP, down(t, 5), UP];
        assert_eq!(pick(&h, 0, &[0]), Some(2));
        assert_eq!(pick(&h, 0, &[0, 2]), Some(1));
    }

    #[test]
    fn with_every_node_down_the_first_due_for_a_probe_is_tried() {
        let t = Instant::now();
        let h = [down(t, 9), down(t, 2), down(t, 5)];
        assert_eq!(pick(&h, 0, &[]), Some(1));
        assert_eq!(pick(&h, 0, &[1]), Some(2));
        assert_eq!(pick(&h, 0, &[1, 2]), Some(0));
        // One node alone is always tried, up or down.
        assert_eq!(pick(&[down(t, 30)], 0, &[]), Some(0));
        assert_eq!(pick(&[UP], 5, &[]), Some(0));
    }

    #[test]
    fn a_failure_marks_down_and_each_further_one_doubles_the_probe_delay() {
        let t = Instant::now();
        let b = PROBE_BACKOFF;
        let h1 = after(UP, Verdict::Failed, t, &b);
        assert_eq!(
            h1,
            Health::Down {
                failures: 1,
                next_probe: t + Duration::from_millis(500)
            }
        );
        let h2 = after(h1, Verdict::Failed, t, &b);
        assert_eq!(
            h2,
            Health::Down {
                failures: 2,
                next_probe: t + Duration::from_secs(1)
            }
        );
        let mut h = h2;
        for _ in 0..20 {
            h = after(h, Verdict::Failed, t, &b);
        }
        assert!(
            matches!(h, Health::Down { next_probe, .. } if next_probe == t + Duration::from_secs(10)),
            "capped: {h:?}"
        );
    }

    #[test]
    fn an_answer_brings_a_node_up_and_a_429_changes_nothing() {
        let t = Instant::now();
        let b = PROBE_BACKOFF;
        assert_eq!(after(down(t, 3), Verdict::Answered, t, &b), UP);
        assert_eq!(after(UP, Verdict::Answered, t, &b), UP);
        assert_eq!(after(UP, Verdict::Throttled, t, &b), UP);
        assert_eq!(after(down(t, 3), Verdict::Throttled, t, &b), down(t, 3));
    }

    #[test]
    fn verdicts_from_statuses() {
        assert_eq!(verdict(None), Verdict::Failed);
        assert_eq!(verdict(Some(503)), Verdict::Failed);
        assert_eq!(verdict(Some(500)), Verdict::Failed);
        assert_eq!(verdict(Some(429)), Verdict::Throttled);
        for s in [200, 400, 401, 403, 413] {
            assert_eq!(verdict(Some(s)), Verdict::Answered, "{s}");
        }
    }

    #[test]
    fn probes_are_due_for_down_nodes_past_their_time() {
        let t = Instant::now();
        let h = [UP, down(t, 0), down(t, 10)];
        assert_eq!(due_for_probe(&h, t), vec![1]);
        assert_eq!(due_for_probe(&h, t + Duration::from_secs(10)), vec![1, 2]);
        assert_eq!(due_for_probe(&[UP, UP], t), Vec::<usize>::new());
    }

    #[test]
    fn labels_are_host_and_port_without_credentials() {
        let u = Url::parse("https://user:s3cret@search.example:9243/prefix/").unwrap();
        assert_eq!(label(&u), "search.example:9243");
        assert_eq!(label(&Url::parse("http://10.0.0.1").unwrap()), "10.0.0.1:80");
        let n = Node::new(&u, "errors");
        assert_eq!(n.bulk_url.path(), "/prefix/_bulk");
        assert_eq!(n.health_url.path(), "/prefix/_cluster/health");
    }

    #[test]
    fn published_addresses_drop_the_host_name_part() {
        let answer = serde_json::json!({"nodes": {
            "a": {"http": {"publish_address": "127.0.0.1:9201"}},
            "b": {"http": {"publish_address": "node-b/127.0.0.1:9202"}},
            "c": {"name": "no http"},
            "d": {"http": {"publish_address": "127.0.0.1:9201"}}
        }});
        assert_eq!(
            published_addresses(&answer),
            vec!["127.0.0.1:9201", "127.0.0.1:9202"]
        );
        assert!(published_addresses(&serde_json::json!({})).is_empty());
    }
}
