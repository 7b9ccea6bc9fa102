//! The proxy side: the accept loop (the listening socket is closed while `refuse` is set),
//! HTTP/1.1 request parsing with httparse (Content-Length bodies, keep-alive), forwarding
//! with reqwest, and the per-request faults.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use reqwest::{
    Method, StatusCode,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};

use crate::{
    control::{Decision, Shared, Stats},
    faults::{CutAt, Fault, FaultKind, default_error_body, request_rng, rewrite_bulk_items},
};

const MAX_HEADERS: usize = 100;
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Elasticsearch refuses bodies over 100 MB by default (`http.max_content_length`).
const MAX_BODY_BYTES: usize = 512 * 1024 * 1024;
const JSON: &str = "application/json; charset=UTF-8";

/// Request headers that concern one hop only, never forwarded (reqwest sets its own `host`
/// and `content-length`; `expect` is answered here).
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "expect",
];

/// Bind with SO_REUSEADDR, so the same port can be bound again after a `refuse` period even
/// with connections in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accept connections until a `refuse` fault is set, then close the listening socket (so
/// connect() gets ECONNREFUSED) and bind the same address again once it is cleared.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, upstream: Arc<Upstream>) {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let mut refuse = shared.refuse_rx();
    let mut listener = Some(listener);
    loop {
        let Some(open) = listener.take() else {
            wait_until(&mut refuse, false).await;
            listener = Some(bind_again(addr).await);
            tracing::info!(%addr, "refuse cleared: listening again");
            continue;
        };
        shared.set_listening(true);
        loop {
            tokio::select! {
                accepted = open.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::spawn(serve_connection(
                            stream,
                            peer,
                            Arc::clone(&shared),
                            Arc::clone(&upstream),
                        ));
                    }
                    Err(e) => {
                        // e.g. out of file descriptors: do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = wait_until(&mut refuse, true) => break,
            }
        }
        drop(open);
        shared.set_listening(false);
        shared.stats.count_fault(FaultKind::Refuse);
        tracing::info!(kind = "refuse", %addr, "fault injected: listening socket closed");
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    let mut attempt = 0u32;
    loop {
        match bind(addr) {
            Ok(listener) => return listener,
            Err(e) => {
                if attempt.is_multiple_of(50) {
                    tracing::warn!(%addr, error = %e, "cannot bind the listening port again, retrying");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Resolve when the watched flag equals `wanted` (never, if its sender is gone).
async fn wait_until(rx: &mut watch::Receiver<bool>, wanted: bool) {
    if rx.wait_for(|v| *v == wanted).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The engine behind the proxy.
pub struct Upstream {
    http: reqwest::Client,
    /// Scheme, authority and optional path prefix, without a trailing '/'.
    base: String,
}

/// An upstream answer, ready to be written back.
struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
}

impl Upstream {
    pub fn new(url: &url::Url, timeout: Duration) -> anyhow::Result<Upstream> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(Upstream {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
        })
    }

    async fn send(&self, req: &Request, strip_encoding: bool) -> Result<Answer, reqwest::Error> {
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str())
                || lower == "content-length"
                || req.connection_tokens.contains(&lower)
                || (strip_encoding && lower == "accept-encoding")
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(lower.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        let resp = self
            .http
            .request(req.method.clone(), format!("{}{}", self.base, req.target))
            .headers(headers)
            .body(req.body.clone())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let head_only = req.method == Method::HEAD;
        let headers = resp
            .headers()
            .iter()
            .filter(|(name, _)| {
                let n = name.as_str();
                !(HOP_BY_HOP.contains(&n) || (n == "content-length" && !head_only))
            })
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect();
        let body = resp.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

struct Request {
    method: Method,
    /// Origin form: path and query.
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    /// Lower-case tokens of the `Connection` header (hop-by-hop header names, close, ...).
    connection_tokens: Vec<String>,
    keep_alive: bool,
    body: Bytes,
}

impl Request {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }
}

/// The head of a request as parsed, before its body is read.
struct Head {
    method: Method,
    target: String,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
}

enum ReadError {
    /// The client went away (or the socket failed) in the middle of a request.
    Io(io::Error),
    /// A request this proxy will not handle: answer with this status and close.
    Refused(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// What to do with the connection after a request.
#[derive(PartialEq)]
enum Next {
    Continue,
    Close,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    peer: SocketAddr,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
) {
    Stats::bump(&shared.stats.connections_accepted);
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(16 * 1024),
        peer,
    };
    let mut refuse = shared.refuse_rx();
    loop {
        // An engine that goes down takes its established connections with it.
        let read = tokio::select! {
            biased;
            _ = wait_until(&mut refuse, true) => {
                Stats::bump(&shared.stats.connections_refused);
                tracing::debug!(%peer, "refuse: closing an established connection");
                return;
            }
            read = conn.read_request() => read,
        };
        let req = match read {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(ReadError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection ended mid-request");
                return;
            }
            Err(ReadError::Refused(status, reason)) => {
                tracing::warn!(%peer, status, %reason, "request refused");
                let body = serde_json::json!({
                    "error": {"type": "fault_proxy_unsupported_request", "reason": reason},
                    "status": status,
                })
                .to_string();
                let _ = conn
                    .write(status, &[content_type(JSON)], body.as_bytes(), false, false)
                    .await;
                conn.lingering_close().await;
                return;
            }
        };
        Stats::bump(&shared.stats.requests_seen);
        let keep_alive = req.keep_alive;
        let next = match shared.decide(req.path()) {
            None => conn.forward(&req, &shared, &upstream, false).await,
            Some(decision) => conn.inject(&req, decision, &shared, &upstream).await,
        };
        if next == Next::Close || !keep_alive {
            return;
        }
    }
}

fn content_type(value: &str) -> (String, Vec<u8>) {
    ("content-type".into(), value.as_bytes().to_vec())
}

impl Conn {
    /// The next request, or `None` when the client closed the connection between requests.
    async fn read_request(&mut self) -> Result<Option<Request>, ReadError> {
        let head = loop {
            if let Some(head) = self.parse_head()? {
                break head;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
                };
            }
        };
        let mut content_length: Option<usize> = None;
        let mut connection_tokens = Vec::new();
        let mut expect_continue = false;
        for (name, value) in &head.headers {
            let value = String::from_utf8_lossy(value);
            match name.to_ascii_lowercase().as_str() {
                "transfer-encoding" => {
                    return Err(ReadError::Refused(
                        501,
                        "Transfer-Encoding (chunked) request bodies are not supported: send a Content-Length".into(),
                    ));
                }
                "content-length" => {
                    let n: usize = value.trim().parse().map_err(|_| {
                        ReadError::Refused(400, format!("bad Content-Length [{value}]"))
                    })?;
                    if content_length.is_some_and(|m| m != n) {
                        return Err(ReadError::Refused(
                            400,
                            "conflicting Content-Length headers".into(),
                        ));
                    }
                    content_length = Some(n);
                }
                "connection" => connection_tokens.extend(
                    value
                        .split(',')
                        .map(|t| t.trim().to_ascii_lowercase())
                        .filter(|t| !t.is_empty()),
                ),
                "expect" => expect_continue = value.trim().eq_ignore_ascii_case("100-continue"),
                _ => {}
            }
        }
        let length = content_length.unwrap_or(0);
        if length > MAX_BODY_BYTES {
            return Err(ReadError::Refused(
                413,
                format!("request body of {length} bytes is over {MAX_BODY_BYTES}"),
            ));
        }
        if expect_continue && self.buf.len() < length {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        while self.buf.len() < length {
            self.buf.reserve(length - self.buf.len());
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
        let body = self.buf.split_to(length).freeze();
        let keep_alive = if head.http10 {
            connection_tokens.iter().any(|t| t == "keep-alive")
        } else {
            !connection_tokens.iter().any(|t| t == "close")
        };
        Ok(Some(Request {
            method: head.method,
            target: head.target,
            headers: head.headers,
            connection_tokens,
            keep_alive,
            body,
        }))
    }

    /// Parse a complete request head from the buffer (and consume it), if there is one.
    fn parse_head(&mut self) -> Result<Option<Head>, ReadError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD_BYTES => {
                return Err(ReadError::Refused(431, "request head too large".into()));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadError::Refused(431, "too many headers".into()));
            }
            Err(e) => return Err(ReadError::Refused(400, format!("bad request: {e}"))),
        };
        let method = parsed.method.unwrap_or("GET");
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ReadError::Refused(400, format!("bad method [{method}]")))?;
        let target = origin_form(parsed.path.unwrap_or("/"))
            .ok_or_else(|| ReadError::Refused(400, "bad request target".into()))?;
        let head = Head {
            method,
            target,
            http10: parsed.version == Some(0),
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
        };
        self.buf.advance(head_len);
        Ok(Some(head))
    }

    async fn write(
        &mut self,
        status: u16,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
        keep_alive: bool,
        head_only: bool,
    ) -> io::Result<()> {
        let bytes = encode_response(status, headers, body, keep_alive, head_only);
        self.stream.write_all(&bytes).await
    }

    async fn write_answer(&mut self, req: &Request, answer: &Answer) -> Next {
        let head_only = req.method == Method::HEAD;
        match self
            .write(
                answer.status,
                &answer.headers,
                &answer.body,
                req.keep_alive,
                head_only,
            )
            .await
        {
            Ok(()) => Next::Continue,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "client went away before the answer");
                Next::Close
            }
        }
    }

    /// Send to the upstream; a transport failure becomes a 502 with an error body.
    async fn fetch(
        &self,
        req: &Request,
        shared: &Shared,
        upstream: &Upstream,
        strip_encoding: bool,
    ) -> Answer {
        Stats::bump(&shared.stats.forwarded);
        match upstream.send(req, strip_encoding).await {
            Ok(answer) => answer,
            Err(e) => {
                Stats::bump(&shared.stats.upstream_errors);
                let reason = error_chain(&e);
                tracing::warn!(target = %req.target, error = %reason, "upstream failed");
                let body = serde_json::json!({
                    "error": {"type": "fault_proxy_upstream_error", "reason": reason},
                    "status": 502,
                });
                Answer {
                    status: 502,
                    headers: vec![content_type(JSON)],
                    body: Bytes::from(body.to_string()),
                }
            }
        }
    }

    async fn forward(
        &mut self,
        req: &Request,
        shared: &Shared,
        upstream: &Upstream,
        strip_encoding: bool,
    ) -> Next {
        let answer = self.fetch(req, shared, upstream, strip_encoding).await;
        self.write_answer(req, &answer).await
    }

    /// Close after an early answer without resetting: closing with unread request bytes
    /// would send an RST that can destroy the answer before the client reads it.
    async fn lingering_close(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    /// Wait `delay`; true if the client closed the connection meanwhile.
    async fn client_left_during(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return true,
                    // A pipelined request: kept in the buffer for later.
                    Ok(_) => {}
                },
            }
        }
    }

    async fn inject(
        &mut self,
        req: &Request,
        decision: Decision,
        shared: &Shared,
        upstream: &Upstream,
    ) -> Next {
        let kind = decision.fault.kind();
        let path = req.path();
        if kind != FaultKind::Refuse {
            shared.stats.count_fault(kind);
        }
        match &decision.fault {
            Fault::Refuse => {
                // The listening socket is being closed: this connection goes with it.
                Stats::bump(&shared.stats.connections_refused);
                Next::Close
            }
            Fault::Status {
                status,
                body,
                content_type: ct,
            } => {
                tracing::info!(kind = "status", status, path, "fault injected");
                let body = body.clone().unwrap_or_else(|| default_error_body(*status));
                let mut headers = vec![content_type(ct.as_deref().unwrap_or(JSON))];
                if *status == 401 {
                    headers.push((
                        "www-authenticate".into(),
                        br#"Basic realm="security" charset="UTF-8""#.to_vec(),
                    ));
                }
                let answer = Answer {
                    status: *status,
                    headers,
                    body: Bytes::from(body),
                };
                self.write_answer(req, &answer).await
            }
            Fault::Delay {
                ms,
                after_upstream,
                drop,
            } => {
                tracing::info!(
                    kind = "delay",
                    ms,
                    after_upstream,
                    drop,
                    path,
                    "fault injected"
                );
                let delay = Duration::from_millis(*ms);
                let answer = if *after_upstream {
                    Some(self.fetch(req, shared, upstream, false).await)
                } else {
                    None
                };
                if self.client_left_during(delay).await {
                    if answer.is_none() {
                        Stats::bump(&shared.stats.client_gone);
                        tracing::info!(path, "client left during the delay: not forwarded");
                    }
                    return Next::Close;
                }
                if *drop {
                    return Next::Close;
                }
                let answer = match answer {
                    Some(answer) => answer,
                    None => self.fetch(req, shared, upstream, false).await,
                };
                self.write_answer(req, &answer).await
            }
            Fault::Reset { after_upstream, at } => {
                let answer = if *after_upstream {
                    self.fetch(req, shared, upstream, false).await
                } else {
                    Answer {
                        status: 200,
                        headers: vec![content_type(JSON)],
                        body: Bytes::from_static(br#"{"took":1,"errors":false,"items":[]}"#),
                    }
                };
                let bytes = encode_response(
                    answer.status,
                    &answer.headers,
                    &answer.body,
                    req.keep_alive,
                    false,
                );
                let cut = cut_point(&bytes, answer.body.len(), *at);
                tracing::info!(
                    kind = "reset",
                    after_upstream,
                    at = at.name(),
                    sent = cut,
                    of = bytes.len(),
                    path,
                    "fault injected"
                );
                let _ = self.stream.write_all(&bytes[..cut]).await;
                let _ = self.stream.flush().await;
                // Let the partial answer reach the client before the RST.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Err(e) = self.stream.set_zero_linger() {
                    tracing::warn!(error = %e, "SO_LINGER 0 failed: the close will be a FIN");
                }
                Stats::bump(&shared.stats.connections_reset);
                Next::Close
            }
            Fault::Items { .. } => {
                let item_fault = decision
                    .fault
                    .item_fault()
                    .expect("items faults are validated when set");
                // A compressed answer could not be rewritten: ask for identity.
                let mut answer = self.fetch(req, shared, upstream, true).await;
                if answer.status == 200 {
                    let mut rng = request_rng(decision.seed, decision.seq);
                    match rewrite_bulk_items(&answer.body, &item_fault, &mut rng) {
                        Some(rewritten) => {
                            let n = rewritten.positions.len() as u64;
                            shared
                                .stats
                                .items_rewritten
                                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(
                                kind = "items",
                                status = item_fault.status,
                                rewritten = n,
                                positions = ?rewritten.positions,
                                path,
                                "fault injected"
                            );
                            answer.body = Bytes::from(rewritten.body);
                        }
                        None => tracing::warn!(
                            kind = "items",
                            path,
                            "answer is not a _bulk response: passed through"
                        ),
                    }
                } else {
                    tracing::info!(
                        kind = "items",
                        upstream_status = answer.status,
                        path,
                        "upstream did not answer 200: passed through"
                    );
                }
                self.write_answer(req, &answer).await
            }
        }
    }
}

