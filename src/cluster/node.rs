//! One cluster node: who is alive, who leads which partition, and the
//! partitions this node leads.
//!
//! Two JetStream KV buckets, both with entries that age out after `lease_secs`:
//! `ledger_nodes` (each node puts its address every quarter lease) and
//! `ledger_leases` (one key per partition naming its leader, created when
//! free, renewed by revision every quarter lease). A node takes free
//! partitions while it leads fewer than its share (partitions / live nodes,
//! rounded up) and hands the extra ones over when it leads more, so that
//! partitions spread evenly over the live nodes.
//!
//! A partition taken is loaded from its stream (`stream::load`), recovered as
//! a single node recovers, and served by the single-node writer. A partition
//! whose writer stopped (its append was fenced, or JetStream did not
//! acknowledge) is torn down and, while the lease is still held, loaded again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use prometheus::{Histogram, HistogramOpts, IntCounter};
use serde::{Deserialize, Serialize};

use super::ClusterConfig;
use super::stream::{self, PartitionDirs};
use crate::config::Config;
use crate::http::auth::Auth;
use crate::http::{Shared, app};
use crate::metrics::Metrics;
use crate::node::{self, Started};
use crate::snapshots::{self, Dirs, SnapshotThread};
use crate::writer::{Clock, Health};

pub const NODES_BUCKET: &str = "ledger_nodes";
pub const LEASES_BUCKET: &str = "ledger_leases";

/// What the cluster adds to `/metrics`.
pub struct ClusterMetrics {
    pub leader_changes: IntCounter,
    pub append_refusals: IntCounter,
    pub lease_renewals: IntCounter,
    pub forward_seconds: Histogram,
    pub partition_load_seconds: Histogram,
}

impl ClusterMetrics {
    fn new(metrics: &Metrics) -> ClusterMetrics {
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("a valid metric");
            metrics.register(Box::new(counter.clone()));
            counter
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("a valid metric");
            metrics.register(Box::new(histogram.clone()));
            histogram
        };
        ClusterMetrics {
            leader_changes: counter("ledger_cluster_leader_changes_total", "Partitions this node started or stopped leading."),
            append_refusals: counter(
                "ledger_cluster_append_refusals_total",
                "Appends JetStream refused or did not acknowledge: the writer of that partition stopped.",
            ),
            lease_renewals: counter("ledger_cluster_lease_renewals_total", "Partition leases this node renewed."),
            forward_seconds: histogram(
                "ledger_cluster_forward_seconds",
                "Time to forward a request to the node leading its partition and get the answer.",
                prometheus::exponential_buckets(0.000_1, 2.0, 16).expect("valid buckets"),
            ),
            partition_load_seconds: histogram(
                "ledger_cluster_partition_load_seconds",
                "Time to load a partition taken over: fetch its stream, recover, start its writer.",
                prometheus::exponential_buckets(0.01, 2.0, 14).expect("valid buckets"),
            ),
        }
    }
}

/// A node's entry in `ledger_nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub advertise: String,
    /// The last position of each partition it leads, as of its last heartbeat.
    #[serde(default)]
    pub positions: BTreeMap<u32, u64>,
}

/// A partition this node leads, served.
pub struct Leading {
    pub router: Router,
    pub state: Shared,
    fence: Arc<stream::Fence>,
    threads: Mutex<Option<(std::thread::JoinHandle<()>, SnapshotThread)>>,
}

/// What this node does with a partition.
#[derive(Clone)]
pub enum Slot {
    /// Another node leads it, or nobody does.
    Follower,
    /// This node holds its lease and is loading it.
    Loading,
    Leading(Arc<Leading>),
    /// This node holds its lease but cannot serve it (the stream holds a bad record).
    Failed(String),
}

struct SlotEntry {
    /// Bumped whenever the slot changes hands, so that a load that finishes
    /// after its partition was given up does not install itself.
    generation: u64,
    slot: Slot,
    /// The end of the teardown of the last ledger served here, which a new load waits for.
    teardown: Option<Done>,
}

/// Turns true when a teardown is over.
type Done = tokio::sync::watch::Receiver<bool>;

async fn wait(done: Option<Done>) {
    if let Some(mut done) = done {
        let _ = done.wait_for(|done| *done).await;
    }
}

