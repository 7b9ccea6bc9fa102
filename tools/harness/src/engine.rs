//! The real engine for assertions (plain HTTP), and the fault proxy in front of it.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use serde_json::{Value, json};

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
    /// The tests' engine.
    pub fn new() -> Engine {
        Engine::at(&engine_url())
    }

    pub fn at(url: &str) -> Engine {
        Engine {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// An index whose field `n` is a long: a document with a text `n` is a mapping error.
    pub async fn put_index_with_long_n(&self, index: &str) {
        self.put_index(
            index,
            serde_json::json!({"mappings": {"properties": {"n": {"type": "long"}}}}),
        )
        .await
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

    /// Every document: id -> (source, version); none if the index does not exist.
    pub async fn all(&self, index: &str) -> HashMap<String, (Value, i64)> {
        self.documents(index)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Every document of `index`, after a refresh, by scroll: id -> (`_source`, `_version`);
    /// none if the index does not exist.
    pub async fn documents(&self, index: &str) -> anyhow::Result<HashMap<String, (Value, i64)>> {
        let r = self
            .http
            .post(format!("{}/{index}/_refresh", self.url))
            .send()
            .await?;
        if r.status() == 404 {
            return Ok(HashMap::new());
        }
        anyhow::ensure!(r.status().is_success(), "refresh {index}: {}", r.status());
        let mut docs = HashMap::new();
        let mut page: Value = self
            .http
            .post(format!("{}/{index}/_search?scroll=1m", self.url))
            .json(&json!({"size": 1000, "version": true, "sort": ["_doc"],
                          "query": {"match_all": {}}}))
            .send()
            .await?
            .json()
            .await?;
        loop {
            let hits = page["hits"]["hits"]
                .as_array()
                .with_context(|| format!("no hits in the search answer: {page}"))?;
            if hits.is_empty() {
                break;
            }
            for h in hits {
                let id = h["_id"].as_str().context("hit without _id")?.to_string();
                let version = h["_version"].as_i64().context("hit without _version")?;
                docs.insert(id, (h["_source"].clone(), version));
            }
            let scroll_id = page["_scroll_id"].as_str().context("no _scroll_id")?;
            page = self
                .http
                .post(format!("{}/_search/scroll", self.url))
                .json(&json!({"scroll": "1m", "scroll_id": scroll_id}))
                .send()
                .await?
                .json()
                .await?;
        }
        if let Some(id) = page["_scroll_id"].as_str() {
            let _ = self
                .http
                .delete(format!("{}/_search/scroll", self.url))
                .json(&json!({"scroll_id": id}))
                .send()
                .await;
        }
        Ok(docs)
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
