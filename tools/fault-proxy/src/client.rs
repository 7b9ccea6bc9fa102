//! The control API seen from a client: what tests, the labs and the soak call to set,
//! clear and read faults and scripts, and to read the counters.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

#[derive(Clone)]
pub struct ControlClient {
    /// `http://ADDR` of the control API.
    pub url: String,
    http: reqwest::Client,
}

impl ControlClient {
    pub fn new(url: &str) -> ControlClient {
        ControlClient {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// One call; its JSON answer, or an error naming the path for a non-2xx status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.context("fault-proxy control API")?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("fault-proxy {path}: {status} {v}");
        }
        Ok(v)
    }

    /// `PUT /fault`: the fault in force from now on; answers what was set.
    pub async fn set(&self, fault: &Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, "/fault", Some(fault)).await
    }

    /// `DELETE /fault`: pass everything through again.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.call(Method::DELETE, "/fault", None).await.map(|_| ())
    }

    /// `GET /fault`: `{"fault": null}` or the fault with its budget.
    pub async fn fault(&self) -> anyhow::Result<Value> {
        self.call(Method::GET, "/fault", None).await
    }

    /// Whether a fault is still in force (a `times` fault clears itself once used up).
    pub async fn active(&self) -> anyhow::Result<bool> {
        Ok(!self.fault().await?["fault"].is_null())
    }

    /// `GET /stats`: the counters.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        self.call(Method::GET, "/stats", None).await
    }

    /// `PUT /script`: run these `{"at_ms": T, "fault": {..} | null}` steps from now.
    pub async fn run_script(&self, steps: &Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, "/script", Some(steps)).await
    }

    /// `GET /script`: whether a script runs, and how far it got.
    pub async fn script(&self) -> anyhow::Result<Value> {
        self.call(Method::GET, "/script", None).await
    }
}
