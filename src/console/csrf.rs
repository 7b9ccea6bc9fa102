//! CSRF protection for every POST: a double-submit cookie (a random value set on the first
//! page, echoed by every form in a hidden field; another site can neither read the cookie
//! nor set it) and an Origin check (a browser names the page that sent the form; it must be
//! this console). The cookies are SameSite=Strict besides.

use axum::http::{HeaderMap, header};

use super::auth::{constant_time_eq, cookie};

pub const CSRF_COOKIE: &str = "outbox_console_csrf";
pub const CSRF_FIELD: &str = "csrf";

/// A new random token: 32 hex characters.
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a POST was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrfRefusal {
    #[error("the form carries no CSRF token, or not this browser's: reload the page and try again")]
    Token,
    #[error(
        "the request comes from another origin ({0}); the console accepts forms from its own pages only"
    )]
    Origin(String),
}

/// The checks on one POST: the form's token equals the cookie's, and the origin the
/// browser names (Origin, else Referer) is this console's host.
pub fn verify(
    form_token: Option<&str>,
    cookie_token: Option<&str>,
    origin: Option<&str>,
    referer: Option<&str>,
    host: Option<&str>,
) -> Result<(), CsrfRefusal> {
    match (form_token, cookie_token) {
        (Some(f), Some(c)) if !c.is_empty() && constant_time_eq(f.as_bytes(), c.as_bytes()) => {}
        _ => return Err(CsrfRefusal::Token),
    }
    let same = |o: &str| {
        host.is_some_and(|h| {
            ["http://", "https://"]
                .iter()
                .any(|scheme| o.strip_prefix(scheme).is_some_and(|rest| rest == h))
        })
    };
    if let Some(o) = origin {
        if !same(o) {
            return Err(CsrfRefusal::Origin(o.to_string()));
        }
    } else if let Some(r) = referer {
        // scheme://host[/path]: compare scheme://host.
        let end = r
            .find("://")
            .and_then(|i| r[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(r.len());
        if !same(&r[..end]) {
            return Err(CsrfRefusal::Origin(r[..end].to_string()));
        }
    }
    Ok(())
}

/// [`verify`] on a request's headers and its form's token.
pub fn verify_request(headers: &HeaderMap, form_token: Option<&str>) -> Result<(), CsrfRefusal> {
    let h = |name| headers.get(name).and_then(|v| v.to_str().ok());
    verify(
        form_token,
        cookie(headers, CSRF_COOKIE).as_deref(),
        h(header::ORIGIN),
        h(header::REFERER),
        h(header::HOST),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Option<&str> = Some("127.0.0.1:9465");

    #[test]
    fn the_token_must_match_the_cookie() {
        assert_eq!(verify(Some("abc"), Some("abc"), None, None, H), Ok(()));
        assert_eq!(
            verify(None, Some("abc"), None, None, H),
            Err(CsrfRefusal::Token)
        );
        assert_eq!(
            verify(Some("abc"), None, None, None, H),
            Err(CsrfRefusal::Token)
        );
        assert_eq!(
            verify(Some("abd"), Some("abc"), None, None, H),
            Err(CsrfRefusal::Token)
        );
        assert_eq!(
            verify(Some(""), Some(""), None, None, H),
            Err(CsrfRefusal::Token)
        );
    }

    #[test]
    fn the_origin_must_be_this_console() {
        let ok = |o, r| verify(Some("t"), Some("t"), o, r, H);
        assert_eq!(ok(Some("http://127.0.0.1:9465"), None), Ok(()));
        assert_eq!(ok(Some("https://127.0.0.1:9465"), None), Ok(()));
        assert_eq!(
            ok(Some("http://evil.example"), None),
            Err(CsrfRefusal::Origin("http://evil.example".into()))
        );
        assert!(ok(Some("null"), None).is_err());
        assert!(ok(Some("http://127.0.0.1:9465.evil.example"), None).is_err());
        assert_eq!(ok(None, Some("http://127.0.0.1:9465/replay?x=1")), Ok(()));
        assert!(ok(None, Some("http://evil.example/127.0.0.1:9465")).is_err());
        // No Host header: no origin can match.
        assert!(verify(Some("t"), Some("t"), Some("http://a"), None, None).is_err());
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
