//! The real engine for a test's assertions (plain HTTP), and the fault proxy in front of it.

use serde_json::Value;

use crate::services::engine_url;

/// The real search engine, over plain HTTP.
#[derive(Clone)]
pub struct Engine {
    pub url: String,
    http: reqwest::Client,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            url: engine_url(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn put_index(&self, index: &str, body: Value) {
        let r = self
            .http
            .put(format!("{}/{index}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "create index {index}: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn put_mapping(&self, index: &str, body: Value) -> reqwest::StatusCode {
        self.http
            .put(format!("{}/{index}/_mapping", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn refresh(&self, index: &str) {
        self.http
            .post(format!("{}/{index}/_refresh", self.url))
            .send()
            .await
            .unwrap();
    }

    /// `_source` and `_version` of a document, None if missing.
    pub async fn get(&self, index: &str, id: &str) -> Option<(Value, i64)> {
        let url = format!("{}/{index}/_doc/{}", self.url, urlencode(id));
        let r = self.http.get(url).send().await.unwrap();
        if r.status() == 404 {
            return None;
        }
        let v: Value = r.json().await.unwrap();
        if v["found"] != Value::Bool(true) {
            return None;
        }
        Some((v["_source"].clone(), v["_version"].as_i64().unwrap()))
    }

    pub async fn count(&self, index: &str) -> i64 {
        self.refresh(index).await;
        let v: Value = self
            .http
            .get(format!("{}/{index}/_count", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["count"].as_i64().unwrap_or(-1)
    }

    /// Every document: id -> (source, version).
    pub async fn all(&self, index: &str) -> std::collections::HashMap<String, (Value, i64)> {
        self.refresh(index).await;
        let body = serde_json::json!({"size": 10000, "version": true, "query": {"match_all": {}}});
        let v: Value = self
            .http
            .post(format!("{}/{index}/_search", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["hits"]["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .map(|h| {
                        (
                            h["_id"].as_str().unwrap().to_string(),
                            (h["_source"].clone(), h["_version"].as_i64().unwrap()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn raw(&self) -> &reqwest::Client {
        &self.http
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The fault proxy (tools/fault-proxy) in front of the tests' engine, in this process; its
/// control calls panic on failure, as a test wants.
pub struct FaultProxy {
    /// What a worker uses as its engine URL.
    pub url: String,
    proxy: fault_proxy::Proxy,
}

impl FaultProxy {
    pub fn start() -> FaultProxy {
        let upstream = engine_url()
            .parse()
            .expect("OUTBOX_TEST_ELASTICSEARCH_URL is a URL");
        let proxy = fault_proxy::Proxy::start(fault_proxy::Options::new(upstream))
            .expect("start the fault proxy");
        FaultProxy {
            url: proxy.url.clone(),
            proxy,
        }
    }

    pub async fn set(&self, fault: Value) {
        self.proxy.control.set(&fault).await.expect("set a fault");
    }

    pub async fn clear(&self) {
        self.proxy.control.clear().await.expect("clear the fault");
    }

    pub async fn stats(&self) -> Value {
        self.proxy.control.stats().await.expect("fault-proxy stats")
    }
}
