//! Bearer tokens: who is calling, which tenants they may touch, in which role.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use sha2::{Digest, Sha256};

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Commands and queries.
    Client,
    /// Also forensics and campaign resume.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Recorded as the actor of every event the token causes.
    pub name: crate::core::Text,
    /// Tenants the token is granted; `*` grants all.
    pub tenants: Vec<String>,
    pub role: Role,
    /// `rate_per_sec` and `burst` of its `[[token]]`: beyond them, 429 `rate_limited`.
    pub rate: Option<Rate>,
}

impl Token {
    pub fn grants(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == "*" || t == tenant)
    }
}

/// A token's request rate: `per_sec` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: NonZeroU32,
    pub burst: NonZeroU32,
}

/// How a token's secret is configured: as itself (`secret`), or as the hex
/// SHA-256 of it (`secret_sha256`), so that the config file need not hold it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Sha256([u8; 32]),
}

impl Secret {
    /// The SHA-256 of the secret, which is all the server keeps of it.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Secret::Plain(secret) => sha256(secret.as_bytes()),
            Secret::Sha256(digest) => *digest,
        }
    }

    /// `secret_sha256`'s value: 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Secret> {
        if hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Secret::Sha256(digest))
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Secret {
        Secret::Plain(secret.to_owned())
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Secret {
        Secret::Plain(secret)
    }
}

/// Never prints the secret, so that no `{:?}` of a config can log it.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Plain(_) => "Secret::Plain(..)",
            Secret::Sha256(_) => "Secret::Sha256(..)",
        })
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A token with its rate limiter (one GCRA cell per token, from `governor`).
#[derive(Debug)]
struct Entry {
    token: Arc<Token>,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// The configured tokens, found by the SHA-256 of their secret. A lookup
/// hashes what the request presents, whatever it is, then finds the digest in
/// a map: its timing depends on the digest, never on how many leading
/// characters of a guessed secret are right, and learning a digest's bytes
/// does not give a secret that hashes to it (preimage resistance). No byte of
/// a secret is compared with a byte of a guess anywhere.
#[derive(Debug, Default, Clone)]
pub struct Auth {
    by_secret_digest: Arc<HashMap<[u8; 32], Entry>>,
}

impl Auth {
    pub fn new<S: Into<Secret>>(tokens: impl IntoIterator<Item = (S, Token)>) -> Auth {
        let by_secret_digest = tokens
            .into_iter()
            .map(|(secret, token)| {
                let limiter =
                    token.rate.map(|rate| DefaultDirectRateLimiter::direct(Quota::per_second(rate.per_sec).allow_burst(rate.burst)));
                (secret.into().digest(), Entry { token: Arc::new(token), limiter })
            })
            .collect();
        Auth { by_secret_digest: Arc::new(by_secret_digest) }
    }

    /// The token of a request's `Authorization` headers: exactly one, `Bearer`
    /// (any case), one space, the secret, nothing around it.
    pub fn authenticate<'a>(&self, mut authorization: impl Iterator<Item = &'a HeaderValue>) -> Result<Arc<Token>, ApiError> {
        let unauthenticated = |detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail);
        let header = authorization.next().ok_or_else(|| unauthenticated("an `Authorization: Bearer <secret>` header is required"))?;
        if authorization.next().is_some() {
            return Err(unauthenticated("a request carries one Authorization header, not several"));
        }
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, secret)| {
                scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty() && secret.trim() == *secret && !secret.contains(' ')
            })
            .map(|(_, secret)| secret)
            .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <secret>`, one space between them"))?;
        let entry = self.by_secret_digest.get(&sha256(secret.as_bytes())).ok_or_else(|| unauthenticated("unknown token"))?;
        if let Some(limiter) = &entry.limiter
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Whole seconds, rounded up, at least one: Retry-After has no fractions.
            let retry_after_secs = wait.as_secs_f64().ceil().max(1.0) as u32;
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "this token is over its request rate; retry later")
                .retry_after(retry_after_secs));
        }
        Ok(entry.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(rate: Option<Rate>) -> Token {
        Token { name: "t".into(), tenants: vec!["*".into()], role: Role::Client, rate }
    }

    fn bearer(secret: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {secret}")).unwrap()
    }

    #[test]
    fn a_secret_configured_by_its_sha256_authenticates_as_the_secret_itself() {
        let hex: String = sha256(b"s3cr3t-value-0123").iter().map(|b| format!("{b:02x}")).collect();
        let auth = Auth::new([(Secret::from_hex(&hex).unwrap(), token(None))]);
        assert!(auth.authenticate([bearer("s3cr3t-value-0123")].iter()).is_ok());
        assert_eq!(auth.authenticate([bearer(&hex)].iter()).unwrap_err().code, "unauthenticated", "the digest is not the secret");
        for bad in ["", "abc", &hex[1..], &format!("{}zz", &hex[2..])] {
            assert!(Secret::from_hex(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn beyond_its_burst_a_token_is_429_with_retry_after_in_whole_seconds() {
        let rate = Rate { per_sec: NonZeroU32::new(1).unwrap(), burst: NonZeroU32::new(3).unwrap() };
        let auth = Auth::new([("limited-secret-0000", token(Some(rate))), ("free-secret-0000000", token(None))]);
        for _ in 0..3 {
            assert!(auth.authenticate([bearer("limited-secret-0000")].iter()).is_ok());
        }
        let refused = auth.authenticate([bearer("limited-secret-0000")].iter()).unwrap_err();
        assert_eq!((refused.status, refused.code, refused.retry_after_secs), (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(1)));
        for _ in 0..100 {
            assert!(auth.authenticate([bearer("free-secret-0000000")].iter()).is_ok(), "another token is not limited");
        }
    }

    #[test]
    fn debug_output_never_holds_a_secret() {
        assert!(!format!("{:?}", Secret::from("s3cr3t-value-0123")).contains("s3cr3t"));
    }
}
