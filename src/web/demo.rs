//! The demo page (`GET /`) and its script, built into the binary (`include_bytes!`), so a
//! node needs no Node.js and no files at run time. The built files live in
//! `clients/web/dist/`. Served with a strict Content-Security-Policy: scripts only from the
//! listener itself, connections only to itself (its WebSocket included), nothing framed.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

static INDEX_HTML: &[u8] = include_bytes!("../../clients/web/dist/index.html");
static DEMO_JS: &[u8] = include_bytes!("../../clients/web/dist/presence-demo.js");

/// Path of the page's script.
pub const SCRIPT_PATH: &str = "/presence-demo.js";

pub async fn index(request: Request) -> Response {
    asset(&request, "text/html; charset=utf-8", INDEX_HTML)
}

pub async fn script(request: Request) -> Response {
    asset(&request, "text/javascript; charset=utf-8", DEMO_JS)
}

fn asset(request: &Request, content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(host(request))) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// The request's host, when it is a plain `host[:port]` (it is echoed into the policy).
fn host(request: &Request) -> Option<&str> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))?;
    host.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        .then_some(host)
}

/// Only the listener itself: `'self'` for scripts, styles and fetches, and its WebSocket
/// named explicitly (older browsers do not count `ws:` as `'self'`). Inline styles are
/// allowed (they cannot run code); inline scripts are not.
pub fn content_security_policy(host: Option<&str>) -> String {
    let sockets = host
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'{sockets}; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_self_and_its_websocket() {
        let csp = content_security_policy(Some("127.0.0.1:8080"));
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(!csp.contains("unsafe-eval"));
    }

    #[test]
    fn a_strange_host_is_not_echoed() {
        let request = axum::http::Request::builder()
            .header("host", "a; script-src *")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(host(&request), None);
    }
}
