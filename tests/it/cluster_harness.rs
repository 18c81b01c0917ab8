//! A cluster on loopback for tests and `make bench-cluster`: three NATS
//! servers (JetStream, R3, `sync_interval: always`) and `ledger serve`
//! processes in cluster mode, each on a port of its own, in a temporary
//! directory. The NATS binary is `make nats`'s (`.venv/bin/nats-server`) or
//! `$NATS_SERVER`; without it `Cluster::start` says so and returns `None`,
//! except where `LEDGER_REQUIRE_NATS` is set (CI), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use booking_ledger::cluster::partition_of;
use serde_json::Value;

use crate::eventually::eventually;
use crate::support::Client;

pub const DATE: &str = "2026-03-02";

/// How long a cluster test waits for something that must happen. Six
/// servers share two cores with whatever else runs there: a fresh JetStream
/// usually takes 10 s to take its first stream, but has been seen to take
/// over a minute (a node's start-up retries until JetStream answers), so
/// [`WAIT_MAX`] is not far beyond what a cluster takes here.
///
/// [`WAIT_MAX`]: crate::eventually::WAIT_MAX
pub const CLUSTER_WAIT_MAX: Duration = Duration::from_secs(300);

/// What a test waits for, shown with the tail of every node's log after it.
/// The logs are read only when it is shown, which is when the wait failed.
pub struct WithLogs<'a> {
    what: String,
    cluster: &'a Cluster,
}

impl std::fmt::Display for WithLogs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.what, self.cluster.logs())
    }
}

pub fn nats_binary() -> Option<PathBuf> {
    let path = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/nats-server"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("LEDGER_REQUIRE_NATS").is_none(),
        "LEDGER_REQUIRE_NATS is set (CI): install nats-server with `make nats`; none at {}",
        path.display()
    );
    eprintln!("skipped: no nats-server at {} (run `make nats`)", path.display());
    None
}

/// A port nothing listens on, below the kernel's ephemeral range: a port
/// from `bind(0)` is free only until the next outgoing connection of a test
/// running beside this one takes it as its local port, and a NATS server
/// that lost its route port to one exits. Ports are spread by process id
/// so that two test processes rarely try the same ones.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let below: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000, below.saturating_sub(10_000).max(1));
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = (low + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{below}");
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    name: String,
}

pub struct Node {
    child: Option<Child>,
    pub name: String,
    pub client: Client,
    config: PathBuf,
}

pub struct Cluster {
    /// One cluster at a time: six servers per cluster on two cores already
    /// make leases and timeouts tight; several at once made tests time out.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    nats: Vec<NatsServer>,
    nodes: Vec<Node>,
    pub secret: String,
    pub partitions: u32,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(|n| n.child.as_mut()).chain(self.nats.iter_mut().filter_map(|n| n.child.as_mut())) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Three NATS servers and `nodes` ledger nodes; `None` when there is no NATS server here.
    pub async fn start(nodes: usize) -> Option<Cluster> {
        Cluster::start_with(nodes, 4, 2).await
    }

