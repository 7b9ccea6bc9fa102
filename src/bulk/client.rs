//! The HTTP side of `_bulk`: one reqwest client with auth, TLS and a request timeout, over
//! the cluster's nodes (nodes.rs decides which one; a request a node fails goes to another).
//! Transport failures (connect, timeout, reset) become a `RetryAll` outcome here.

use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::{
    classify::{RequestOutcome, bound, classify_response},
    nodes::{Node, Nodes, Verdict, published_addresses, verdict},
};
use crate::{
    config::{Compression, Config},
    contract::{ErrorReason, Op},
    metrics as m,
};

/// Only what classification needs comes back: far smaller responses on success.
const FILTER_PATH: &str = "errors,items.*.status,items.*.error.type,items.*.error.reason";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid CA certificate in {path}: {source}")]
    CaCert {
        path: String,
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
    #[error("invalid credentials: they must be visible ASCII")]
    Credentials,
}

/// How often down nodes are looked at for a due probe, and how often discovery asks.
const PROBE_TICK: Duration = Duration::from_millis(100);
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct BulkClient {
    http: reqwest::Client,
    nodes: Arc<Nodes>,
    /// The first configured URL: scheme and path of nodes found by discovery.
    template: reqwest::Url,
    basic: Option<(String, Option<String>)>,
    timeout: Duration,
    compression: Compression,
}

