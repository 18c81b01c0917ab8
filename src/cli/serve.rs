//! `ledger serve`: listen, lock the data directory, gather the tokens, then
//! run one ledger (`node::serve`) or a cluster node (`cluster::serve`), until
//! SIGTERM or SIGINT.

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{ADMIN_TOKEN_NAME, Config};
use crate::http::auth::{Auth, Role, Secret, Token};
use crate::node::{self, ADMIN_TOKEN_FILE, lock_data_dir};
use crate::writer::Clock;

/// The generated admin token for all tenants, `<data_dir>/admin.token` (mode
/// 0600), created on first start.
fn admin_token(data_dir: &Path) -> anyhow::Result<(String, Token, PathBuf)> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let secret = match fs::read_to_string(&path) {
        Ok(secret) => secret.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = new_secret();
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            writeln!(file, "{secret}")?;
            file.sync_all()?;
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
    let token = Token { name: ADMIN_TOKEN_NAME.into(), tenants: vec!["*".into()], role: Role::Admin, rate: None };
    Ok((secret, token, path))
}

/// A new token secret: 64 hex digits, 244 random bits (two UUIDv4s).
pub fn new_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The tokens a server answers to, as its start-up log names them: name,
/// role, tenants; never a secret.
fn describe_tokens(tokens: &[(Secret, Token)], admin_token: Option<&Path>) -> String {
    tokens
        .iter()
        .map(|(_, token)| {
            let role = match token.role {
                Role::Admin => "admin",
                Role::Client => "client",
            };
            let tenants = if token.tenants.iter().any(|t| t == "*") { "all tenants".to_owned() } else { token.tenants.join(", ") };
            let file = match admin_token {
                Some(path) if &*token.name == ADMIN_TOKEN_NAME => format!(", secret in {}", path.display()),
                _ => String::new(),
            };
            format!("{} ({role}: {tenants}{file})", token.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs the server until `shutdown` completes. `on_listening` learns the bound
/// address as soon as the port is open (before the projections are rebuilt).
pub async fn serve(
    mut config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    // The port first: a server that cannot listen (the port is taken) leaves
    // the data directory as it found it, no lock file, token or journal.
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("listening on {}", config.listen))?;
    let _lock = lock_data_dir(&data_dir)?;
    let mut tokens = std::mem::take(&mut config.tokens);
    let mut admin_token_path = None;
    if config.admin_token {
        anyhow::ensure!(
            tokens.iter().all(|(_, t)| &*t.name != ADMIN_TOKEN_NAME),
            "a configured token is named {ADMIN_TOKEN_NAME:?}, the generated admin token's name"
        );
        let (secret, token, path) = admin_token(&data_dir)?;
        tokens.push((secret.into(), token));
        admin_token_path = Some(path);
    }
    tracing::info!(tokens = tokens.len(), "tokens active: {}", describe_tokens(&tokens, admin_token_path.as_deref()));
    #[cfg(feature = "cluster")]
    if let Some(cluster) = config.cluster.take() {
        return crate::cluster::serve(cluster, listener, config, Auth::new(tokens), clock, shutdown, on_listening).await;
    }
    node::serve(listener, config, Auth::new(tokens), clock, shutdown, on_listening).await
}

/// Completes on SIGTERM or SIGINT.
pub async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
