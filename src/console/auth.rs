//! Who may do what. Two tokens, two scopes: OUTBOX_CONSOLE_TOKEN reads, and
//! OUTBOX_CONSOLE_WRITE_TOKEN reads and replays. Without a read token the pages are open,
//! which start-up allows on a loopback address only; without a write token nothing can be
//! changed (read-only is the default). A browser logs in once and carries the token in an
//! HttpOnly, SameSite=Strict cookie; a script may send `Authorization: Bearer <token>`.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};

use crate::config::{Config, ConfigError, Secret};

/// The cookie that carries the token a browser logged in with.
pub const TOKEN_COOKIE: &str = "outbox_console_token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// The console's tokens, checked at start-up.
#[derive(Debug, Clone)]
pub struct Access {
    read: Option<Secret>,
    write: Option<Secret>,
}

impl Access {
    /// The start-up rules, one line each when broken: a listen address, a read token
    /// whenever that address is reachable from elsewhere, and two different tokens.
    pub fn from_config(cfg: &Config) -> Result<(SocketAddr, Access), ConfigError> {
        let Some(addr) = cfg.console_listen else {
            return Err(ConfigError(
                "OUTBOX_CONSOLE_LISTEN is off: the console needs an address to serve on, e.g. 127.0.0.1:9465".into(),
            ));
        };
        check_listen(addr, cfg.console_token.is_some())?;
        if let (Some(r), Some(w)) = (&cfg.console_token, &cfg.console_write_token)
            && r == w
        {
            return Err(ConfigError(
                "invalid OUTBOX_CONSOLE_WRITE_TOKEN: it equals OUTBOX_CONSOLE_TOKEN; the write token must differ from the read token".into(),
            ));
        }
        Ok((
            addr,
            Access {
                read: cfg.console_token.clone(),
                write: cfg.console_write_token.clone(),
            },
        ))
    }

    /// Whether anything can be written at all (a write token is configured).
    pub fn writable(&self) -> bool {
        self.write.is_some()
    }

    /// Whether the pages need a token (a read token is configured).
    pub fn needs_login(&self) -> bool {
        self.read.is_some()
    }

    /// The scope a presented token grants; `None`: refused.
    pub fn scope(&self, presented: Option<&str>) -> Option<Scope> {
        let matches = |s: &Option<Secret>| match (s, presented) {
            (Some(s), Some(p)) => constant_time_eq(s.expose().as_bytes(), p.as_bytes()),
            _ => false,
        };
        if matches(&self.write) {
            Some(Scope::Write)
        } else if matches(&self.read) || self.read.is_none() {
            Some(Scope::Read)
        } else {
            None
        }
    }

    /// The token a request presents: `Authorization: Bearer`, else the login cookie.
    pub fn presented(headers: &HeaderMap) -> Option<String> {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && let Some(t) = v.strip_prefix("Bearer ")
        {
            return Some(t.trim().to_string());
        }
        cookie(headers, TOKEN_COOKIE)
    }
}

/// Bound outside loopback, the pages must need a token.
pub fn check_listen(addr: SocketAddr, has_read_token: bool) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() || has_read_token {
        return Ok(());
    }
    Err(ConfigError(format!(
        "refusing to serve the console on {addr} without OUTBOX_CONSOLE_TOKEN: set a token, or listen on 127.0.0.1"
    )))
}

/// Whether a `Host` header names this machine's loopback (`127.0.0.1:9465`, `[::1]:9465`,
/// `localhost:9465`). A console without a read token answers only such requests: a page
/// of another site that points its own name at 127.0.0.1 (DNS rebinding) sends its own
/// name, and is refused.
pub fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Equal bytes, compared in time that depends on the length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(read: Option<&str>, write: Option<&str>) -> Access {
        Access {
            read: read.map(Secret::new),
            write: write.map(Secret::new),
        }
    }

    #[test]
    fn outside_loopback_needs_a_read_token() {
        let lo: SocketAddr = "127.0.0.1:9465".parse().unwrap();
        let lo6: SocketAddr = "[::1]:9465".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9465".parse().unwrap();
        assert!(check_listen(lo, false).is_ok());
        assert!(check_listen(lo6, false).is_ok());
        assert!(check_listen(any, true).is_ok());
        let e = check_listen(any, false).unwrap_err().0;
        assert!(
            e.contains("OUTBOX_CONSOLE_TOKEN") && e.contains("0.0.0.0:9465"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn scopes_follow_the_tokens() {
        let a = access(Some("read-token-123456"), Some("write-token-123456"));
        assert_eq!(a.scope(Some("write-token-123456")), Some(Scope::Write));
        assert_eq!(a.scope(Some("read-token-123456")), Some(Scope::Read));
        assert_eq!(a.scope(Some("read-token-12345")), None);
        assert_eq!(a.scope(None), None);
        // No read token (loopback): reading is open, writing still needs the write token.
        let open = access(None, Some("write-token-123456"));
        assert_eq!(open.scope(None), Some(Scope::Read));
        assert_eq!(open.scope(Some("guess")), Some(Scope::Read));
        assert_eq!(open.scope(Some("write-token-123456")), Some(Scope::Write));
        // No write token: read-only whatever is presented.
        let ro = access(None, None);
        assert_eq!(ro.scope(Some("anything")), Some(Scope::Read));
        assert!(!ro.writable());
    }

    #[test]
    fn tokens_come_from_bearer_or_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(Access::presented(&h), None);
        h.insert(
            header::COOKIE,
            "a=1; outbox_console_token=abc; b=2".parse().unwrap(),
        );
        assert_eq!(Access::presented(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(Access::presented(&h).as_deref(), Some("xyz"));
    }

    #[test]
    fn loopback_hosts_are_told_from_other_names() {
        for h in [
            "127.0.0.1:9465",
            "127.0.0.1",
            "[::1]:9465",
            "localhost:9465",
            "LOCALHOST",
        ] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in [
            "evil.example:9465",
            "10.0.0.1:9465",
            "[::2]:1",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!host_is_loopback(h), "{h}");
        }
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
