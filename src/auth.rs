//! Caller identity from gRPC call metadata, checked once when a call starts.
//!
//! Two modes:
//! - `insecure`: the `x-user-id` metadata value is trusted as is (development only).
//! - `jwt`: `authorization: Bearer <token>`, verified with HS256 (shared secret) or
//!   RS256 / ES256 (PEM public key); the user id is the token's `sub`.
//!
//! The current time is passed in (`now_ms`, unix milliseconds) instead of read from the
//! system clock, so that tests control time, and so that the one clock the caller uses
//! to end a call when its credential lapses (`Identity::expires_at_ms`) is also the one
//! that decided the credential was valid when the call started. jsonwebtoken's own
//! `exp`/`nbf` checks read the wall clock (in whole seconds), so they are switched off
//! and done here from the decoded claims.
//!
//! Error messages are meant to be sent back to the client in an `UNAUTHENTICATED`
//! status, so they name what is wrong but never echo the credential.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::IgnoredAny;
use serde::Deserialize;
use tonic::metadata::MetadataMap;

/// Metadata key carrying the user id in insecure mode.
pub const USER_ID_HEADER: &str = "x-user-id";
/// Metadata key carrying the bearer token in jwt mode.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// Key material used to verify tokens.
#[derive(Clone)]
pub enum JwtKey {
    /// Shared secret for HS256 (raw bytes, not base64).
    Secret(Vec<u8>),
    /// Contents of a PEM file holding the public key for RS256 or ES256.
    PublicKeyPem(Vec<u8>),
}

// Hand-written so that a secret never ends up in logs through a `{:?}` of the config.
impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret([redacted])"),
            JwtKey::PublicKeyPem(pem) => write!(f, "PublicKeyPem({} bytes)", pem.len()),
        }
    }
}

/// How tokens are verified in jwt mode.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// HS256, RS256 or ES256; tokens signed with any other algorithm are refused.
    pub algorithm: Algorithm,
    pub key: JwtKey,
    /// Clock skew tolerated on `exp` and `nbf`, in milliseconds.
    pub leeway_ms: u64,
    /// When set, the token must carry this exact `iss`.
    pub issuer: Option<String>,
    /// When set, the token's `aud` must contain this value.
    pub audience: Option<String>,
}

/// Who is calling, as established when the call started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// when the credential stops being valid (exp + leeway), unix ms; None in insecure mode
    pub expires_at_ms: Option<u64>,
    /// The JWT `scope` claim holds `presence:read`: a backend, not subject to the watch
    /// policy (API.md "Who may see whom", 7).
    pub presence_read: bool,
    /// The JWT `presence_watch` claim: the users this caller may see under the `token`
    /// watch policy (`None`: no claim, so nobody but itself).
    pub presence_watch: Option<Arc<[String]>>,
}

/// The `scope` word that exempts a caller from the watch policy.
pub const PRESENCE_READ_SCOPE: &str = "presence:read";

impl Identity {
    /// An identity with no scope and no watch claim (insecure mode, tests).
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            expires_at_ms: None,
            presence_read: false,
            presence_watch: None,
        }
    }
}

/// Why a call could not be authenticated. `Display` is safe to return to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The named metadata header is absent.
    #[error("missing credential: the `{0}` metadata header is required")]
    MissingCredential(&'static str),
    /// The header or token cannot be parsed.
    #[error("malformed credential: {0}")]
    Malformed(String),
    #[error("invalid token: signature does not match")]
    BadSignature,
    #[error("invalid token: expired")]
    Expired,
    #[error("invalid token: not valid yet (`nbf` is in the future)")]
    NotYetValid,
    /// Well-formed and correctly signed, but unacceptable (claims, algorithm, ...).
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Checks call metadata. Cheap to clone: the verification key is built once and shared.
#[derive(Clone)]
pub struct Authenticator {
    /// `None` is insecure mode.
    jwt: Option<Arc<JwtVerifier>>,
}

struct JwtVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    leeway_ms: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.jwt {
            None => f.write_str("Authenticator::Insecure"),
            Some(v) => f
                .debug_struct("Authenticator::Jwt")
                .field("algorithm", &v.algorithm)
                .field("leeway_ms", &v.leeway_ms)
                .field("issuer", &v.validation.iss)
                .field("audience", &v.validation.aud)
                .finish_non_exhaustive(),
        }
    }
}

