//! The caller's identity on the web listener: a browser cannot set headers on a WebSocket,
//! so the credential may also come in the query (`access_token` in jwt mode, `user_id` in
//! insecure mode). Both become the metadata the gRPC port reads (`authorization: Bearer ...`,
//! `x-user-id`), and `session::admission::identify` checks them: one authentication for both
//! transports. The query is never logged (nothing on this listener logs request URIs).

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Uri};
use tonic::metadata::MetadataMap;

use crate::auth::{AUTHORIZATION_HEADER, USER_ID_HEADER};

/// Query parameter of a JWT (jwt mode).
pub const ACCESS_TOKEN_PARAM: &str = "access_token";
/// Query parameter of the user id (insecure mode).
pub const USER_ID_PARAM: &str = "user_id";

/// The credential metadata of a request: its `authorization` and `x-user-id` headers, replaced
/// by the query parameters when those are given. Errors say what is wrong without echoing it.
pub fn metadata(headers: &HeaderMap, uri: &Uri) -> Result<MetadataMap, String> {
    let mut credentials = HeaderMap::new();
    for name in [AUTHORIZATION_HEADER, USER_ID_HEADER] {
        for value in headers.get_all(name) {
            credentials.append(name, value.clone());
        }
    }
    let query: Vec<(String, String)> = match uri.query() {
        Some(_) => Query::try_from_uri(uri)
            .map(|Query(pairs)| pairs)
            .map_err(|_| "the query string is not valid form encoding".to_owned())?,
        None => Vec::new(),
    };
    let single = |name: &str| -> Result<Option<&str>, String> {
        let mut values = query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(format!("more than one {name} query parameter"));
        }
        Ok(first)
    };
    if let Some(token) = single(ACCESS_TOKEN_PARAM)? {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| format!("the {ACCESS_TOKEN_PARAM} query parameter is not a token"))?;
        credentials.insert(AUTHORIZATION_HEADER, value);
    }
    if let Some(user) = single(USER_ID_PARAM)? {
        let value = HeaderValue::from_str(user).map_err(|_| {
            format!("the {USER_ID_PARAM} query parameter has characters a user id cannot have")
        })?;
        credentials.insert(USER_ID_HEADER, value);
    }
    Ok(MetadataMap::from_headers(credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(map: &'a MetadataMap, name: &str) -> Option<&'a str> {
        map.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn query_parameters_become_metadata() {
        let uri: Uri = "/v1/session?access_token=abc.def&user_id=alice%20b"
            .parse()
            .unwrap();
        let map = metadata(&HeaderMap::new(), &uri).unwrap();
        assert_eq!(get(&map, "authorization"), Some("Bearer abc.def"));
        assert_eq!(get(&map, "x-user-id"), Some("alice b"));
    }

    #[test]
    fn headers_are_kept_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("bob"));
        headers.insert("cookie", HeaderValue::from_static("c=1"));
        let map = metadata(&headers, &"/v1/session".parse().unwrap()).unwrap();
        assert_eq!(get(&map, "x-user-id"), Some("bob"));
        assert!(map.get("cookie").is_none());
    }

    #[test]
    fn repeated_or_unencodable_credentials_are_refused_without_echo() {
        let uri: Uri = "/v1/session?access_token=a&access_token=b".parse().unwrap();
        assert!(metadata(&HeaderMap::new(), &uri).is_err());
        let uri: Uri = "/v1/session?access_token=secret%0A".parse().unwrap();
        let err = metadata(&HeaderMap::new(), &uri).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
