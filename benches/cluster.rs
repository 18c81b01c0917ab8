//! `make bench-cluster`: durable bookings per second through a cluster (three
//! NATS servers, three ledger nodes, 8 partitions, replicas 3) next to one
//! node on its local log, in the same run, at 64 and 256 connections; then the
//! failover time over `FAILOVERS` SIGKILLs of a partition's leader.
//!
//! The load: `TENANTS` tenants that cover every partition; connection `i`
//! books for tenant `i % TENANTS` through node `i % 3` (the single node takes
//! them all), each booking on a slot of its own, so every answer is a 201
//! (anything else is counted as an error). Each connection sends requests back
//! to back over one keep-alive connection for `WARM_UP`, then `MEASURED`.
//!
//! Failover time: from the SIGKILL of the node leading tenant 0's partition
//! to the first booking of that tenant acknowledged (201) through another
//! node, while bookings are sent through the other nodes every 20 ms. It is
//! `lease_secs` (5) plus the time to notice, load and fence the partition.
//!
//! Everything (six servers, the load generator) shares this machine's two
//! cores: the cluster pays three replicas' fsyncs and two network hops per
//! batch on the same cores as the load. The figures compare the two modes
//! here; they say nothing of a cluster on machines of its own.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/cluster_harness.rs"]
mod cluster_harness;

#[path = "../tests/it/eventually.rs"]
mod eventually;

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use booking_ledger::cluster::partition_of;
use cluster_harness::Cluster;
use support::Client;

const PARTITIONS: u32 = 8;
const LEASE_SECS: u64 = 5;
const TENANTS: usize = 16;
const DOCTORS: usize = 8;
const SLOTS: usize = 1000;
const CONNECTIONS: [usize; 2] = [64, 256];
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURED: Duration = Duration::from_secs(8);
const FAILOVERS: usize = 10;

/// Tenant names that cover every partition, `TENANTS` of them.
fn tenants() -> Vec<String> {
    let mut names = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    for i in 0.. {
        let name = format!("t{i}");
        let partition = partition_of(&name, PARTITIONS);
        if covered.insert(partition) || (covered.len() == PARTITIONS as usize && names.len() < TENANTS) {
            names.push(name);
        }
        if names.len() == TENANTS {
            break;
        }
    }
    names
}

/// The n-th booking of a tenant: its own (doctor, date, slot).
fn nth_booking(n: u64) -> String {
    let slot = n as usize % SLOTS;
    let doctor = (n as usize / SLOTS) % DOCTORS;
    let day = n as usize / (SLOTS * DOCTORS);
    let date = chrono::NaiveDate::from_ymd_opt(2030, 3, 2).unwrap() + chrono::Days::new(day as u64);
    support::booking("kochi", &format!("d{doctor}"), &date.to_string(), slot as u32, "bench")
}

struct Load {
    acknowledged: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Drives `connections` connections over `clients` (connection i through
/// client i % len) for the warm-up and the measured window.
async fn drive(clients: &[Client], secret: &str, tenants: &[String], connections: usize, next: &[Arc<AtomicU64>]) -> Load {
    let started = Instant::now();
    let (measure_from, until) = (started + WARM_UP, started + WARM_UP + MEASURED);
    let mut tasks = Vec::new();
    for i in 0..connections {
        let client = Client::new(clients[i % clients.len()].addr());
        let tenant = i % tenants.len();
        let (path, next, secret) = (format!("/v1/{}/bookings", tenants[tenant]), next[tenant].clone(), secret.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut load = Load { acknowledged: 0, errors: 0, first_error: None };
            while Instant::now() < until {
                let body = nth_booking(next.fetch_add(1, Ordering::Relaxed));
                let reply = client.try_send("POST", &path, &secret, &body).await;
                let done = Instant::now();
                match reply {
                    Ok(reply) if reply.status == 201 => {
                        if done >= measure_from && done < until {
                            load.acknowledged += 1;
                        }
                    }
                    other => {
                        load.errors += 1;
                        if load.first_error.is_none() {
                            load.first_error = Some(match other {
                                Ok(reply) => format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body)),
                                Err(error) => error.to_string(),
                            });
                        }
                    }
                }
            }
            load
        }));
    }
    let mut total = Load { acknowledged: 0, errors: 0, first_error: None };
    for task in tasks {
        let load = task.await.expect("a load task");
        total.acknowledged += load.acknowledged;
        total.errors += load.errors;
        total.first_error = total.first_error.or(load.first_error);
    }
    total
}