impl Authenticator {
    /// Trusts `x-user-id` as sent by the client.
    pub fn insecure() -> Self {
        Self { jwt: None }
    }

    /// Errors name what is wrong with the key/settings (used for config validation at start, exit code 64).
    pub fn jwt(settings: JwtSettings) -> Result<Self, String> {
        let JwtSettings {
            algorithm,
            key,
            leeway_ms,
            issuer,
            audience,
        } = settings;

        let decoding_key = build_decoding_key(algorithm, &key)?;

        let mut validation = Validation::new(algorithm);
        // Time is checked by us against the caller's clock (see module docs).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let mut required = vec!["sub", "exp"];
        // A configured issuer/audience must be present, otherwise a token minted without
        // them (e.g. for another service sharing the key) would slip through, since
        // jsonwebtoken only compares these claims when the token carries them.
        if let Some(iss) = &issuer {
            if iss.is_empty() {
                return Err("jwt issuer is set but empty".to_owned());
            }
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &audience {
            Some(aud) => {
                if aud.is_empty() {
                    return Err("jwt audience is set but empty".to_owned());
                }
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Otherwise jsonwebtoken rejects every token that carries an `aud` at all,
            // which would make the audience check mandatory rather than optional.
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required
            .into_iter()
            .map(str::to_owned)
            .collect::<HashSet<_>>();

        Ok(Self {
            jwt: Some(Arc::new(JwtVerifier {
                algorithm,
                key: decoding_key,
                validation,
                leeway_ms,
            })),
        })
    }

    pub fn is_insecure(&self) -> bool {
        self.jwt.is_none()
    }

    /// Establishes the caller's identity. `now_ms` is the caller's clock in unix milliseconds.
    pub fn authenticate(&self, metadata: &MetadataMap, now_ms: u64) -> Result<Identity, AuthError> {
        match &self.jwt {
            None => {
                let user_id = single_header(metadata, USER_ID_HEADER)?;
                Ok(Identity::user(user_id))
            }
            Some(verifier) => {
                let value = single_header(metadata, AUTHORIZATION_HEADER)?;
                let token = bearer_token(value)?;
                verifier.verify(token, now_ms)
            }
        }
    }
}

/// Reads a header that must appear exactly once: two values would leave it ambiguous
/// which one identifies the caller.
fn single_header<'a>(metadata: &'a MetadataMap, name: &'static str) -> Result<&'a str, AuthError> {
    let mut values = metadata.get_all(name).iter();
    let value = values.next().ok_or(AuthError::MissingCredential(name))?;
    if values.next().is_some() {
        return Err(AuthError::Malformed(format!(
            "the `{name}` metadata header was sent more than once"
        )));
    }
    let value = value.to_str().map_err(|_| {
        AuthError::Malformed(format!(
            "the `{name}` metadata header must be printable ASCII"
        ))
    })?;
    Ok(value.trim())
}

fn bearer_token(value: &str) -> Result<&str, AuthError> {
    let (scheme, token) = match value.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) => (scheme, rest.trim()),
        None => (value, ""),
    };
    // RFC 7235: auth schemes are case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        // The scheme is not echoed: whatever follows it may be a secret of another kind.
        return Err(AuthError::Malformed(
            "the `authorization` header must use the Bearer scheme (`Bearer <token>`)".to_owned(),
        ));
    }
    if token.is_empty() {
        return Err(AuthError::Malformed(
            "the `authorization` header has no token after `Bearer`".to_owned(),
        ));
    }
    Ok(token)
}

