//! A refused command as the rejection journal keeps it: evidence of who asked
//! for what and what it ran into. A plain record; the journal is `rejections`.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::Text;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionRecord {
    pub recorded_at: DateTime<Utc>,
    pub tenant: Text,
    pub actor: Text,
    pub request_id: Text,
    pub idempotency_key: Option<Text>,
    pub code: Text,
    pub detail: String,
    pub conflicts_with: Option<String>,
    /// The request it came from (empty when it did not come over HTTP).
    pub method: Text,
    pub path: Text,
    pub body: Bytes,
}