/// Where a `reset` cuts an encoded answer: in the middle of the headers (after the status
/// line), or in the middle of the body (falls back to the headers for an empty body).
fn cut_point(bytes: &[u8], body_len: usize, at: CutAt) -> usize {
    let head_len = bytes.len() - body_len;
    let status_line = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(0, |p| p + 2);
    match at {
        CutAt::Body if body_len > 0 => head_len + body_len / 2,
        _ => status_line + (head_len - status_line) / 2,
    }
}

fn encode_response(
    status: u16,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> Vec<u8> {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    let mut has_length = false;
    for (name, value) in headers {
        has_length |= name.eq_ignore_ascii_case("content-length");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_length {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(if keep_alive {
        b"connection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"connection: close\r\n\r\n".as_slice()
    });
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// `/path?query` from an origin-form or absolute-form request target.
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_string());
    }
    if target == "*" {
        return Some("/".into());
    }
    let url = url::Url::parse(target).ok()?;
    Some(url[url::Position::BeforePath..].to_string())
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_framed_with_a_length() {
        let bytes = encode_response(429, &[content_type(JSON)], b"{}", true, false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text.contains("content-length: 2\r\n"));
        assert!(text.ends_with("connection: keep-alive\r\n\r\n{}"));
    }

    #[test]
    fn cuts_fall_inside_the_headers_or_the_body() {
        let body = b"0123456789";
        let bytes = encode_response(200, &[content_type(JSON)], body, true, false);
        let head_len = bytes.len() - body.len();
        let in_head = cut_point(&bytes, body.len(), CutAt::Headers);
        assert!(in_head > "HTTP/1.1 200 OK\r\n".len() && in_head < head_len);
        assert_eq!(cut_point(&bytes, body.len(), CutAt::Body), head_len + 5);
        let empty = encode_response(200, &[], b"", true, false);
        assert!(cut_point(&empty, 0, CutAt::Body) < empty.len());
    }

    #[test]
    fn targets_become_origin_form() {
        assert_eq!(
            origin_form("/_bulk?filter_path=errors").as_deref(),
            Some("/_bulk?filter_path=errors")
        );
        assert_eq!(
            origin_form("http://127.0.0.1:9200/_cluster/health?x=1").as_deref(),
            Some("/_cluster/health?x=1")
        );
        assert_eq!(origin_form("nonsense"), None);
    }
}