fn build_decoding_key(algorithm: Algorithm, key: &JwtKey) -> Result<DecodingKey, String> {
    let provider = CryptoProvider::try_get_default()
        .ok_or("no jsonwebtoken crypto provider is available (build misconfiguration)")?;
    let decoding_key = match (algorithm, key) {
        (Algorithm::HS256, JwtKey::Secret(secret)) => {
            if secret.is_empty() {
                return Err("HS256 needs a non-empty shared secret".to_owned());
            }
            DecodingKey::from_secret(secret)
                .map_err(|e| format!("HS256 secret is unusable: {e}"))?
        }
        (Algorithm::HS256, JwtKey::PublicKeyPem(_)) => {
            return Err("HS256 needs a shared secret, not a PEM public key".to_owned());
        }
        (Algorithm::RS256 | Algorithm::ES256, JwtKey::Secret(_)) => {
            return Err(format!(
                "{algorithm:?} needs a PEM public key, not a shared secret"
            ));
        }
        (Algorithm::RS256, JwtKey::PublicKeyPem(pem)) => {
            let key = DecodingKey::from_rsa_pem(pem).map_err(|_| {
                "RS256 key is not a PEM-encoded RSA public key \
                 (expected `-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`)"
                    .to_owned()
            })?;
            // jsonwebtoken only unwraps the PEM/ASN.1 envelope here and parses the RSA key
            // on every verification; parse it now so a bad key fails at start, not per call.
            // This also catches a private key supplied where the public key belongs.
            let der = key
                .try_get_as_bytes()
                .map_err(|_| "RS256 key could not be read".to_owned())?;
            (provider.key_utils.rsa_pub_components_from_public_key)(der).map_err(|_| {
                "RS256 key is not a valid RSA public key (was a private key supplied?)".to_owned()
            })?;
            key
        }
        (Algorithm::ES256, JwtKey::PublicKeyPem(pem)) => {
            let key = DecodingKey::from_ec_pem(pem).map_err(|_| {
                "ES256 key is not a PEM-encoded EC public key \
                 (expected `-----BEGIN PUBLIC KEY-----`)"
                    .to_owned()
            })?;
            // Building a verifier parses the curve point, so a key on the wrong curve
            // (e.g. P-384) or a damaged one is refused at start rather than per call.
            (provider.verifier_factory)(&Algorithm::ES256, &key)
                .map_err(|_| "ES256 key is not a valid P-256 public key".to_owned())?;
            key
        }
        (other, _) => {
            return Err(format!(
                "jwt algorithm {other:?} is not supported (use HS256, RS256 or ES256)"
            ));
        }
    };
    Ok(decoding_key)
}

/// The claims we read ourselves. Each is lenient so that a missing or ill-typed claim
/// reaches jsonwebtoken's required-claim check (or ours) and gets a precise message,
/// instead of failing the whole payload as "not valid JSON".
#[derive(Deserialize)]
struct Claims {
    sub: Option<ClaimValue>,
    exp: Option<ClaimValue>,
    nbf: Option<ClaimValue>,
    /// OAuth style: space-separated words.
    scope: Option<ClaimValue>,
    /// Array of user ids (the `token` watch policy).
    presence_watch: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ClaimValue {
    Int(u64),
    // NumericDate may legally be fractional (RFC 7519 §2).
    Float(f64),
    Text(String),
    Other(IgnoredAny),
}

impl JwtVerifier {
    fn verify(&self, token: &str, now_ms: u64) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| self.map_error(e.into_kind()))?;
        let claims = data.claims;

