//! Which origins may use the web listener (`PRESENCE_WEB_ALLOWED_ORIGINS`), and the check every
//! request passes first: a request whose `Origin` is neither allowed nor the listener's own is
//! refused with 403 (API.md, "Browsers"). Requests without `Origin` (non-browser clients) pass.
//! Allowed cross-origin requests then get CORS headers (`cors`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The configured origins, normalised (`scheme://host[:port]`, lowercase).
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(HashSet<String>);

impl AllowedOrigins {
    /// Each entry must be a bare origin: `http://` or `https://`, a host, an optional port, and
    /// nothing else (a browser's `Origin` has no path, so such an entry would never match).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut origins = HashSet::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            origins.insert(normalise(entry)?);
        }
        Ok(Self(origins))
    }

    fn contains(&self, origin: &str) -> bool {
        self.0.contains(&origin.to_ascii_lowercase())
    }
}

fn normalise(entry: &str) -> Result<String, String> {
    let expected = "expected an origin like https://app.example.com or http://localhost:8080";
    let uri: axum::http::Uri = entry
        .parse()
        .map_err(|_| format!("{entry:?} is not an origin: {expected}"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "{entry:?} has no http:// or https:// scheme: {expected}"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{entry:?} has no host: {expected}"));
    };
    // `Uri` accepts a trailing "/" as the path; anything more is not an origin.
    let bare = format!("{scheme}://{authority}");
    if entry.trim_end_matches('/') != bare || authority.as_str().contains('@') {
        return Err(format!(
            "{entry:?} is not a bare origin (no path, query or user): {expected}"
        ));
    }
    Ok(bare.to_ascii_lowercase())
}

/// The origin check of one listener.
#[derive(Debug)]
pub struct OriginPolicy {
    allowed: AllowedOrigins,
    /// `https` when the listener serves TLS: its own origin's scheme.
    scheme: &'static str,
}

impl OriginPolicy {
    pub fn new(allowed: AllowedOrigins, tls: bool) -> Self {
        Self {
            allowed,
            scheme: if tls { "https" } else { "http" },
        }
    }

    /// The listener's own origin as this request names it (`Host`, or the HTTP/2 authority).
    pub fn own_origin(&self, request: &Request) -> Option<String> {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))?;
        Some(format!("{}://{}", self.scheme, host).to_ascii_lowercase())
    }

    /// Whether `request` may go on: no `Origin`, an allowed one, or the listener's own.
    pub fn allows(&self, request: &Request) -> bool {
        let Some(origin) = request.headers().get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.allowed.contains(origin)
            || self
                .own_origin(request)
                .is_some_and(|own| own.eq_ignore_ascii_case(origin))
    }
}

/// Middleware: refuses a request from a foreign origin with 403 before anything else runs.
pub async fn check(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    if policy.allows(&request) {
        return next.run(request).await;
    }
    metrics::counter!(crate::metrics::REFUSED, "reason" => "web_origin").increment(1);
    (
        StatusCode::FORBIDDEN,
        "origin not allowed: add it to PRESENCE_WEB_ALLOWED_ORIGINS\n",
    )
        .into_response()
}

/// CORS for cross-origin calls (gRPC-Web from an app on another origin). Only requests that
/// passed [`check`] get here, so the request's origin is mirrored: it is allowed.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-user-id"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static("grpc-retry-pushback-ms"),
        ])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>, host: &str) -> Request {
        let mut builder = axum::http::Request::builder()
            .uri("/v1/session")
            .header("host", host);
        if let Some(origin) = origin {
            builder = builder.header("origin", origin);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn origins_are_bare_and_normalised() {
        let parsed =
            AllowedOrigins::parse(&[" https://App.Example ".into(), "http://l:8080/".into()])
                .unwrap();
        assert!(parsed.contains("https://app.example"));
        assert!(parsed.contains("http://l:8080"));
        for bad in ["app.example", "https://a/b", "ftp://a", "*", "https://u@a"] {
            assert!(AllowedOrigins::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_allowed_and_absent_origins_pass() {
        let allowed = AllowedOrigins::parse(&["https://app.example".into()]).unwrap();
        let policy = OriginPolicy::new(allowed, false);
        assert!(policy.allows(&request(None, "127.0.0.1:8080")));
        assert!(policy.allows(&request(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")));
        assert!(policy.allows(&request(Some("https://app.example"), "127.0.0.1:8080")));
        assert!(!policy.allows(&request(Some("https://evil.example"), "127.0.0.1:8080")));
        // The own origin's scheme is the listener's: http here, so https is foreign.
        assert!(!policy.allows(&request(Some("https://127.0.0.1:8080"), "127.0.0.1:8080")));
    }
}
