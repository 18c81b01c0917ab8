//! Cluster mode (API.md "Cluster mode"): tenants hashed onto partitions, each
//! partition's ledger one NATS JetStream stream, one writer per partition at a
//! time.
//!
//! - [`stream`]: the partition's log on its stream, fenced by the expected
//!   last sequence, mirrored into local files that the single-node read side
//!   reads unchanged.
//! - [`node`]: membership and leases (JetStream KV), and each partition this
//!   node leads: loaded from the stream, then served by the single-node
//!   writer, follower and snapshot thread (`node::start`).
//! - [`routes`]: any request to any node: served by the partition's ledger
//!   here, or forwarded to the node that leads it.
//!
//! The lease says who *should* write; the conditional append says who *can*.
//! Correctness never depends on the lease's timing.

pub mod node;
pub mod routes;
pub mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use crate::config::ClusterConfig;
use crate::config::Config;
use crate::http::auth::Auth;
use crate::writer::Clock;

/// The partition a tenant lives in: the first 8 bytes of BLAKE3 of its name,
/// modulo the partition count (stable across versions and platforms).
pub fn partition_of(tenant: &str, partitions: u32) -> u32 {
    let hash = blake3::hash(tenant.as_bytes());
    let first = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    (first % partitions as u64) as u32
}

/// Connects to the NATS servers of `config`, with JetStream acknowledgements
/// awaited up to `ack_timeout`.
pub async fn connect(config: &ClusterConfig) -> anyhow::Result<(async_nats::Client, async_nats::jetstream::Context)> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("booking-ledger {}", config.node))
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(config.nats.clone())
        .await
        .with_context(|| format!("connecting to NATS at {}", config.nats.join(", ")))?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .ack_timeout(std::time::Duration::from_secs(5))
        .max_ack_inflight(16_384)
        .backpressure_on_inflight(true)
        .build(client.clone());
    Ok((client, js))
}

/// Runs one cluster node until `shutdown` completes, then hands its
/// partitions over (their leases deleted, so that others take them at once).
pub async fn serve(
    cluster: ClusterConfig,
    listener: TcpListener,
    config: Config,
    auth: Auth,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node = %cluster.node, "cluster node {} listening on {addr}", cluster.node);
    let connections = config.connections;
    let cors_origins = config.cors_origins.clone();
    let node = node::Node::start(cluster, config, auth, clock).await?;
    on_listening(addr);
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let leases = tokio::spawn(node::run(node.clone(), stop.clone()));
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests; handing the partitions over");
    };
    let router = crate::http::layers::cors(routes::router(node.clone()), &cors_origins);
    let served = crate::http::server::serve(listener, router, connections, node.metrics.clone(), stopping).await;
    stop_sender.send_replace(true);
    leases.await.context("the lease task")?;
    served.context("serving HTTP")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// A copy of every partition's stream in local directories, each laid out as
/// a data directory, for the offline commands run against a cluster (`ledger
/// verify --config`, `ledger audit --config`). Deleted when dropped.
pub struct Downloaded {
    pub root: std::path::PathBuf,
    /// Each partition's data directory, or why its stream could not be read
    /// (a corrupt message, with its sequence).
    pub partitions: Vec<(u32, Result<std::path::PathBuf, String>)>,
}

impl Drop for Downloaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Reads every partition's stream, checking each message as a node loading it does.
pub fn download(config: &ClusterConfig, options: crate::log::FileLogOptions) -> anyhow::Result<Downloaded> {
    let root = std::env::temp_dir().join(format!("ledger-cluster-{}", uuid::Uuid::new_v4().simple()));
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let mut downloaded = Downloaded { root: root.clone(), partitions: Vec::new() };
    let (_client, js) = runtime.block_on(connect(config))?;
    for partition in 0..config.partitions {
        let data = root.join(format!("p{partition}"));
        let dirs = stream::PartitionDirs::for_data_dir(&data);
        let result = runtime.block_on(stream::download(&js, partition, &dirs, options));
        downloaded.partitions.push((partition, result.map(|_| data).map_err(|e| format!("{e:#}"))));
    }
    Ok(downloaded)
}
