//! Bearer tokens: who is calling, which tenants they may touch, in which role.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};

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
}

impl Token {
    pub fn grants(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == "*" || t == tenant)
    }
}

/// The configured tokens, found by the BLAKE3 hash of their secret, so that a
/// lookup's timing says nothing about how much of a guessed secret was right.
#[derive(Debug, Default, Clone)]
pub struct Auth {
    by_secret_hash: HashMap<[u8; 32], Arc<Token>>,
}

impl Auth {
    pub fn new(tokens: impl IntoIterator<Item = (String, Token)>) -> Auth {
        let by_secret_hash =
            tokens.into_iter().map(|(secret, token)| (*blake3::hash(secret.as_bytes()).as_bytes(), Arc::new(token))).collect();
        Auth { by_secret_hash }
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
        self.by_secret_hash.get(blake3::hash(secret.as_bytes()).as_bytes()).cloned().ok_or_else(|| unauthenticated("unknown token"))
    }
}