/// Stops a ledger served here, after the teardown `after` (if any): live
/// streams end, the last handles go, the writer drains its queue and stops.
fn teardown(leading: Arc<Leading>, after: Option<Done>) -> Done {
    let (sender, done) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait(after).await;
        leading.state.stopping.send_replace(true);
        let threads = leading.threads.lock().take();
        drop(leading);
        if let Some((writer, snapshots)) = threads {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = writer.join();
                let _ = snapshots.stop();
            })
            .await;
        }
        sender.send_replace(true);
    });
    done
}

pub struct Node {
    pub config: ClusterConfig,
    server: Config,
    auth: Auth,
    clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub cluster_metrics: ClusterMetrics,
    pub client: async_nats::Client,
    js: jetstream::Context,
    nodes: kv::Store,
    leases: kv::Store,
    slots: Vec<Mutex<SlotEntry>>,
    /// Lease revisions this node holds, by partition.
    held: Mutex<BTreeMap<u32, u64>>,
    /// Until when (milliseconds since `started`) each partition's lease is
    /// surely this node's: three quarters of a lease after the start of its
    /// last successful renewal. Past it this node serves nothing of the
    /// partition (another node may lead it by then), not even a read.
    confirmed_until: Vec<AtomicU64>,
    started: Instant,
    /// Every partition's leader as last read from `ledger_leases`, with the lease's revision.
    leaders: RwLock<Vec<Option<(String, u64)>>>,
    /// Live nodes as last read from `ledger_nodes`, and every node seen since start.
    members: RwLock<BTreeMap<String, Member>>,
    seen: RwLock<BTreeSet<String>>,
    pub forwarder: super::routes::Forwarder,
    data_dir: PathBuf,
    rounds: AtomicU64,
}

async fn bucket(js: &jetstream::Context, name: &str, config: &ClusterConfig) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age: Duration::from_secs(config.lease_secs),
        storage: jetstream::stream::StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the key-value bucket {name}"))
}