impl BulkClient {
    pub fn new(cfg: &Config) -> Result<Self, ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &cfg.elasticsearch_api_key {
            let mut v = HeaderValue::from_str(&format!("ApiKey {}", key.expose()))
                .map_err(|_| ClientError::Credentials)?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let basic = cfg.elasticsearch_username.clone().map(|user| {
            let pass = cfg
                .elasticsearch_password
                .as_ref()
                .map(|p| p.expose().to_string());
            (user, pass)
        });
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(cfg.concurrency.max(1) * 2)
            .tcp_nodelay(true)
            .no_proxy();
        if let Some(path) = &cfg.elasticsearch_ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            let cert =
                reqwest::Certificate::from_pem(&pem).map_err(|source| ClientError::CaCert {
                    path: path.display().to_string(),
                    source,
                })?;
            builder = builder.add_root_certificate(cert);
        }
        let nodes = cfg
            .elasticsearch_urls
            .iter()
            .map(|u| Node::new(u, FILTER_PATH))
            .collect();
        Ok(BulkClient {
            http: builder.build()?,
            nodes: Arc::new(Nodes::new(nodes)),
            template: cfg.elasticsearch_urls[0].clone(),
            basic,
            timeout: cfg.request_timeout,
            compression: cfg.bulk_compression,
        })
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.basic {
            Some((user, pass)) => req.basic_auth(user, pass.as_ref()),
            None => req,
        }
    }

    /// Send one bulk body (its events' `ops`, in order); returns the classified outcome and
    /// the request latency. A node that fails the request as a whole (no answer, 5xx, 429)
    /// hands it to the next node, within one OUTBOX_REQUEST_TIMEOUT_SECONDS for all tries;
    /// only when every node failed does the outcome reach the events.
    pub async fn send(&self, body: Vec<u8>, ops: &[Op]) -> (RequestOutcome, Duration) {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let (body, encoding) = match self.compression {
            Compression::None => (Bytes::from(body), "identity"),
            Compression::Gzip => (Bytes::from(gzip(&body)), "gzip"),
        };
        let mut tried = Vec::new();
        let mut last = None;
        while let Some((i, node)) = self.nodes.pick(&tried) {
            tried.push(i);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut req = self
                .authed(self.http.post(node.bulk_url.clone()))
                .header(CONTENT_TYPE, "application/x-ndjson")
                .timeout(left);
            if encoding == "gzip" {
                req = req.header(CONTENT_ENCODING, "gzip");
            }
            metrics::counter!(m::BULK_BODY_BYTES_TOTAL, "encoding" => encoding)
                .increment(body.len() as u64);
            let (status, outcome) = match req.body(body.clone()).send().await {
                Err(e) => (None, transport_failure(&e)),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.bytes().await {
                        Ok(bytes) => (Some(status), classify_response(status, &bytes, ops)),
                        Err(e) => (None, transport_failure(&e)),
                    }
                }
            };
            let v = verdict(status);
            let (label, why) = match (&v, &outcome) {
                (Verdict::Answered, _) => ("ok".to_string(), String::new()),
                (_, RequestOutcome::RetryAll { reason, error, .. }) => {
                    (reason.to_string(), error.clone())
                }
                _ => ("other".to_string(), String::new()),
            };
            metrics::counter!(m::ENGINE_NODE_REQUESTS_TOTAL, "node" => node.label.clone(), "outcome" => label)
                .increment(1);
            self.nodes.record(i, v, &why);
            if v == Verdict::Answered {
                return (outcome, started.elapsed());
            }
            last = Some(outcome);
        }
        let outcome = last.unwrap_or_else(|| RequestOutcome::RetryAll {
            reason: ErrorReason::RequestTimeout,
            error: "no engine node answered within OUTBOX_REQUEST_TIMEOUT_SECONDS".into(),
            auth: false,
        });
        (outcome, started.elapsed())
    }

    /// Does one node answer? Up nodes first, each at most once (for /readyz: ready while
    /// at least one node is up).
    pub async fn ping(&self) -> Result<(), String> {
        let mut tried = Vec::new();
        let mut errors = Vec::new();
        while let Some((i, node)) = self.nodes.pick(&tried) {
            tried.push(i);
            match self.probe(&node).await {
                Ok(()) => {
                    self.nodes.record(i, Verdict::Answered, "");
                    return Ok(());
                }
                Err((v, e)) => {
                    self.nodes.record(i, v, &e);
                    errors.push(format!("{}: {e}", node.label));
                }
            }
        }
        Err(errors.join("; "))
    }

    /// One look at a node's health endpoint: Ok when it answers below 500 (a 429 too: the
    /// node is alive, only busy).
    async fn probe(&self, node: &Node) -> Result<(), (Verdict, String)> {
        let resp = self
            .authed(self.http.get(node.health_url.clone()))
            .timeout(Duration::from_secs(3).min(self.timeout))
            .send()
            .await
            .map_err(|e| (Verdict::Failed, describe_transport(&e)))?;
        let status = resp.status().as_u16();
        match verdict(Some(status)) {
            Verdict::Answered | Verdict::Throttled => Ok(()),
            v => Err((v, format!("engine answered {}", resp.status()))),
        }
    }

    /// Probe the down nodes as their backoff falls due, until `stop`; a node that answers
    /// takes requests again.
    pub async fn probe_down_nodes(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (i, node) in self.nodes.due_for_probe() {
                match self.probe(&node).await {
                    Ok(()) => self.nodes.record(i, Verdict::Answered, ""),
                    Err((v, e)) => self.nodes.record(i, v, &e),
                }
            }
        }
    }

    /// Ask a node for the cluster's HTTP addresses (`GET _nodes/http`) at start and every
    /// minute, and add the nodes not known yet (OUTBOX_ELASTICSEARCH_DISCOVERY=nodes). Nodes
    /// are never removed: one that leaves is marked down and probed like any other.
    pub async fn discover_nodes(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(DISCOVERY_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.discover_once().await {
                Ok(added) if !added.is_empty() => {
                    tracing::info!(nodes = ?added, "engine nodes discovered")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "engine node discovery failed; keeping the nodes known"),
            }
        }
    }

    /// One round of discovery; the labels of the nodes added.
    pub async fn discover_once(&self) -> Result<Vec<String>, String> {
        let (_, node) = self.nodes.pick(&[]).ok_or("no engine node")?;
        let mut url = node.health_url.clone();
        url.set_path(&url.path().replace("_cluster/health", "_nodes/http"));
        url.set_query(Some("filter_path=nodes.*.http.publish_address"));
        let resp = self
            .authed(self.http.get(url))
            .timeout(Duration::from_secs(5).min(self.timeout))
            .send()
            .await
            .map_err(|e| describe_transport(&e))?;
        if !resp.status().is_success() {
            return Err(format!("{}: _nodes/http answered {}", node.label, resp.status()));
        }
        let answer: serde_json::Value = resp.json().await.map_err(|e| describe_transport(&e))?;
        let found = published_addresses(&answer)
            .into_iter()
            .filter_map(|addr| {
                let mut base = self.template.clone();
                let (host, port) = addr.rsplit_once(':')?;
                base.set_host(Some(host.trim_matches(['[', ']']))).ok()?;
                base.set_port(Some(port.parse().ok()?)).ok()?;
                Some(Node::new(&base, FILTER_PATH))
            })
            .collect();
        Ok(self.nodes.add(found))
    }

    /// How many nodes are up, of how many.
    pub fn nodes_up(&self) -> (usize, usize) {
        self.nodes.up_count()
    }
}

/// A body gzip-compressed at the fastest level: NDJSON of similar documents shrinks most of
/// the way at level 1, and the worker's CPU is better spent encoding the next chunk.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

fn describe_transport(e: &reqwest::Error) -> String {
    // reqwest errors name the URL, never the credentials (they live in headers).
    bound(crate::error_chain::error_chain(e))
}

fn transport_failure(e: &reqwest::Error) -> RequestOutcome {
    let reason = if e.is_timeout() {
        ErrorReason::RequestTimeout
    } else if e.is_connect() {
        ErrorReason::EngineUnreachable
    } else {
        ErrorReason::ConnectionError
    };
    RequestOutcome::RetryAll {
        reason,
        error: describe_transport(e),
        auth: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips_and_shrinks_ndjson() {
        let line = b"{\"index\":{\"_index\":\"products\",\"_id\":\"1\"}}\n{\"name\":\"x\",\"price\":1}\n";
        let body: Vec<u8> = line.iter().copied().cycle().take(line.len() * 100).collect();
        let packed = gzip(&body);
        assert!(packed.len() * 10 < body.len(), "{} of {}", packed.len(), body.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