        let user_id = match claims.sub {
            Some(ClaimValue::Text(sub)) => sub,
            Some(_) => {
                return Err(AuthError::Invalid(
                    "the `sub` claim must be a string".to_owned(),
                ))
            }
            None => return Err(missing_claim("sub")),
        };
        let exp_ms = match &claims.exp {
            Some(v) => numeric_date_ms(v, "exp")?,
            None => return Err(missing_claim("exp")),
        };
        let expires_at_ms = exp_ms.saturating_add(self.leeway_ms);
        // RFC 7519 §4.1.4: not accepted "on or after" exp; the leeway extends that instant.
        if now_ms >= expires_at_ms {
            return Err(AuthError::Expired);
        }
        if let Some(v) = &claims.nbf {
            let nbf_ms = numeric_date_ms(v, "nbf")?;
            if now_ms.saturating_add(self.leeway_ms) < nbf_ms {
                return Err(AuthError::NotYetValid);
            }
        }
        let presence_read = match &claims.scope {
            None => false,
            Some(ClaimValue::Text(scope)) => scope.split(' ').any(|w| w == PRESENCE_READ_SCOPE),
            Some(_) => {
                return Err(AuthError::Invalid(
                    "the `scope` claim must be a string".to_owned(),
                ))
            }
        };
        let presence_watch = match claims.presence_watch {
            None => None,
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|item| match item {
                        serde_json::Value::String(id) => Ok(id),
                        _ => Err(()),
                    })
                    .collect::<Result<Arc<[String]>, ()>>()
                    .map_err(|()| watch_claim_invalid())?,
            ),
            Some(_) => return Err(watch_claim_invalid()),
        };
        Ok(Identity {
            user_id,
            expires_at_ms: Some(expires_at_ms),
            presence_read,
            presence_watch,
        })
    }

    // Messages are fixed strings on purpose: jsonwebtoken/serde_json errors can quote
    // pieces of the decoded payload, which must not be reflected to the client.
    fn map_error(&self, kind: ErrorKind) -> AuthError {
        match kind {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidToken => AuthError::Malformed(
                "token is not a JWT (expected three dot-separated parts)".to_owned(),
            ),
            ErrorKind::Base64(_) => AuthError::Malformed("token is not valid base64url".to_owned()),
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed(
                "token header or claims are not valid JSON, or name an unknown algorithm"
                    .to_owned(),
            ),
            ErrorKind::InvalidAlgorithm => {
                AuthError::Invalid(format!("token must be signed with {:?}", self.algorithm))
            }
            ErrorKind::MissingRequiredClaim(claim) => missing_claim(&claim),
            ErrorKind::InvalidClaimFormat(claim) => {
                AuthError::Invalid(format!("the `{claim}` claim has the wrong type"))
            }
            ErrorKind::InvalidIssuer => {
                AuthError::Invalid("the `iss` claim is not the expected issuer".to_owned())
            }
            ErrorKind::InvalidAudience => {
                AuthError::Invalid("the `aud` claim does not name this service".to_owned())
            }
            ErrorKind::InvalidSubject => {
                AuthError::Invalid("the `sub` claim is not accepted".to_owned())
            }
            // Key problems were ruled out when the Authenticator was built; anything left
            // is not something the client can fix, so say no more than that it failed.
            _ => AuthError::Invalid("token could not be verified".to_owned()),
        }
    }
}

fn watch_claim_invalid() -> AuthError {
    AuthError::Invalid("the `presence_watch` claim must be an array of user ids".to_owned())
}

fn missing_claim(claim: &str) -> AuthError {
    AuthError::Invalid(format!("token is missing a valid `{claim}` claim"))
}