    /// `nodes` ledger nodes over `partitions` partitions with leases of `lease_secs`.
    pub async fn start_with(nodes: usize, partitions: u32, lease_secs: u64) -> Option<Cluster> {
        let binary = nats_binary()?;
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        // A test that failed while holding it poisons it; the next cluster is fine.
        let one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, route)| format!("nats-route://127.0.0.1:{route}")).collect();
        let mut nats = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let name = format!("nats-{}", i + 1);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\", sync_interval: always }}\ncluster {{ name: ledger, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    dir.path().join(&name).display(),
                    routes.join(", ")
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new(&binary).arg("-c").arg(&config).stdout(Stdio::null()).stderr(log).spawn().unwrap();
            nats.push(NatsServer { child: Some(child), port: *port, name });
        }
        let secret = format!("{}", uuid::Uuid::new_v4().simple());
        let mut cluster = Cluster { _one_at_a_time: one_at_a_time, dir, nats, nodes: Vec::new(), secret, partitions };
        for i in 0..nodes {
            let port = free_port();
            let name = format!("n{}", i + 1);
            let config = cluster.dir.path().join(format!("{name}.toml"));
            let servers: Vec<String> = cluster.nats.iter().map(|n| format!("\"nats://127.0.0.1:{}\"", n.port)).collect();
            std::fs::write(
                &config,
                format!(
                    "[server]\ndata_dir = \"{data}\"\nlisten = \"127.0.0.1:{port}\"\n\n[[token]]\nname = \"admin\"\nsecret = \"{secret}\"\ntenants = [\"*\"]\nrole = \"admin\"\n\n[cluster]\nnats = [{servers}]\nnode = \"{name}\"\nadvertise = \"http://127.0.0.1:{port}\"\npartitions = {partitions}\nreplicas = 3\nlease_secs = {lease_secs}\n\n{retention}",
                    retention = crate::support::RETENTION_OPEN_FOREVER,
                    data = cluster.dir.path().join(&name).display(),
                    secret = cluster.secret,
                    servers = servers.join(", "),
                ),
            )
            .unwrap();
            let client = Client::new(format!("127.0.0.1:{port}").parse().unwrap());
            cluster.nodes.push(Node { child: None, name, client, config });
            cluster.spawn(i);
        }
        for i in 0..nodes {
            cluster.wait_ready(i).await;
        }
        Some(cluster)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{}.log", node.name))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "info,async_nats=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// Waits until node `i` answers `/readyz` with 200.
    async fn wait_ready(&self, i: usize) {
        let node = &self.nodes[i];
        eventually(self.with_logs(format!("{} is ready", node.name)), CLUSTER_WAIT_MAX, async || node.client.ready().await).await;
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.nodes[i].client
    }

    pub fn config(&self, i: usize) -> &Path {
        &self.nodes[i].config
    }

    pub fn node_index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("a running node");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn pause(&self, i: usize) {
        signal(self.nodes[i].child.as_ref().unwrap(), "STOP");
    }

    pub fn resume(&self, i: usize) {
        signal(self.nodes[i].child.as_ref().unwrap(), "CONT");
    }

    pub fn kill_nats(&mut self, name: &str) {
        let server = self.nats.iter_mut().find(|n| n.name == name).unwrap();
        let mut child = server.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats[0].port)
    }

    pub fn live(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes.iter().enumerate().filter(|(_, n)| n.child.is_some())
    }

    pub async fn view(&self) -> Value {
        for (_, node) in self.live() {
            let reply = node.client.get("/cluster", &self.secret).await;
            if reply.status == 200 {
                return reply.json();
            }
        }
        panic!("no live node answers GET /cluster");
    }

    /// Waits until the tenant's partition is led by a live node other than
    /// `not`, serving; returns that node's name and the time it took.
    pub async fn wait_leader(&self, tenant: &str, not: Option<&str>) -> (String, Duration) {
        let started = Instant::now();
        let partition = partition_of(tenant, self.partitions);
        let what = self.with_logs(format!("partition {partition} is served by a leader other than {not:?}"));
        let leader = eventually(what, CLUSTER_WAIT_MAX, async || {
            let (_, node) = self.live().find(|(_, n)| Some(n.name.as_str()) != not).unwrap();
            let reply = node.client.get(&format!("/v1/{tenant}/clinics/kochi/slots?date={DATE}"), &self.secret).await;
            if let Some(leader) = reply.header("ledger-node")
                && reply.status != 503
                && Some(leader) != not
            {
                return Ok(leader.to_owned());
            }
            Err(reply)
        })
        .await;
        (leader, started.elapsed())
    }

    /// `what`, shown (when a wait for it fails) with the tail of every node's log.
    pub fn with_logs(&self, what: impl Into<String>) -> WithLogs<'_> {
        WithLogs { what: what.into(), cluster: self }
    }

    /// The tail of every node's log and of every NATS server's.
    pub fn logs(&self) -> String {
        let names = self.nodes.iter().map(|n| (&n.name, 30)).chain(self.nats.iter().map(|n| (&n.name, 15)));
        let mut out = String::new();
        for (name, lines) in names {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out += &format!("\n--- {name} ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        out
    }
}
