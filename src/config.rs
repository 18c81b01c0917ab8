//! The TOML configuration file (API.md's `[[token]]` and the limits), checked
//! field by field so that a mistake is named before the server starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::Rules;
use crate::http::ReadLimits;
use crate::http::auth::{Rate, Role, Secret, Token};
use crate::http::server::ConnectionLimits;
use crate::log::FileLogOptions;
use crate::rejections::JournalConfig;
use crate::snapshots::SnapshotConfig;
use crate::validate::{TENANT_FORM, valid_tenant};
use crate::writer::WriterConfig;

pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Shorter secrets are accepted (API.md's example is 12 characters) with a warning.
pub const SECRET_LEN_RECOMMENDED: usize = 16;
/// The name of the generated admin token, the actor of what it causes.
pub const ADMIN_TOKEN_NAME: &str = "admin";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub rules: RulesSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub token: Vec<TokenSection>,
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]` in a binary built without cluster mode: taken whatever it
/// holds, so that it is refused by name rather than as an unknown field.
#[cfg(not(feature = "cluster"))]
pub type ClusterSection = serde::de::IgnoredAny;

/// `[cluster]`: API.md's cluster mode on NATS JetStream.
#[cfg(feature = "cluster")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub nats: Vec<String>,
    pub node: String,
    pub advertise: String,
    #[serde(default = "ClusterConfig::default_partitions")]
    pub partitions: u32,
    #[serde(default = "ClusterConfig::default_replicas")]
    pub replicas: usize,
    #[serde(default = "ClusterConfig::default_lease_secs")]
    pub lease_secs: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    /// Whether the generated admin token (`<data_dir>/admin.token`) is served
    /// beside the `[[token]]`s; default true.
    pub admin_token: Option<bool>,
    /// Origins whose browser pages may call the API (CORS); none by default.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Commands waiting for the writer beyond this are answered 503 `overloaded`.
    pub queue_len_max: usize,
    /// Commands sharing one fdatasync, at most.
    pub batch_len_max: usize,
    /// A log segment is closed once it would grow past this many bytes.
    pub segment_bytes_max: u64,
    /// The rejection journal keeps at most this many segments (older ones are deleted)...
    pub rejections_segments_max: usize,
    /// ...of at most this many bytes each.
    pub rejections_segment_bytes_max: u64,
    /// Reads that scan the log (`/events`, `/rejections`, `/audit`, `as_of`) running at once.
    pub scans_max: usize,
    /// Live event streams open at once.
    pub streams_max: usize,
    /// A schedule for a doctor new to a clinic that has this many is 422 `too_many_doctors`.
    pub doctors_per_clinic_max: u32,
    /// Active holds per tenant; a hold beyond them is 429 `too_many_holds`.
    pub holds_max: u32,
    /// Idempotency answers held at most; a new key beyond them is answered 503 `overloaded`.
    pub idempotency_keys_max: usize,
    /// HTTP connections open at once, at most (API.md's name); more wait unaccepted.
    pub max_connections: usize,
    /// Requests being answered at once, at most; more are answered 503 `overloaded`.
    pub requests_in_flight_max: usize,
    /// A request's headers must arrive within this, or the connection is closed.
    pub header_timeout_secs: u64,
    /// A whole request must arrive within this, or it is answered 408.
    pub request_timeout_secs: u64,
    /// A snapshot of the state is written each time the ledger grows this many events.
    pub snapshot_every_events: u64,
    /// Snapshots beyond the newest this many are deleted.
    pub snapshots_kept: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let writer = WriterConfig::default();
        let connections = ConnectionLimits::default();
        LimitsSection {
            queue_len_max: writer.queue_len_max,
            batch_len_max: writer.batch_len_max,
            segment_bytes_max: FileLogOptions::default().segment_bytes_max,
            rejections_segments_max: JournalConfig::default().segments_max,
            rejections_segment_bytes_max: JournalConfig::default().segment_bytes_max,
            scans_max: ReadLimits::default().scans_max,
            streams_max: ReadLimits::default().streams_max,
            doctors_per_clinic_max: Rules::default().doctors_per_clinic_max,
            holds_max: Rules::default().holds_max,
            idempotency_keys_max: writer.idempotency_keys_max,
            max_connections: connections.connections_max,
            requests_in_flight_max: connections.requests_in_flight_max,
            header_timeout_secs: connections.header_timeout.as_secs(),
            request_timeout_secs: connections.request_timeout.as_secs(),
            snapshot_every_events: SnapshotConfig::default().every_events,
            snapshots_kept: SnapshotConfig::default().kept,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSection {
    /// How long an Idempotency-Key's answer is kept.
    pub idempotency_retention_secs: u64,
    /// `external_created_at` older than this is refused as stale.
    pub freshness_window_secs: u64,
    /// How long a phone-number claim holds off other claims.
    pub phone_lease_secs: u64,
    /// A number is called at most once this often, across campaigns.
    pub call_cooldown_secs: u64,
    /// A campaign halts after this many consecutive failed calls...
    pub campaign_failures_max: u32,
    /// ...or this many refused duplicate calls within `duplicate_window_secs`.
    pub campaign_duplicates_max: u32,
    pub duplicate_window_secs: u64,
    /// How long a slot offered from the waitlist is held for its patient.
    pub waitlist_offer_secs: u64,
}

impl Default for RulesSection {
    fn default() -> Self {
        let rules = Rules::default();
        RulesSection {
            idempotency_retention_secs: rules.idempotency_retention.num_seconds() as u64,
            freshness_window_secs: rules.freshness_window.num_seconds() as u64,
            phone_lease_secs: rules.phone_lease.num_seconds() as u64,
            call_cooldown_secs: rules.call_cooldown.num_seconds() as u64,
            campaign_failures_max: rules.campaign_failures_max,
            campaign_duplicates_max: rules.campaign_duplicates_max,
            duplicate_window_secs: rules.duplicate_window.num_seconds() as u64,
            waitlist_offer_secs: rules.waitlist_offer_secs.into(),
        }
    }
}

/// `[retention]`: how long a clinic's day stays open (API.md "Open and closed days").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// A clinic's day D stays open through D + this many days, in its zone.
    pub open_days_past: u32,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection { open_days_past: Rules::default().open_days_past }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    pub name: String,
    /// The secret itself, or...
    pub secret: Option<String>,
    /// ...the hex SHA-256 of it (exactly one of the two), so that the file
    /// need not hold a secret.
    pub secret_sha256: Option<String>,
    pub tenants: Vec<String>,
    pub role: Role,
    /// Requests per second on average, beyond which 429 `rate_limited`...
    pub rate_per_sec: Option<u32>,
    /// ...allowing this many at once (default: `rate_per_sec`).
    pub burst: Option<u32>,
}

/// The checked configuration the server runs with.
#[derive(Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub writer: WriterConfig,
    pub log: FileLogOptions,
    pub rules: Rules,
    pub journal: JournalConfig,
    pub read: ReadLimits,
    pub connections: ConnectionLimits,
    pub snapshots: SnapshotConfig,
    /// Origins allowed to call the API from a browser (`[server] cors_origins`).
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// The configured `[[token]]`s: (secret, token).
    pub tokens: Vec<(Secret, Token)>,
    /// Serve the generated admin token of `<data_dir>/admin.token` too
    /// (created on first start), named [`ADMIN_TOKEN_NAME`]. Single node only:
    /// a cluster's nodes must share every token.
    pub admin_token: bool,
    /// Set with a `[cluster]` section: the ledger runs as one node of a cluster.
    #[cfg(feature = "cluster")]
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A TOML error by line and column, without the quoted source line toml's own
/// message carries: that line may be a `secret = "..."`.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |at| at + 1);
            let column = before.len() - line_start + 1;
            // The key of that line, which names the field; never its value.
            let key = text[line_start..].lines().next().and_then(|l| l.split_once('=')).map(|(key, _)| key.trim()).unwrap_or("");
            let key = if key.is_empty() || key.len() > 64 { String::new() } else { format!(" (`{key}`)") };
            format!("line {line}, column {column}{key}: {}", error.message().trim_end())
        }
        None => error.message().trim_end().to_owned(),
    }
}

/// A CORS origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<axum::http::HeaderValue, ConfigError> {
    let bad = |why: &str| field_error("server.cors_origins", format!("{origin:?} {why}"));
    let uri: axum::http::Uri = origin.parse().map_err(|_| bad("is not an origin such as https://app.example"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(bad("is not an origin such as https://app.example (http or https, then the host)"));
    }
    if origin.ends_with('/') || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("has a path: an origin is scheme://host[:port] only"));
    }
    axum::http::HeaderValue::from_str(origin).map_err(|_| bad("is not a valid header value"))
}

/// The server's check of a configured `secret`: shorter than
/// [`SECRET_LEN_RECOMMENDED`] is easy to guess (and warned about at start-up).
pub fn easy_to_guess(secret: &str) -> bool {
    secret.len() < SECRET_LEN_RECOMMENDED
}

/// `host:port`, the host an IP address or a name (`localhost:9090`), resolved
/// now: the server listens on the first address the name resolves to.
fn resolve_listen(listen: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let (host, port) = listen.rsplit_once(':').ok_or("expected host:port, such as 127.0.0.1:8080 or localhost:8080")?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("expected host:port, such as 127.0.0.1:8080 or localhost:8080".to_owned());
    }
    let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(listen).map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn field_error(field: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("field `{field}`: {problem}"))
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(field: &str, value: T, min: T, max: T) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(field_error(field, format!("{value} is outside {min}..={max}")));
    }
    Ok(value)
}

impl Config {
    /// Reads `path` (if any) and applies the command line's overrides.
    pub fn load(path: Option<&Path>, data_dir: Option<PathBuf>, listen: Option<String>) -> Result<Config, ConfigError> {
        let file = match path {
            None => ConfigFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), toml_error(&text, &e))))?
            }
        };
        Config::from_file(file, data_dir, listen)
    }

    pub fn from_file(file: ConfigFile, data_dir: Option<PathBuf>, listen: Option<String>) -> Result<Config, ConfigError> {
        #[cfg(not(feature = "cluster"))]
        if file.cluster.is_some() {
            return Err(field_error("cluster", NO_CLUSTER_MODE));
        }
        // A mistake names where the value came from: the flag, or the file.
        let (listen, origin) = match (listen, file.server.listen) {
            (Some(listen), _) => (listen, "--listen"),
            (None, Some(listen)) => (listen, "server.listen"),
            (None, None) => (DEFAULT_LISTEN.to_owned(), "server.listen"),
        };
        let listen = resolve_listen(&listen).map_err(|problem| ConfigError(format!("{origin}: {listen:?}: {problem}")))?;
        let limits = &file.limits;
        let writer = WriterConfig {
            queue_len_max: check_range("limits.queue_len_max", limits.queue_len_max, 1, 1 << 20)?,
            batch_len_max: check_range("limits.batch_len_max", limits.batch_len_max, 1, 1 << 16)?,
            idempotency_keys_max: check_range("limits.idempotency_keys_max", limits.idempotency_keys_max, 1, 1 << 32)?,
            ..WriterConfig::default()
        };
        let journal = JournalConfig {
            segments_max: check_range("limits.rejections_segments_max", limits.rejections_segments_max, 2, 1 << 20)?,
            segment_bytes_max: check_range("limits.rejections_segment_bytes_max", limits.rejections_segment_bytes_max, 4096, 1 << 32)?,
        };
        let read = ReadLimits {
            scans_max: check_range("limits.scans_max", limits.scans_max, 1, 1024)?,
            streams_max: check_range("limits.streams_max", limits.streams_max, 1, 1 << 16)?,
        };
        let log = FileLogOptions { segment_bytes_max: check_range("limits.segment_bytes_max", limits.segment_bytes_max, 4096, 1 << 32)? };
        let request_timeout_secs = check_range("limits.request_timeout_secs", limits.request_timeout_secs, 1, 3600)?;
        let header_timeout_secs = check_range("limits.header_timeout_secs", limits.header_timeout_secs, 1, 3600)?;
        // Both count from the moment the connection is ready for the request, so
        // a header timeout past the request timeout would never be the one to fire.
        if header_timeout_secs > request_timeout_secs {
            return Err(field_error(
                "limits.header_timeout_secs",
                format!("{header_timeout_secs} exceeds limits.request_timeout_secs ({request_timeout_secs})"),
            ));
        }
        let connections = ConnectionLimits {
            connections_max: check_range("limits.max_connections", limits.max_connections, 1, 1 << 20)?,
            requests_in_flight_max: check_range("limits.requests_in_flight_max", limits.requests_in_flight_max, 1, 1 << 20)?,
            header_timeout: std::time::Duration::from_secs(header_timeout_secs),
            request_timeout: std::time::Duration::from_secs(request_timeout_secs),
        };
        let snapshots = SnapshotConfig {
            every_events: check_range("limits.snapshot_every_events", limits.snapshot_every_events, 1, 1 << 40)?,
            kept: check_range("limits.snapshots_kept", limits.snapshots_kept, 1, 1000)?,
        };
        let seconds = |field: &str, value: u64| -> Result<chrono::Duration, ConfigError> {
            Ok(chrono::Duration::seconds(check_range(field, value, 1, 365 * 86400)? as i64))
        };
        let r = &file.rules;
        let rules = Rules {
            idempotency_retention: seconds("rules.idempotency_retention_secs", r.idempotency_retention_secs)?,
            freshness_window: seconds("rules.freshness_window_secs", r.freshness_window_secs)?,
            phone_lease: seconds("rules.phone_lease_secs", r.phone_lease_secs)?,
            call_cooldown: seconds("rules.call_cooldown_secs", r.call_cooldown_secs)?,
            campaign_failures_max: check_range("rules.campaign_failures_max", r.campaign_failures_max, 1, 1000)?,
            campaign_duplicates_max: check_range("rules.campaign_duplicates_max", r.campaign_duplicates_max, 1, 1000)?,
            duplicate_window: seconds("rules.duplicate_window_secs", r.duplicate_window_secs)?,
            waitlist_offer_secs: check_range("rules.waitlist_offer_secs", r.waitlist_offer_secs, 30, 86_400)? as u32,
            doctors_per_clinic_max: check_range("limits.doctors_per_clinic_max", limits.doctors_per_clinic_max, 1, 10_000)?,
            holds_max: check_range("limits.holds_max", limits.holds_max, 1, 10_000_000)?,
            // A century: beyond it, every date a booking can name is open.
            open_days_past: check_range("retention.open_days_past", file.retention.open_days_past, 0, 36_525)?,
        };
        let mut tokens: Vec<(Secret, Token)> = Vec::new();
        for (i, token) in file.token.into_iter().enumerate() {
            let field = |name: &str| format!("token[{i}].{name}");
            if token.name.trim().is_empty() {
                return Err(field_error(&field("name"), "must not be empty"));
            }
            // Errors name the field, never echo a secret's value.
            let secret = match (token.secret, token.secret_sha256) {
                (Some(_), Some(_)) => return Err(field_error(&field("secret"), "give `secret` or `secret_sha256`, not both")),
                (None, None) => return Err(field_error(&field("secret"), "one of `secret` and `secret_sha256` is required")),
                (Some(secret), None) => {
                    if secret.is_empty() || secret.trim() != secret {
                        return Err(field_error(&field("secret"), "must not be empty or have surrounding spaces"));
                    }
                    if easy_to_guess(&secret) {
                        tracing::warn!(
                            "token {:?}: a secret of fewer than {SECRET_LEN_RECOMMENDED} characters is easy to guess",
                            token.name
                        );
                    }
                    Secret::Plain(secret)
                }
                (None, Some(hex)) => Secret::from_hex(&hex.to_ascii_lowercase())
                    .ok_or_else(|| field_error(&field("secret_sha256"), "must be 64 hex digits (the SHA-256 of the secret)"))?,
            };
            // Idempotency keys are scoped by token name, so names must be unique.
            if tokens.iter().any(|(_, t)| *t.name == *token.name) {
                return Err(field_error(&field("name"), format!("{:?} is the name of another token", token.name)));
            }
            if tokens.iter().any(|(other, _)| other.digest() == secret.digest()) {
                return Err(field_error(&field("secret"), "is the secret of another token"));
            }
            if token.tenants.is_empty() {
                return Err(field_error(&field("tenants"), "must name at least one tenant, or \"*\""));
            }
            if let Some(bad) = token.tenants.iter().find(|t| *t != "*" && !valid_tenant(t)) {
                return Err(field_error(&field("tenants"), format!("{bad:?} does not match {TENANT_FORM}")));
            }
            let rate = match (token.rate_per_sec, token.burst) {
                (None, None) => None,
                (None, Some(_)) => return Err(field_error(&field("burst"), "needs rate_per_sec")),
                (Some(per_sec), burst) => {
                    let per_sec = check_range(&field("rate_per_sec"), per_sec, 1, 1_000_000)?;
                    let burst = check_range(&field("burst"), burst.unwrap_or(per_sec), 1, 1_000_000)?;
                    Some(Rate { per_sec: per_sec.try_into().expect("checked"), burst: burst.try_into().expect("checked") })
                }
            };
            tokens.push((secret, Token { name: token.name.into(), tenants: token.tenants, role: token.role, rate }));
        }
        let clustered = file.cluster.is_some();
        #[cfg(feature = "cluster")]
        let cluster = file.cluster.map(|c| ClusterConfig::check(c, &tokens)).transpose()?;
        // A cluster's nodes share every token: none serves a generated one of its own.
        let admin_token = file.server.admin_token.unwrap_or(true) && !clustered;
        let cors_origins = file.server.cors_origins.iter().map(|origin| check_origin(origin)).collect::<Result<_, _>>()?;
        if file.server.admin_token == Some(false) && tokens.is_empty() {
            return Err(field_error("server.admin_token", "false with no [[token]]: no request could authenticate"));
        }
        if admin_token && let Some(i) = tokens.iter().position(|(_, t)| &*t.name == ADMIN_TOKEN_NAME) {
            return Err(field_error(
                &format!("token[{i}].name"),
                format!(
                    "{ADMIN_TOKEN_NAME:?} is the generated admin token's name (<data_dir>/admin.token): rename this token, \
                     or set server.admin_token = false"
                ),
            ));
        }
        Ok(Config {
            #[cfg(feature = "cluster")]
            cluster,
            data_dir: data_dir.or(file.server.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            writer,
            log,
            rules,
            journal,
            read,
            connections,
            snapshots,
            tokens,
            admin_token,
            cors_origins,
        })
    }
}

/// The checked `[cluster]` section.
#[cfg(feature = "cluster")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub nats: Vec<String>,
    pub node: String,
    /// Where the other nodes reach this node's HTTP API, without a trailing slash.
    pub advertise: String,
    pub partitions: u32,
    pub replicas: usize,
    pub lease_secs: u64,
}

/// Why a binary built with `--no-default-features` refuses a `[cluster]` section.
#[cfg(not(feature = "cluster"))]
pub const NO_CLUSTER_MODE: &str = "this binary was built without cluster mode (the cargo feature `cluster`, \
     left out by --no-default-features): build it with default features to run a cluster node";

#[cfg(feature = "cluster")]
impl ClusterConfig {
    fn default_partitions() -> u32 {
        8
    }
    fn default_replicas() -> usize {
        3
    }
    fn default_lease_secs() -> u64 {
        5
    }

    fn check(c: ClusterSection, tokens: &[(Secret, Token)]) -> Result<ClusterConfig, ConfigError> {
        if c.nats.is_empty() {
            return Err(field_error("cluster.nats", "must name at least one NATS server"));
        }
        if c.node.is_empty() || !c.node.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
            return Err(field_error("cluster.node", format!("{:?} must be letters, digits, '-' or '_'", c.node)));
        }
        let advertise = c.advertise.trim_end_matches('/').to_owned();
        if !advertise.starts_with("http://") || advertise.parse::<axum::http::Uri>().is_err() {
            return Err(field_error("cluster.advertise", format!("{:?} is not an http:// URL", c.advertise)));
        }
        // Any node forwards any request with the caller's token: every node must know the same tokens.
        if tokens.is_empty() {
            return Err(field_error("cluster", "cluster mode needs [[token]]s, the same on every node (no per-node admin.token)"));
        }
        Ok(ClusterConfig {
            nats: c.nats,
            node: c.node,
            advertise,
            partitions: check_range("cluster.partitions", c.partitions, 1, 1024)?,
            replicas: check_range("cluster.replicas", c.replicas, 1, 5)?,
            lease_secs: check_range("cluster.lease_secs", c.lease_secs, 1, 3600)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError(toml_error(text, &e)))?;
        Config::from_file(file, None, None)
    }

    #[test]
    fn defaults_and_the_token_format_of_api_md() {
        let config = parse(
            r#"
            [[token]]
            name = "kloqo-web"
            secret = "s3cr3t-value"
            tenants = ["kloqo"]
            role = "client"
            "#,
        )
        .unwrap();
        assert_eq!(config.writer.queue_len_max, 4096);
        assert_eq!(config.rules.doctors_per_clinic_max, 64);
        assert_eq!(config.writer.idempotency_keys_max, 10_000_000);
        assert_eq!(
            (config.connections.connections_max, config.connections.header_timeout.as_secs(), config.connections.request_timeout.as_secs()),
            (10_000, 10, 30)
        );
        assert_eq!((config.snapshots.every_events, config.snapshots.kept), (1_000_000, 2));
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.tokens[0].1, Token { name: "kloqo-web".into(), tenants: vec!["kloqo".into()], role: Role::Client, rate: None });
    }

    #[test]
    fn secret_sha256_and_rates() {
        let config = parse(
            r#"
            [[token]]
            name = "hashed"
            secret_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
            tenants = ["kloqo"]
            role = "client"
            rate_per_sec = 5
            [[token]]
            name = "bursty"
            secret = "0123456789abcdef"
            tenants = ["kloqo"]
            role = "client"
            rate_per_sec = 5
            burst = 20
            "#,
        )
        .unwrap();
        // 9f86...: the SHA-256 of "test".
        assert_eq!(config.tokens[0].0, Secret::Sha256(Secret::from("test").digest()));
        let rate = |per_sec: u32, burst: u32| Some(Rate { per_sec: per_sec.try_into().unwrap(), burst: burst.try_into().unwrap() });
        assert_eq!((config.tokens[0].1.rate, config.tokens[1].1.rate), (rate(5, 5), rate(5, 20)));
    }

    /// README's sample configuration parses, and its secrets pass the server's own check.
    #[test]
    fn the_readme_sample_config_parses_and_its_secrets_are_not_easy_to_guess() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n[server]\n").expect("README's sample config") + "```toml\n".len();
        let text = &readme[start..start + readme[start..].find("```").unwrap()];
        let config = parse(text).unwrap();
        assert_eq!(config.tokens.len(), 2);
        assert!(config.admin_token);
        let file: ConfigFile = toml::from_str(text).unwrap();
        for secret in file.token.iter().filter_map(|t| t.secret.as_deref()) {
            assert!(!easy_to_guess(secret), "README's sample secret {secret:?} is easy to guess by the server's own check");
        }
    }

    /// README's `[cluster]` sample is a node's configuration in a build with
    /// cluster mode; a build without it refuses the section by name, whatever it holds.
    #[test]
    fn a_cluster_section_needs_a_build_with_cluster_mode() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n[cluster]\n").expect("README's cluster sample") + "```toml\n".len();
        let section = &readme[start..start + readme[start..].find("```").unwrap()];
        let text = format!("[[token]]\nname = \"ops\"\nsecret = \"0123456789abcdef\"\ntenants = [\"*\"]\nrole = \"admin\"\n{section}");
        #[cfg(feature = "cluster")]
        {
            let config = parse(&text).unwrap();
            assert_eq!(config.cluster.map(|c| (c.node, c.partitions)), Some(("n1".to_owned(), 8)));
            assert!(!config.admin_token, "a cluster's nodes share every token");
        }
        #[cfg(not(feature = "cluster"))]
        for text in [text.as_str(), "[cluster]", "[cluster]\nnot_a_field = 1"] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains("`cluster`") && error.contains("built without cluster mode"), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn the_listen_address_may_be_a_name_and_a_mistake_names_where_it_came_from() {
        let config = Config::from_file(ConfigFile::default(), None, Some("localhost:9090".into())).unwrap();
        assert!(config.listen.ip().is_loopback() && config.listen.port() == 9090, "{}", config.listen);
        let flag = Config::from_file(ConfigFile::default(), None, Some("localhost".into())).unwrap_err().to_string();
        assert!(flag.starts_with("--listen: "), "{flag}");
        let file: ConfigFile = toml::from_str("[server]\nlisten = \"localhost:99999\"").unwrap();
        let from_file = Config::from_file(file, None, None).unwrap_err().to_string();
        assert!(from_file.starts_with("server.listen: "), "{from_file}");
    }

    #[test]
    fn mistakes_are_named() {
        const TOKEN_A: &str = "[[token]]\nname = \"a\"\ntenants = [\"x\"]\nrole = \"client\"\n";
        const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        for (text, named) in [
            ("[limits]\nbatch_len_max = 0", "limits.batch_len_max"),
            ("[limits]\nqueue_len_maximum = 3", "queue_len_maximum"),
            ("[limits]\ndoctors_per_clinic_max = 0", "limits.doctors_per_clinic_max"),
            ("[limits]\ndoctors_per_clinic_max = 10001", "limits.doctors_per_clinic_max"),
            ("[limits]\nholds_max = 0", "limits.holds_max"),
            ("[retention]\nopen_days_past = 36526", "retention.open_days_past"),
            ("[retention]\nopen_days = 3", "open_days"),
            ("[limits]\nidempotency_keys_max = 0", "limits.idempotency_keys_max"),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            ("[limits]\nrequests_in_flight_max = 0", "limits.requests_in_flight_max"),
            ("[limits]\nrequest_timeout_secs = 0", "limits.request_timeout_secs"),
            ("[limits]\nheader_timeout_secs = 31", "limits.header_timeout_secs"),
            ("[limits]\nsnapshot_every_events = 0", "limits.snapshot_every_events"),
            ("[limits]\nsnapshots_kept = 0", "limits.snapshots_kept"),
            ("[limits]\nsnapshots_kept = 1001", "limits.snapshots_kept"),
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            ("[server]\nadmin_token = false", "server.admin_token"),
            ("[server]\ncors_origins = [\"app.example\"]", "server.cors_origins"),
            ("[server]\ncors_origins = [\"https://app.example/\"]", "server.cors_origins"),
            ("[server]\ncors_origins = [\"ftp://app.example\"]", "server.cors_origins"),
            ("[[token]]\nname = \"admin\"\nsecret = \"0123456789abcdef\"\ntenants = [\"x\"]\nrole = \"admin\"", "token[0].name"),
            ("[rules]\nfreshness_window_secs = -1", "freshness_window_secs"),
            ("[[token]]\nname = \"a\"\nsecret = \" padded \"\ntenants = [\"x\"]\nrole = \"client\"", "token[0].secret"),
            (
                "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\ntenants = [\"x\"]\nrole = \"client\"\n[[token]]\nname = \"a\"\nsecret = \"fedcba9876543210\"\ntenants = [\"x\"]\nrole = \"client\"",
                "token[1].name",
            ),
            ("[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\ntenants = [\"Bad\"]\nrole = \"client\"", "token[0].tenants"),
            ("[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\ntenants = [\"x\"]\nrole = \"root\"", "role"),
            (format!("{TOKEN_A}secret = \"0123456789abcdef\"\nsecret_sha256 = \"{SHA}\"").as_str(), "token[0].secret"),
            (TOKEN_A, "token[0].secret"),
            (format!("{TOKEN_A}secret_sha256 = \"{}\"", &SHA[1..]).as_str(), "token[0].secret_sha256"),
            (format!("{TOKEN_A}secret_sha256 = \"{}xy\"", &SHA[2..]).as_str(), "token[0].secret_sha256"),
            (format!("{TOKEN_A}secret = \"0123456789abcdef\"\nburst = 5").as_str(), "token[0].burst"),
            (format!("{TOKEN_A}secret = \"0123456789abcdef\"\nrate_per_sec = 0").as_str(), "token[0].rate_per_sec"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(named), "{text:?} gave {error:?}, which does not name {named}");
            assert!(!error.contains("0123456789abcdef"), "{error:?} echoes a secret");
        }
    }
}
