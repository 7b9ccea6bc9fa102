//! The HTTP side of `_bulk`: one reqwest client with auth, TLS and a request timeout.
//! Transport failures (connect, timeout, reset) become a `RetryAll` outcome here.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::classify::{RequestOutcome, bound, classify_response};
use crate::{
    config::Config,
    contract::{ErrorReason, Op},
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

#[derive(Clone)]
pub struct BulkClient {
    http: reqwest::Client,
    bulk_url: reqwest::Url,
    /// `GET /` is refused by some distributions (405 on the ES test zip); health is not.
    health_url: reqwest::Url,
    basic: Option<(String, Option<String>)>,
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
        let base_url = cfg.elasticsearch_url.clone();
        let health_url = base_url
            .join("_cluster/health")
            .expect("joining a path to a URL");
        let mut bulk_url = base_url.join("_bulk").expect("joining a path to a URL");
        bulk_url
            .query_pairs_mut()
            .append_pair("filter_path", FILTER_PATH);
        Ok(BulkClient {
            http: builder.build()?,
            bulk_url,
            health_url,
            basic,
        })
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.basic {
            Some((user, pass)) => req.basic_auth(user, pass.as_ref()),
            None => req,
        }
    }

    /// Send one bulk body (its events' `ops`, in order); returns the classified outcome and
    /// the request latency.
    pub async fn send(&self, body: Vec<u8>, ops: &[Op]) -> (RequestOutcome, Duration) {
        let started = Instant::now();
        let result = self
            .authed(self.http.post(self.bulk_url.clone()))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .send()
            .await;
        let outcome = match result {
            Err(e) => transport_failure(&e),
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(bytes) => classify_response(status, &bytes, ops),
                    Err(e) => transport_failure(&e),
                }
            }
        };
        (outcome, started.elapsed())
    }

    /// Is the engine answering at all? (for /readyz)
    pub async fn ping(&self) -> Result<(), String> {
        let resp = self
            .authed(self.http.get(self.health_url.clone()))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| describe_transport(&e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("engine answered {}", resp.status()))
        }
    }
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