/// Retries `attempt` until it succeeds: a JetStream cluster that is starting
/// answers nothing until it has elected its metadata leader, which on a
/// loaded host has taken over a minute. The node serves nothing meanwhile
/// (it accepts connections only once started), and after the first minute
/// each failure is a warning, so an operator sees a NATS cluster that does
/// not form.
async fn patiently<T, F: std::future::Future<Output = anyhow::Result<T>>>(mut attempt: impl FnMut() -> F) -> T {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                tracing::info!("{error:#}; JetStream may still be starting, trying again");
            }
            Err(error) => {
                tracing::warn!("{error:#}; JetStream has not answered for {:?}, trying again", started.elapsed());
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

impl Node {
    /// Connects to NATS and creates the streams and buckets that do not exist yet.
    pub async fn start(config: ClusterConfig, server: Config, auth: Auth, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Node>> {
        let (client, js) = super::connect(&config).await?;
        for partition in 0..config.partitions {
            patiently(|| stream::ensure_stream(&js, partition, config.replicas)).await;
        }
        let nodes = patiently(|| bucket(&js, NODES_BUCKET, &config)).await;
        let leases = patiently(|| bucket(&js, LEASES_BUCKET, &config)).await;
        let metrics = Arc::new(Metrics::new());
        let cluster_metrics = ClusterMetrics::new(&metrics);
        let slots = (0..config.partitions).map(|_| Mutex::new(SlotEntry { generation: 0, slot: Slot::Follower, teardown: None })).collect();
        let forwarder = super::routes::Forwarder::new(server.connections.request_timeout);
        Ok(Arc::new(Node {
            leaders: RwLock::new(vec![None; config.partitions as usize]),
            confirmed_until: (0..config.partitions).map(|_| AtomicU64::new(0)).collect(),
            data_dir: server.data_dir.clone(),
            config,
            server,
            auth,
            clock,
            metrics,
            cluster_metrics,
            client,
            js,
            nodes,
            leases,
            slots,
            held: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            members: RwLock::new(BTreeMap::new()),
            seen: RwLock::new(BTreeSet::new()),
            forwarder,
            rounds: AtomicU64::new(0),
        }))
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn slot(&self, partition: u32) -> Slot {
        self.slots[partition as usize].lock().slot.clone()
    }

    /// The leader of `partition` and its address, as last read.
    pub fn leader_of(&self, partition: u32) -> Option<(String, Option<String>)> {
        let (leader, _) = self.leaders.read()[partition as usize].clone()?;
        let advertise = self.members.read().get(&leader).map(|m| m.advertise.clone());
        Some((leader, advertise))
    }

    /// Live nodes (and the ones seen since this node started that are gone).
    pub fn members(&self) -> Vec<(String, Option<Member>)> {
        let members = self.members.read();
        self.seen.read().iter().map(|name| (name.clone(), members.get(name).cloned())).collect()
    }

    pub fn leaders(&self) -> Vec<Option<String>> {
        self.leaders.read().iter().map(|leader| leader.as_ref().map(|(name, _)| name.clone())).collect()
    }

    /// Whether at least one membership round completed since start.
    pub fn has_joined(&self) -> bool {
        self.rounds.load(Ordering::Acquire) > 0
    }

    fn positions(&self) -> BTreeMap<u32, u64> {
        let mut positions = BTreeMap::new();
        for partition in 0..self.config.partitions {
            if let Slot::Leading(leading) = self.slot(partition)
                && let Ok(position) = leading.state.durable_position()
            {
                positions.insert(partition, position);
            }
        }
        positions
    }

    /// One round: heartbeat, read members and leases, renew, hand over, take.
    async fn round(self: &Arc<Self>) -> anyhow::Result<()> {
        let me = Member { advertise: self.config.advertise.clone(), positions: self.positions() };
        self.nodes.put(&self.config.node, Bytes::from(serde_json::to_vec(&me)?)).await.context("heartbeat")?;
        self.read_members().await?;
        self.read_leases().await?;
        self.renew().await;
        let alive = self.members.read().len().max(1) as u32;
        let share = self.config.partitions.div_ceil(alive) as usize;
        let held: Vec<u32> = self.held.lock().keys().copied().collect();
        if held.len() > share {
            for &partition in held.iter().rev().take(held.len() - share) {
                self.hand_over(partition).await;
            }
        } else {
            self.take_free(share - held.len()).await;
        }
        self.rounds.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    async fn read_members(&self) -> anyhow::Result<()> {
        let mut names = Vec::new();
        let mut keys = self.nodes.keys().await.context("listing nodes")?;
        while let Some(key) = keys.next().await {
            names.push(key.context("listing nodes")?);
        }
        let mut members = BTreeMap::new();
        for name in names {
            if let Some(entry) = self.nodes.entry(&name).await.context("reading a node")?
                && entry.operation == kv::Operation::Put
                && let Ok(member) = serde_json::from_slice::<Member>(&entry.value)
            {
                members.insert(name, member);
            }
        }
        self.seen.write().extend(members.keys().cloned());
        *self.members.write() = members;
        Ok(())
    }

    async fn read_leases(&self) -> anyhow::Result<()> {
        let mut leaders = vec![None; self.config.partitions as usize];
        for (partition, leader) in leaders.iter_mut().enumerate() {
            if let Some(entry) = self.leases.entry(partition.to_string()).await.context("reading a lease")?
                && entry.operation == kv::Operation::Put
            {
                *leader = Some((String::from_utf8_lossy(&entry.value).into_owned(), entry.revision));
            }
        }
        *self.leaders.write() = leaders;
        Ok(())
    }

    /// Renews every lease held; a lease that cannot be renewed is lost, and
    /// its partition stops being served here. A partition whose writer
    /// stopped is loaded again.
    async fn renew(self: &Arc<Self>) {
        let held: Vec<(u32, u64)> = self.held.lock().iter().map(|(p, r)| (*p, *r)).collect();
        for (partition, revision) in held {
            let asked = Instant::now();
            match self.leases.update(partition.to_string(), Bytes::from(self.config.node.clone()), revision).await {
                Ok(revision) => {
                    self.held.lock().insert(partition, revision);
                    self.confirm(partition, asked);
                    self.cluster_metrics.lease_renewals.inc();
                    match self.slot(partition) {
                        Slot::Leading(leading) if self.foreign_append(&leading).await => {
                            tracing::warn!(
                                partition,
                                "the stream of partition {partition} holds a message this node did not append; loading it again"
                            );
                            self.cluster_metrics.append_refusals.inc();
                            self.stop(partition);
                            self.spawn_load(partition);
                        }
                        Slot::Leading(leading) if leading.state.writer().is_ok_and(|w| writer_gave_up(&w.health())) => {
                            tracing::warn!(partition, "the writer of partition {partition} stopped; loading it again from its stream");
                            self.cluster_metrics.append_refusals.inc();
                            self.stop(partition);
                            self.spawn_load(partition);
                        }
                        // A load that failed (NATS unreachable, a bad record) is tried again now and then.
                        Slot::Failed(_) if self.rounds.load(Ordering::Acquire) % 4 == 3 => self.spawn_load(partition),
                        _ => {}
                    }
                }
                // The lease moved on (renewed by another node, or aged out): lost.
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(partition, %error, "lost the lease of partition {partition}; another node leads it");
                    self.held.lock().remove(&partition);
                    self.stop(partition);
                }
                // NATS did not answer: keep the lease (the fence keeps writes safe) and try again next
                // round; `confirmed_until` stops reads once another node may lead.
                Err(error) => tracing::warn!(partition, %error, "could not renew the lease of partition {partition}; trying again"),
            }
        }
    }

    /// Records a lease renewal (or take) that started at `asked`.
    fn confirm(&self, partition: u32, asked: Instant) {
        let until = asked.duration_since(self.started) + Duration::from_millis(self.config.lease_secs * 750);
        self.confirmed_until[partition as usize].store(until.as_millis() as u64, Ordering::Release);
    }

    /// Whether this node surely still holds `partition`'s lease: renewed less
    /// than three quarters of a lease ago (by this node's monotonic clock;
    /// the lease ages out a whole lease after the renewal reached NATS).
    pub fn lease_confirmed(&self, partition: u32) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now < self.confirmed_until[partition as usize].load(Ordering::Acquire)
    }

    /// Whether the stream of a partition led here moved past what its writer
    /// appended (checked once a round, so that a foreign message is noticed
    /// even while no command comes, and reads stop being served from a state
    /// that is no longer the stream's).
    async fn foreign_append(&self, leading: &Leading) -> bool {
        let stream = match self.js.get_stream(leading.fence.stream()).await {
            Ok(stream) => stream,
            Err(_) => return false,
        };
        match stream.get_info().await {
            Ok(info) => leading.fence.moved_past(info.state.last_sequence),
            Err(_) => false,
        }
    }

    /// Takes up to `wanted` partitions that nobody leads, starting from a
    /// node-specific offset so that nodes starting together pick different
    /// ones. A lease still naming this node (held before a restart) is taken
    /// back at once rather than left to age out.
    async fn take_free(self: &Arc<Self>, mut wanted: usize) {
        let partitions = self.config.partitions;
        let offset = super::partition_of(&self.config.node, partitions);
        for i in 0..partitions {
            if wanted == 0 {
                break;
            }
            let partition = (offset + i) % partitions;
            let value = Bytes::from(self.config.node.clone());
            let current = self.leaders.read()[partition as usize].clone();
            let held = self.held.lock().contains_key(&partition);
            let asked = Instant::now();
            let taken = match current {
                None => self.leases.create(partition.to_string(), value).await.map_err(|e| e.to_string()),
                Some((leader, revision)) if leader == self.config.node && !held => {
                    self.leases.update(partition.to_string(), value, revision).await.map_err(|e| e.to_string())
                }
                Some(_) => continue,
            };
            match taken {
                Ok(revision) => {
                    tracing::info!(partition, "took the lease of partition {partition}; loading it");
                    self.held.lock().insert(partition, revision);
                    self.confirm(partition, asked);
                    self.leaders.write()[partition as usize] = Some((self.config.node.clone(), revision));
                    self.spawn_load(partition);
                    wanted -= 1;
                }
                Err(error) => tracing::debug!(partition, %error, "partition {partition} was taken by another node"),
            }
        }
    }

    /// Stops serving `partition` and deletes its lease, so that another node takes it at once.
    async fn hand_over(self: &Arc<Self>, partition: u32) {
        let Some(revision) = self.held.lock().remove(&partition) else { return };
        tracing::info!(partition, "handing partition {partition} over: this node leads more than its share");
        wait(self.stop(partition)).await;
        if let Err(error) = self.leases.delete_expect_revision(partition.to_string(), Some(revision)).await {
            tracing::warn!(partition, %error, "could not delete the lease of partition {partition}; it expires on its own");
        }
    }

    /// Hands every partition over (at shutdown).
    async fn hand_over_all(self: &Arc<Self>) {
        let held: Vec<u32> = self.held.lock().keys().copied().collect();
        for partition in held {
            self.hand_over(partition).await;
        }
    }

    /// Stops serving `partition` here: new requests no longer reach its
    /// ledger; its writer drains its queue and stops. Returns the teardown's
    /// end, which a later load of the same partition waits for.
    fn stop(&self, partition: u32) -> Option<Done> {
        let mut entry = self.slots[partition as usize].lock();
        entry.generation += 1;
        let Slot::Leading(leading) = std::mem::replace(&mut entry.slot, Slot::Follower) else { return entry.teardown.clone() };
        self.cluster_metrics.leader_changes.inc();
        let done = teardown(leading, entry.teardown.take());
        entry.teardown = Some(done.clone());
        Some(done)
    }

    fn spawn_load(self: &Arc<Self>, partition: u32) {
        let (generation, waited) = {
            let mut entry = self.slots[partition as usize].lock();
            entry.generation += 1;
            entry.slot = Slot::Loading;
            (entry.generation, entry.teardown.take())
        };
        let node = self.clone();
        tokio::spawn(async move {
            wait(waited).await;
            let started = Instant::now();
            let result = node.load(partition).await;
            let mut entry = node.slots[partition as usize].lock();
            match result {
                Ok(leading) if entry.generation == generation => {
                    node.cluster_metrics.partition_load_seconds.observe(started.elapsed().as_secs_f64());
                    node.cluster_metrics.leader_changes.inc();
                    tracing::info!(partition, elapsed_ms = started.elapsed().as_millis() as u64, "leading partition {partition}");
                    entry.slot = Slot::Leading(leading);
                }
                Ok(leading) => {
                    // Given up while loading: stop what was started.
                    let waited = entry.teardown.take();
                    entry.teardown = Some(teardown(leading, waited));
                }
                Err(error) if entry.generation == generation => {
                    tracing::error!(partition, "cannot load partition {partition}: {error:#}");
                    entry.slot = Slot::Failed(format!("{error:#}"));
                }
                Err(error) => tracing::info!(partition, "a load of partition {partition} given up: {error:#}"),
            }
        });
    }

    /// Fetches the partition's stream into its local mirror, recovers its
    /// state and starts its writer.
    async fn load(self: &Arc<Self>, partition: u32) -> anyhow::Result<Arc<Leading>> {
        let node = self.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || runtime.block_on(node.load_blocking(partition))).await?
    }

    async fn load_blocking(self: Arc<Self>, partition: u32) -> anyhow::Result<Arc<Leading>> {
        let dirs = PartitionDirs::new(&self.data_dir, partition);
        let loaded = stream::load(&self.js, partition, &dirs, self.server.log, &self.config.node).await?;
        let fence = loaded.fence.clone();
        tracing::info!(
            partition,
            fetched = loaded.fetched,
            marker = loaded.marker_seq,
            "partition {partition}: fetched {} messages",
            loaded.fetched
        );
        let snapshot_dirs = Dirs { ledger: dirs.ledger.clone(), responses: dirs.responses.clone(), snapshots: dirs.snapshots.clone() };
        let closed = node::open_closed(&dirs.root)?;
        let start_up =
            snapshots::recover_storing(&loaded.events, &loaded.answers, &snapshot_dirs, self.server.rules, self.clock.now(), Some(&closed))
                .with_context(|| format!("recovering partition {partition}"))?;
        let snapshot_position = start_up.snapshot.as_ref().map_or(0, |(position, _)| *position);
        let (state, journal, indexes) =
            node::prepare(&dirs.root, self.auth.clone(), self.metrics.clone(), self.clock.clone(), &self.server)?;
        // The follower ends with the writer (after checkpointing the read side) on its own.
        let (handle, writer, snapshot_thread, _follower) = node::start(
            Box::new(loaded.events),
            Box::new(loaded.answers),
            start_up.recovered,
            snapshot_position,
            Started { journal, indexes, dirs: snapshot_dirs, clock: self.clock.clone(), metrics: self.metrics.clone(), closed },
            &self.server,
        );
        state.set_writer(handle);
        let state = Arc::new(state);
        Ok(Arc::new(Leading { router: app(state.clone()), state, fence, threads: Mutex::new(Some((writer, snapshot_thread))) }))
    }
}

/// Whether a partition's writer stopped for good: its append was fenced or
/// not acknowledged (a stream log never re-opens), or its thread ended.
fn writer_gave_up(health: &Health) -> bool {
    matches!(health, Health::StorageDown { retrying: false, .. } | Health::Stopped)
}

/// The node's membership and lease loop, until `stop` turns true; then it
/// hands every partition over.
pub async fn run(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let tick = Duration::from_millis((node.config.lease_secs * 1000 / 4).max(100));
    loop {
        if let Err(error) = node.round().await {
            tracing::warn!("cluster round failed: {error:#}");
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.changed() => break,
        }
    }
    node.hand_over_all().await;
}