async fn schedules(client: &Client, secret: &str, tenants: &[String]) {
    for tenant in tenants {
        for doctor in 0..DOCTORS {
            let path = format!("/v1/{tenant}/clinics/kochi/doctors/d{doctor}/schedule");
            let body = format!(r#"{{"slots_per_day": {SLOTS}}}"#);
            loop {
                let reply = client.put(&path, secret, &body).await;
                if reply.status == 200 {
                    break;
                }
                assert_eq!(reply.status, 503, "setting a schedule: {}", String::from_utf8_lossy(&reply.body));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One node on its local log, with the cluster's token.
struct Single {
    child: Child,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Single {
    async fn start(secret: &str) -> Single {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("single.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nadmin_token = false\n\n[[token]]\nname = \"admin\"\nsecret = \"{secret}\"\ntenants = [\"*\"]\nrole = \"admin\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = Client::new(format!("127.0.0.1:{port}").parse().unwrap());
        client.wait_ready().await;
        Single { child, client, _dir: dir }
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the leader of `tenant`'s partition and measures the time until a
/// booking through another node is acknowledged; restarts the killed node.
async fn failover(cluster: &mut Cluster, tenant: &str, next: &AtomicU64) -> Duration {
    let (leader, _) = cluster.wait_leader(tenant, None).await;
    let killed = cluster.node_index(&leader);
    let others: Vec<Client> = cluster.live().filter(|(i, _)| *i != killed).map(|(_, n)| n.client.clone()).collect();
    let path = format!("/v1/{tenant}/bookings");
    cluster.kill(killed);
    let started = Instant::now();
    let took = loop {
        let client = &others[next.load(Ordering::Relaxed) as usize % others.len()];
        let reply = client.post(&path, &cluster.secret, &nth_booking(next.fetch_add(1, Ordering::Relaxed))).await;
        if reply.status == 201 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no failover: {}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.restart(killed).await;
    // Let the restarted node take its share back before the next kill.
    tokio::time::sleep(Duration::from_secs(LEASE_SECS * 2)).await;
    took
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn bench() -> bool {
    let Some(mut cluster) = Cluster::start_with(3, PARTITIONS, LEASE_SECS).await else {
        eprintln!("bench-cluster needs nats-server: run `make nats`");
        return false;
    };
    let secret = cluster.secret.clone();
    let single = Single::start(&secret).await;
    let tenants = tenants();
    let covered: std::collections::BTreeSet<u32> = tenants.iter().map(|t| partition_of(t, PARTITIONS)).collect();
    println!("{} tenants over {} of {PARTITIONS} partitions; {WARM_UP:?} warm-up, {MEASURED:?} measured", tenants.len(), covered.len());
    // Every partition led somewhere before the load starts.
    for tenant in &tenants {
        cluster.wait_leader(tenant, None).await;
    }
    schedules(cluster.client(0), &secret, &tenants).await;
    schedules(&single.client, &secret, &tenants).await;
    let cluster_clients: Vec<Client> = cluster.live().map(|(_, n)| n.client.clone()).collect();
    let (cluster_next, single_next): (Vec<_>, Vec<_>) =
        tenants.iter().map(|_| (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)))).unzip();
    let mut clean = true;
    println!();
    println!("{:<12} {:>5} {:>12} {:>8}", "mode", "conns", "bookings/s", "errors");
    for connections in CONNECTIONS {
        // Taking turns, so both meet the same moments of this noisy machine.
        let single_load = drive(std::slice::from_ref(&single.client), &secret, &tenants, connections, &single_next).await;
        let cluster_load = drive(&cluster_clients, &secret, &tenants, connections, &cluster_next).await;
        for (mode, load) in [("single node", &single_load), ("cluster", &cluster_load)] {
            println!("{mode:<12} {connections:>5} {:>12.0} {:>8}", load.acknowledged as f64 / MEASURED.as_secs_f64(), load.errors);
            if let Some(error) = &load.first_error {
                println!("    first error: {error}");
                clean = false;
            }
        }
        println!(
            "cluster/single node at {connections} connections: {:.2}   (target for later, on machines of their own: grows with nodes)",
            cluster_load.acknowledged as f64 / single_load.acknowledged.max(1) as f64
        );
    }
    drop(single);
    let mut times = Vec::new();
    for _ in 0..FAILOVERS {
        times.push(failover(&mut cluster, &tenants[0], &cluster_next[0]).await);
    }
    times.sort();
    println!();
    println!(
        "failover over {FAILOVERS} SIGKILLs of the leader (lease_secs {LEASE_SECS}): p50 {:.2} s, max {:.2} s   (all: {})",
        quantile(&times, 0.5).as_secs_f64(),
        times.last().unwrap().as_secs_f64(),
        times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect::<Vec<_>>().join(" ")
    );
    clean
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    if runtime.block_on(bench()) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