fn numeric_date_ms(value: &ClaimValue, claim: &str) -> Result<u64, AuthError> {
    match *value {
        ClaimValue::Int(secs) => Ok(secs.saturating_mul(1000)),
        // `as` saturates, so absurdly large dates clamp rather than wrap.
        ClaimValue::Float(secs) if secs.is_finite() && secs >= 0.0 => Ok((secs * 1000.0) as u64),
        _ => Err(AuthError::Invalid(format!(
            "the `{claim}` claim must be a non-negative number of seconds since the Unix epoch"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde::Serialize;
    use tonic::metadata::MetadataValue;

    // Test-only keys, generated once with:
    //   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_private.pem
    //   openssl pkey -in rsa_private.pem -pubout -out rsa_public.pem
    //   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec_private.pem
    //   openssl pkey -in ec_private.pem -pubout -out ec_public.pem
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/jwt/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/jwt/ec_public.pem");

    const SECRET: &[u8] = b"test-secret-at-least-32-bytes-long!!";
    /// 2023-11-14T22:13:20Z, in ms; an arbitrary fixed "now".
    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW_S: u64 = NOW_MS / 1000;
    const LEEWAY_MS: u64 = 5_000;

    #[derive(Serialize, Default)]
    struct TestClaims {
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        nbf: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        iss: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        aud: Option<String>,
    }

    fn claims(sub: &str, exp_s: u64) -> TestClaims {
        TestClaims {
            sub: Some(sub.to_owned()),
            exp: Some(exp_s),
            ..TestClaims::default()
        }
    }

    fn settings(algorithm: Algorithm, key: JwtKey) -> JwtSettings {
        JwtSettings {
            algorithm,
            key,
            leeway_ms: LEEWAY_MS,
            issuer: None,
            audience: None,
        }
    }

    fn hs256() -> Authenticator {
        Authenticator::jwt(settings(Algorithm::HS256, JwtKey::Secret(SECRET.to_vec()))).unwrap()
    }

    fn sign_hs256(claims: &impl Serialize, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    fn sign_rs256(claims: &impl Serialize) -> String {
        encode(
            &Header::new(Algorithm::RS256),
            claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        )
        .unwrap()
    }

    fn sign_es256(claims: &impl Serialize) -> String {
        encode(
            &Header::new(Algorithm::ES256),
            claims,
            &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        )
        .unwrap()
    }

    fn md(key: &'static str, value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert(key, MetadataValue::try_from(value).unwrap());
        map
    }

    fn bearer(token: &str) -> MetadataMap {
        md("authorization", &format!("Bearer {token}"))
    }

    #[test]
    fn insecure_ok() {
        let auth = Authenticator::insecure();
        assert!(auth.is_insecure());
        let id = auth
            .authenticate(&md("x-user-id", "alice"), NOW_MS)
            .unwrap();
        assert_eq!(id, Identity::user("alice"));
    }

    #[test]
    fn insecure_missing_header() {
        let auth = Authenticator::insecure();
        let err = auth.authenticate(&MetadataMap::new(), NOW_MS).unwrap_err();
        assert_eq!(err, AuthError::MissingCredential("x-user-id"));
        assert!(err.to_string().contains("x-user-id"));
        // A bearer token is no substitute in insecure mode.
        let token = sign_hs256(&claims("alice", NOW_S + 60), SECRET);
        assert_eq!(
            auth.authenticate(&bearer(&token), NOW_MS),
            Err(AuthError::MissingCredential("x-user-id"))
        );
    }

    #[test]
    fn insecure_repeated_header_is_rejected() {
        let mut map = md("x-user-id", "alice");
        map.append("x-user-id", MetadataValue::from_static("mallory"));
        assert!(matches!(
            Authenticator::insecure().authenticate(&map, NOW_MS),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn hs256_valid() {
        let auth = hs256();
        assert!(!auth.is_insecure());
        let token = sign_hs256(&claims("alice", NOW_S + 60), SECRET);
        let id = auth.authenticate(&bearer(&token), NOW_MS).unwrap();
        assert_eq!(id.user_id, "alice");
        assert_eq!(id.expires_at_ms, Some((NOW_S + 60) * 1000 + LEEWAY_MS));
    }

    #[test]
    fn jwt_missing_header() {
        assert_eq!(
            hs256().authenticate(&md("x-user-id", "alice"), NOW_MS),
            Err(AuthError::MissingCredential("authorization"))
        );
    }

    #[test]
    fn expired_beyond_leeway() {
        // exp < now - leeway
        let exp_s = NOW_S - 10;
        let token = sign_hs256(&claims("alice", exp_s), SECRET);
        assert_eq!(
            hs256().authenticate(&bearer(&token), NOW_MS),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn expired_but_within_leeway_is_accepted() {
        let exp_s = NOW_S - 1;
        let token = sign_hs256(&claims("alice", exp_s), SECRET);
        let auth = hs256();
        let id = auth.authenticate(&bearer(&token), NOW_MS).unwrap();
        let expires_at = exp_s * 1000 + LEEWAY_MS;
        assert_eq!(id.expires_at_ms, Some(expires_at));
        // The boundary: valid up to the last millisecond before exp + leeway.
        assert!(auth.authenticate(&bearer(&token), expires_at - 1).is_ok());
        assert_eq!(
            auth.authenticate(&bearer(&token), expires_at),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn not_yet_valid_nbf() {
        let auth = hs256();
        let mut c = claims("alice", NOW_S + 600);
        c.nbf = Some(NOW_S + 60);
        let token = sign_hs256(&c, SECRET);
        assert_eq!(
            auth.authenticate(&bearer(&token), NOW_MS),
            Err(AuthError::NotYetValid)
        );
        // Within leeway of nbf, and after nbf, it is accepted.
        let nbf_ms = (NOW_S + 60) * 1000;
        assert!(auth
            .authenticate(&bearer(&token), nbf_ms - LEEWAY_MS)
            .is_ok());
        assert_eq!(
            auth.authenticate(&bearer(&token), nbf_ms - LEEWAY_MS - 1),
            Err(AuthError::NotYetValid)
        );
        assert!(auth.authenticate(&bearer(&token), nbf_ms).is_ok());
    }

    #[test]
    fn bad_signature() {
        let token = sign_hs256(&claims("alice", NOW_S + 60), b"another-secret-entirely");
        assert_eq!(
            hs256().authenticate(&bearer(&token), NOW_MS),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn malformed_token() {
        let auth = hs256();
        for token in ["not-a-jwt", "a.b", "a.b.c.d", "!!!.???.***"] {
            match auth.authenticate(&bearer(token), NOW_MS) {
                Err(AuthError::Malformed(msg)) => {
                    assert!(!msg.contains(token), "message echoes the token: {msg}")
                }
                other => panic!("{token}: expected Malformed, got {other:?}"),
            }
        }
        // A valid token with its payload damaged never verifies.
        let token = sign_hs256(&claims("alice", NOW_S + 60), SECRET);
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = "e30"; // "{}"
        let tampered = parts.join(".");
        assert_eq!(
            auth.authenticate(&bearer(&tampered), NOW_MS),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn missing_sub() {
        let c = TestClaims {
            exp: Some(NOW_S + 60),
            ..TestClaims::default()
        };
        let token = sign_hs256(&c, SECRET);
        match hs256().authenticate(&bearer(&token), NOW_MS) {
            Err(AuthError::Invalid(msg)) => assert!(msg.contains("`sub`"), "{msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn missing_exp() {
        let c = TestClaims {
            sub: Some("alice".into()),
            ..TestClaims::default()
        };
        let token = sign_hs256(&c, SECRET);
        match hs256().authenticate(&bearer(&token), NOW_MS) {
            Err(AuthError::Invalid(msg)) => assert!(msg.contains("`exp`"), "{msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn ill_typed_claims_are_invalid() {
        #[derive(Serialize)]
        struct Odd {
            sub: u64,
            exp: u64,
        }
        let token = sign_hs256(
            &Odd {
                sub: 7,
                exp: NOW_S + 60,
            },
            SECRET,
        );
        assert!(matches!(
            hs256().authenticate(&bearer(&token), NOW_MS),
            Err(AuthError::Invalid(_))
        ));

        #[derive(Serialize)]
        struct StrNbf {
            sub: &'static str,
            exp: u64,
            nbf: &'static str,
        }
        let token = sign_hs256(
            &StrNbf {
                sub: "alice",
                exp: NOW_S + 60,
                nbf: "soon",
            },
            SECRET,
        );
        assert!(matches!(
            hs256().authenticate(&bearer(&token), NOW_MS),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn scope_and_watch_claims_are_read() {
        let token = sign_hs256(
            &serde_json::json!({
                "sub": "backend", "exp": NOW_S + 60,
                "scope": "openid presence:read profile",
                "presence_watch": ["bob", "carol"],
            }),
            SECRET,
        );
        let id = hs256().authenticate(&bearer(&token), NOW_MS).unwrap();
        assert!(id.presence_read);
        assert_eq!(
            id.presence_watch.as_deref(),
            Some(&["bob".to_owned(), "carol".to_owned()][..])
        );
        // A word that only contains the scope does not count.
        let token = sign_hs256(
            &serde_json::json!({"sub": "a", "exp": NOW_S + 60, "scope": "presence:readonly"}),
            SECRET,
        );
        let id = hs256().authenticate(&bearer(&token), NOW_MS).unwrap();
        assert!(!id.presence_read);
        assert_eq!(id.presence_watch, None);
        for bad in [
            serde_json::json!({"sub": "a", "exp": NOW_S + 60, "presence_watch": "bob"}),
            serde_json::json!({"sub": "a", "exp": NOW_S + 60, "presence_watch": [1]}),
            serde_json::json!({"sub": "a", "exp": NOW_S + 60, "scope": ["presence:read"]}),
        ] {
            let token = sign_hs256(&bad, SECRET);
            assert!(matches!(
                hs256().authenticate(&bearer(&token), NOW_MS),
                Err(AuthError::Invalid(_))
            ));
        }
    }

    #[test]
    fn fractional_exp_is_accepted() {
        #[derive(Serialize)]
        struct Frac {
            sub: &'static str,
            exp: f64,
        }
        let token = sign_hs256(
            &Frac {
                sub: "alice",
                exp: NOW_S as f64 + 60.5,
            },
            SECRET,
        );
        let id = hs256().authenticate(&bearer(&token), NOW_MS).unwrap();
        assert_eq!(id.expires_at_ms, Some(NOW_MS + 60_500 + LEEWAY_MS));
    }

    #[test]
    fn wrong_scheme() {
        let auth = hs256();
        let token = sign_hs256(&claims("alice", NOW_S + 60), SECRET);
        for value in [
            format!("Basic {token}"),
            token.clone(),
            "Bearer".to_owned(),
            "Bearer   ".to_owned(),
        ] {
            match auth.authenticate(&md("authorization", &value), NOW_MS) {
                Err(AuthError::Malformed(msg)) => {
                    assert!(!msg.contains(&token), "message echoes the token: {msg}")
                }
                other => panic!("{value:?}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let auth = hs256();
        let token = sign_hs256(&claims("alice", NOW_S + 60), SECRET);
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            let id = auth
                .authenticate(&md("authorization", &format!("{scheme}  {token} ")), NOW_MS)
                .unwrap();
            assert_eq!(id.user_id, "alice");
        }
    }

    #[test]
    fn rs256_valid() {
        let auth = Authenticator::jwt(settings(
            Algorithm::RS256,
            JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()),
        ))
        .unwrap();
        let token = sign_rs256(&claims("bob", NOW_S + 60));
        let id = auth.authenticate(&bearer(&token), NOW_MS).unwrap();
        assert_eq!(id.user_id, "bob");
        assert_eq!(id.expires_at_ms, Some((NOW_S + 60) * 1000 + LEEWAY_MS));
    }

    #[test]
    fn es256_valid() {
        let auth = Authenticator::jwt(settings(
            Algorithm::ES256,
            JwtKey::PublicKeyPem(EC_PUBLIC.to_vec()),
        ))
        .unwrap();
        let token = sign_es256(&claims("carol", NOW_S + 60));
        let id = auth.authenticate(&bearer(&token), NOW_MS).unwrap();
        assert_eq!(id.user_id, "carol");
    }

    #[test]
    fn rs256_token_against_ec_key_fails() {
        let auth = Authenticator::jwt(settings(
            Algorithm::ES256,
            JwtKey::PublicKeyPem(EC_PUBLIC.to_vec()),
        ))
        .unwrap();
        let token = sign_rs256(&claims("bob", NOW_S + 60));
        match auth.authenticate(&bearer(&token), NOW_MS) {
            Err(AuthError::Invalid(msg)) => assert!(msg.contains("ES256"), "{msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn hs256_token_keyed_with_rsa_public_key_is_refused() {
        // Classic algorithm confusion: an attacker HMAC-signs with the (public) RSA key.
        let auth = Authenticator::jwt(settings(
            Algorithm::RS256,
            JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()),
        ))
        .unwrap();
        let token = sign_hs256(&claims("mallory", NOW_S + 60), RSA_PUBLIC);
        assert!(matches!(
            auth.authenticate(&bearer(&token), NOW_MS),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let mut s = settings(Algorithm::HS256, JwtKey::Secret(SECRET.to_vec()));
        s.issuer = Some("https://issuer.example".into());
        s.audience = Some("presence".into());
        let auth = Authenticator::jwt(s).unwrap();

        let good = TestClaims {
            iss: Some("https://issuer.example".into()),
            aud: Some("presence".into()),
            ..claims("alice", NOW_S + 60)
        };
        let token = sign_hs256(&good, SECRET);
        assert_eq!(
            auth.authenticate(&bearer(&token), NOW_MS).unwrap().user_id,
            "alice"
        );

        let cases = [
            ("wrong iss", Some("https://evil.example"), Some("presence")),
            ("wrong aud", Some("https://issuer.example"), Some("other")),
            ("no iss", None, Some("presence")),
            ("no aud", Some("https://issuer.example"), None),
        ];
        for (what, iss, aud) in cases {
            let c = TestClaims {
                iss: iss.map(Into::into),
                aud: aud.map(Into::into),
                ..claims("alice", NOW_S + 60)
            };
            let token = sign_hs256(&c, SECRET);
            assert!(
                matches!(
                    auth.authenticate(&bearer(&token), NOW_MS),
                    Err(AuthError::Invalid(_))
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn unconfigured_audience_is_not_checked() {
        let c = TestClaims {
            iss: Some("anyone".into()),
            aud: Some("anything".into()),
            ..claims("alice", NOW_S + 60)
        };
        let token = sign_hs256(&c, SECRET);
        assert!(hs256().authenticate(&bearer(&token), NOW_MS).is_ok());
    }

    #[test]
    fn jwt_settings_are_validated() {
        let err = |s: JwtSettings| Authenticator::jwt(s).unwrap_err();

        let e = err(settings(Algorithm::HS512, JwtKey::Secret(SECRET.to_vec())));
        assert!(e.contains("not supported"), "{e}");
        let e = err(settings(
            Algorithm::PS256,
            JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()),
        ));
        assert!(e.contains("not supported"), "{e}");
        let e = err(settings(Algorithm::HS256, JwtKey::Secret(Vec::new())));
        assert!(e.contains("non-empty"), "{e}");
        let e = err(settings(
            Algorithm::HS256,
            JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()),
        ));
        assert!(e.contains("shared secret"), "{e}");
        let e = err(settings(Algorithm::RS256, JwtKey::Secret(SECRET.to_vec())));
        assert!(e.contains("PEM"), "{e}");

        let garbage = b"-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n";
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let e = err(settings(alg, JwtKey::PublicKeyPem(garbage.to_vec())));
            assert!(e.contains("PEM"), "{e}");
            let e = err(settings(alg, JwtKey::PublicKeyPem(b"hello".to_vec())));
            assert!(e.contains("PEM"), "{e}");
        }
        // Key of the wrong type for the algorithm.
        assert!(Authenticator::jwt(settings(
            Algorithm::RS256,
            JwtKey::PublicKeyPem(EC_PUBLIC.to_vec())
        ))
        .is_err());
        assert!(Authenticator::jwt(settings(
            Algorithm::ES256,
            JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec())
        ))
        .is_err());
        // Private key where the public key belongs.
        assert!(Authenticator::jwt(settings(
            Algorithm::RS256,
            JwtKey::PublicKeyPem(RSA_PRIVATE.to_vec())
        ))
        .is_err());
        assert!(Authenticator::jwt(settings(
            Algorithm::ES256,
            JwtKey::PublicKeyPem(EC_PRIVATE.to_vec())
        ))
        .is_err());

        let mut s = settings(Algorithm::HS256, JwtKey::Secret(SECRET.to_vec()));
        s.audience = Some(String::new());
        assert!(err(s).contains("audience"));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let s = settings(
            Algorithm::HS256,
            JwtKey::Secret(b"hunter2-hunter2".to_vec()),
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        let auth = Authenticator::jwt(s).unwrap();
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn clones_share_the_verifier() {
        let auth = hs256();
        let clone = auth.clone();
        assert!(Arc::ptr_eq(
            auth.jwt.as_ref().unwrap(),
            clone.jwt.as_ref().unwrap()
        ));
        let token = sign_hs256(&claims("alice", NOW_S + 60), SECRET);
        assert_eq!(
            clone.authenticate(&bearer(&token), NOW_MS),
            auth.authenticate(&bearer(&token), NOW_MS)
        );
    }
}
