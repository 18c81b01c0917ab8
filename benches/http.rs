//! HTTP load on a real `ledger serve`: durable bookings next to an echo that does no work,
//! and, with `--target`, next to another booking server driven the same way.
//!
//! Starts the `ledger` binary given by `--ledger PATH` (default `target/release/ledger`,
//! built with `--features bench` for `POST /bench/echo`) on a temporary data directory,
//! sets `DOCTORS` schedules of 1000 slots, then drives keep-alive HTTP/1.1 connections,
//! each sending requests back to back for `WARM_UP` (discarded) and then `MEASURED`:
//!
//! - `echo`: `POST /bench/echo` with a booking's JSON body, answered unchanged. The
//!   ceiling that HTTP, the client and the machine set, with no ledger work at all.
//! - `bookings`: `POST /v1/bench/bookings` with that body, each request on its own
//!   (doctor, date, slot), so every one is a 201: decided, appended, fdatasynced.
//! - `hot`: the same bookings, all on `HOT_SLOTS` slots of one doctor and date, so
//!   every request after the first few is refused `409 slot_taken`: the price of a
//!   refusal, the answer a popular slot gets thousands of times. A 201 or a 409 whose
//!   problem `code` is `slot_taken` is the expected answer; anything else is an error.
//! - `mixed`: bookings, phone-number claims, outbound calls and community creations
//!   in turn, each on its own slot, business, number or name, so every one is accepted.
//!
//! `--target http://HOST:PORT --token T [--target-name NAME]` drives a server this
//! bench does not start (`make bench-pg`: `benches/pg/server.rs` on PostgreSQL), with
//! the same client, connection counts, request bodies (the n-th request to either
//! server books the same slot) and hot slots, and without the ledger's schedules,
//! metrics or `mixed` scenario. It needs `POST /bench/echo` and
//! `POST /v1/bench/bookings`. Given with `--ledger`, both servers run, taking turns
//! within each connection count, and the ledger's figures are divided by the other's.
//!
//! The table gives, per server, scenario and connection count, the expected answers
//! per second to requests sent and answered inside the measured window (2xx, and for
//! `hot` also 409 `slot_taken`, of which `refused` counts the 409s), their latency
//! percentiles, and the unexpected answers or failed requests of the whole run,
//! warm-up included. `bookings/echo`, `hot/echo` and `mixed/echo` are the share of
//! the bare HTTP ceiling each server keeps, printed beside their targets at 64
//! connections; `avg batch` is how many commands shared each fdatasync during that
//! run (from the ledger's `ledger_batch_commands`). The load generator (a two-worker
//! tokio runtime) and the servers share this machine's cores, so figures compare
//! with each other, not with a server on a machine of its own. `cpu µs/req` is
//! the CPU time the ledger's process spent (user and system, from
//! `/proc/PID/stat`) over the whole run, warm-up included, per expected answer in
//! that run: what a request costs the server, which this VM's noise moves far
//! less than requests per second; `hot/echo` and `bookings/echo` are also printed
//! as ratios of it. Exits non-zero if any request failed.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use chrono::{Days, NaiveDate};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const TENANT: &str = "bench";
const DOCTORS: u64 = 100;
/// Doctors `d000` to `d049` work at clinic `c0`, `d050` to `d099` at `c1`: a clinic
/// has at most 64 (`doctors_per_clinic_max`).
const DOCTORS_PER_CLINIC: u64 = 50;
const SLOTS_PER_DAY: u64 = 1000;
const CONNECTIONS: [usize; 2] = [64, 256];
/// The `hot` scenario books only these slots of doctor `d000` on `HOT_DATE`, a day
/// the `bookings` scenario never reaches (it starts on 2030-01-01).
const HOT_SLOTS: u64 = 4;
const HOT_DATE: &str = "2029-12-31";
/// Targets for the share of echo's requests per second, at `TARGET_CONNECTIONS`.
const TARGET_CONNECTIONS: usize = 64;
const BOOKINGS_ECHO_TARGET: f64 = 0.70;
const HOT_ECHO_TARGET: f64 = 0.80;
/// Targets for the ledger's requests per second over another server's (`--target`), in the same run.
const BOOKINGS_OTHER_TARGET: f64 = 4.0;
const HOT_OTHER_TARGET: f64 = 3.0;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURED: Duration = Duration::from_secs(5);
const BUILD_HINT: &str = "cargo build --release --features bench --bin ledger";

/// `ledger serve` on a temporary data directory, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    token: String,
    data: TempDir,
}

impl Server {
    async fn start(ledger: &Path) -> anyhow::Result<Server> {
        let data = TempDir::new()?;
        // A port the kernel just handed out and took back: free unless someone races us for it.
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(ledger)
            .arg("serve")
            .arg("--data")
            .arg(data.path())
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", ledger.display()))?;
        let mut server = Server { child, addr, token: String::new(), data };
        server.wait_ready().await?;
        let token_path = server.data.path().join("admin.token");
        server.token = std::fs::read_to_string(&token_path).with_context(|| format!("reading {}", token_path.display()))?.trim().into();
        Ok(server)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited before it was ready: {status}");
            }
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the server was not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the graceful shutdown; SIGKILL after 10 s.
    fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("http bench: stopping the server: {error:#}");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Echo,
    Bookings,
    /// Bookings of `HOT_SLOTS` slots: refused `slot_taken` but for the first few.
    Hot,
    /// Bookings, phone-number claims, calls and communities, in turn.
    Mixed,
}

/// What an answer counts as in its scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    /// `409 slot_taken` in the `hot` scenario.
    Refused,
    Unexpected,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::Bookings => "bookings",
            Scenario::Hot => "hot",
            Scenario::Mixed => "mixed",
        }
    }

    /// The n-th request's path and body. Every command but `hot`'s is accepted:
    /// each takes its own slot, business, phone number or community name.
    fn request(self, n: u64) -> (String, String) {
        let booking = || (format!("/v1/{TENANT}/bookings"), booking_body(n));
        match self {
            Scenario::Echo => ("/bench/echo".into(), booking_body(n)),
            Scenario::Bookings => booking(),
            Scenario::Hot => (format!("/v1/{TENANT}/bookings"), hot_booking_body(n)),
            Scenario::Mixed => match n % 4 {
                0 => booking(),
                1 => (format!("/v1/{TENANT}/businesses/business-{n}/phone-number/claim"), "{}".into()),
                2 => (format!("/v1/{TENANT}/calls"), format!(r#"{{"campaign":"spring","to":"+1646{}"}}"#, 2_000_000 + n % 7_999_999)),
                _ => (format!("/v1/{TENANT}/communities"), format!(r#"{{"name":"Community {n}","owner":"owner {n}","plan":"pro"}}"#)),
            },
        }
    }

    fn judge(self, status: StatusCode, body: &[u8]) -> Verdict {
        match self {
            _ if status.is_success() => Verdict::Accepted,
            // The problem document's members are written without spaces, as serde_json
            // writes them: a byte search keeps the client's share of the CPU small.
            Scenario::Hot if status == StatusCode::CONFLICT && contains(body, br#""code":"slot_taken""#) => Verdict::Refused,
            _ => Verdict::Unexpected,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// What every connection of one run shares.
struct Run {
    addr: SocketAddr,
    scenario: Scenario,
    authorization: Option<String>,
    /// The next request number, across every run, so no two commands share a slot, business, number or name.
    next_booking: Arc<AtomicU64>,
    /// Requests that start and finish between these two instants are measured.
    measured_from: Instant,
    end: Instant,
}

impl Run {
    fn request(&self) -> Request<Full<Bytes>> {
        let (path, body) = self.scenario.request(self.next_booking.fetch_add(1, Ordering::Relaxed));
        let mut request = Request::post(path).header(HOST, self.addr.to_string()).header(CONTENT_TYPE, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        request.body(Full::new(Bytes::from(body))).expect("a well-formed request")
    }
}

/// The n-th booking: doctor `n % DOCTORS`, then each slot of the day, then the next day.
fn booking_body(n: u64) -> String {
    let date = NaiveDate::from_ymd_opt(2030, 1, 1).unwrap() + Days::new(n / (DOCTORS * SLOTS_PER_DAY));
    let (doctor, slot) = (n % DOCTORS, (n / DOCTORS) % SLOTS_PER_DAY);
    let clinic = doctor / DOCTORS_PER_CLINIC;
    format!(r#"{{"clinic":"c{clinic}","doctor":"d{doctor:03}","date":"{date}","slot":{slot},"patient":"Patient {n}"}}"#)
}

/// The n-th booking of the `hot` scenario: slot `n % HOT_SLOTS` of doctor `d000` on `HOT_DATE`.
fn hot_booking_body(n: u64) -> String {
    let slot = n % HOT_SLOTS;
    format!(r#"{{"clinic":"c0","doctor":"d000","date":"{HOT_DATE}","slot":{slot},"patient":"Patient {n}"}}"#)
}

/// What one connection, or all of a run's, saw.
struct Load {
    /// Microseconds, of the expected answers inside the measured window.
    latencies: Histogram<u64>,
    /// Of those, the refusals (`hot`'s 409 `slot_taken`).
    refused: u64,
    /// Unexpected answers and failed requests, warm-up included.
    errors: u64,
    /// Expected answers over the whole run, warm-up included.
    answered: u64,
    first_error: Option<String>,
}

impl Load {
    fn new() -> Load {
        Load {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            refused: 0,
            errors: 0,
            answered: 0,
            first_error: None,
        }
    }

    fn error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    fn merge(&mut self, other: Load) {
        self.latencies.add(&other.latencies).expect("histograms of the same bounds");
        self.refused += other.refused;
        self.errors += other.errors;
        self.answered += other.answered;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One keep-alive connection sending requests back to back until `target.end`.
/// A failed request ends the connection.
async fn drive(target: Arc<Run>) -> Load {
    let mut load = Load::new();
    if let Err(error) = drive_into(&target, &mut load).await {
        load.error(format!("{error:#}"));
    }
    load
}

async fn drive_into(target: &Run, load: &mut Load) -> anyhow::Result<()> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    loop {
        let started = Instant::now();
        if started >= target.end {
            return Ok(());
        }
        sender.ready().await?;
        let response = sender.send_request(target.request()).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let done = Instant::now();
        let verdict = target.scenario.judge(status, &body);
        if verdict == Verdict::Unexpected {
            load.error(format!("{status}: {}", String::from_utf8_lossy(&body)));
            continue;
        }
        load.answered += 1;
        if started >= target.measured_from && done <= target.end {
            load.latencies.saturating_record((done - started).as_micros() as u64);
            load.refused += u64::from(verdict == Verdict::Refused);
        }
    }
}

/// Runs `connections` connections against `scenario` for the warm-up and the measured window.
async fn run(endpoint: &Endpoint, scenario: Scenario, connections: usize) -> Load {
    let start = Instant::now();
    let target = Arc::new(Run {
        addr: endpoint.addr,
        scenario,
        authorization: (scenario != Scenario::Echo).then(|| format!("Bearer {}", endpoint.token)),
        next_booking: endpoint.next_booking.clone(),
        measured_from: start + WARM_UP,
        end: start + WARM_UP + MEASURED,
    });
    let mut tasks: JoinSet<Load> = (0..connections).map(|_| drive(target.clone())).collect();
    let mut total = Load::new();
    while let Some(load) = tasks.join_next().await {
        total.merge(load.expect("a connection task panicked"));
    }
    total
}

/// A server under load: the ledger this bench started, or one it was pointed at.
struct Endpoint {
    name: String,
    addr: SocketAddr,
    token: String,
    /// The ledger this bench started (for its `/metrics`), stopped when dropped.
    ledger: Option<Server>,
    /// The next request number, across every run on this server: the n-th request
    /// to each server books the same slot.
    next_booking: Arc<AtomicU64>,
}

/// The sum and count of the server's `ledger_batch_commands` histogram.
async fn batch_commands(client: &reqwest::Client, server: &Server) -> anyhow::Result<(f64, f64)> {
    let text = client.get(server.url("/metrics")).send().await?.error_for_status()?.text().await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .with_context(|| format!("/metrics has no {name}"))
    };
    Ok((value("ledger_batch_commands_sum")?, value("ledger_batch_commands_count")?))
}

/// Sets every doctor's schedule.
async fn prepare(client: &reqwest::Client, server: &Server) -> anyhow::Result<()> {
    for doctor in 0..DOCTORS {
        client
            .put(server.url(&format!("/v1/{TENANT}/clinics/c{}/doctors/d{doctor:03}/schedule", doctor / DOCTORS_PER_CLINIC)))
            .bearer_auth(&server.token)
            .json(&serde_json::json!({ "slots_per_day": SLOTS_PER_DAY }))
            .send()
            .await?
            .error_for_status()
            .context("setting a schedule")?;
    }
    Ok(())
}

/// Checks that the server at `addr` has the echo route.
async fn check_echo(client: &reqwest::Client, addr: SocketAddr, hint: &str) -> anyhow::Result<()> {
    let echo = client.post(format!("http://{addr}/bench/echo")).body("{}").send().await?;
    ensure!(echo.status().is_success(), "{addr} answers {} to POST /bench/echo: {hint}", echo.status());
    Ok(())
}

struct Row {
    endpoint: usize,
    scenario: Scenario,
    connections: usize,
    per_second: f64,
    load: Load,
    /// Commands per fdatasync during the run, for the ledger's scenarios.
    batch: Option<f64>,
    /// The ledger's CPU time per expected answer over the whole run, in microseconds.
    cpu_per_request: Option<f64>,
}

/// The CPU time (user and system) a process has used so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) in parentheses:
    // state is the 3rd field of the line, utime and stime the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').context("a /proc stat line")?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).context("utime and stime in /proc stat");
    // Linux reports these in USER_HZ, 100 a second on every architecture it runs on.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

fn print_table(endpoints: &[Endpoint], rows: &[Row]) {
    println!();
    println!(
        "{WARM_UP:?} warm-up discarded, {MEASURED:?} measured; latencies of expected answers in the window \
         (2xx; for hot also 409 slot_taken, counted in refused); errors over the whole run"
    );
    println!();
    println!(
        "{:<9} {:<9} {:>5} {:>10} {:>9} {:>9} {:>9} {:>7} {:>10} {:>11}",
        "server", "scenario", "conns", "req/s", "p50 ms", "p99 ms", "refused", "errors", "avg batch", "cpu µs/req"
    );
    for row in rows {
        let ms = |q: f64| row.load.latencies.value_at_quantile(q) as f64 / 1000.0;
        let batch = row.batch.map_or("-".into(), |b| format!("{b:.1}"));
        let cpu = row.cpu_per_request.map_or("-".into(), |c| format!("{c:.1}"));
        println!(
            "{:<9} {:<9} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9} {:>7} {:>10} {:>11}",
            endpoints[row.endpoint].name,
            row.scenario.name(),
            row.connections,
            row.per_second,
            ms(0.5),
            ms(0.99),
            row.load.refused,
            row.load.errors,
            batch,
            cpu
        );
    }
    let row = |endpoint: usize, scenario, connections| {
        rows.iter().find(|r| r.endpoint == endpoint && r.scenario == scenario && r.connections == connections)
    };
    let per_second = |endpoint: usize, scenario, connections| row(endpoint, scenario, connections).map(|r| r.per_second);
    for (endpoint, server) in endpoints.iter().enumerate() {
        println!();
        for connections in CONNECTIONS {
            let Some(echo) = per_second(endpoint, Scenario::Echo, connections) else { continue };
            for (scenario, target) in
                [(Scenario::Bookings, Some(BOOKINGS_ECHO_TARGET)), (Scenario::Hot, Some(HOT_ECHO_TARGET)), (Scenario::Mixed, None)]
            {
                let Some(figure) = per_second(endpoint, scenario, connections) else { continue };
                let target = match target {
                    Some(target) if connections == TARGET_CONNECTIONS => format!("   target >= {target:.2}"),
                    _ => String::new(),
                };
                let name = format!("{} {}/echo", server.name, scenario.name());
                println!("{name:<22} req/s at {connections:>3} connections: {:.3}{target}", figure / echo);
            }
        }
        // What each request costs the server against what an echo costs it.
        let cpu = |scenario, connections| row(endpoint, scenario, connections)?.cpu_per_request;
        for connections in CONNECTIONS {
            let Some(echo) = cpu(Scenario::Echo, connections) else { continue };
            for scenario in [Scenario::Bookings, Scenario::Hot, Scenario::Mixed] {
                let Some(figure) = cpu(scenario, connections) else { continue };
                let name = format!("{} {}/echo", server.name, scenario.name());
                println!(
                    "{name:<22} server CPU per request at {connections:>3} connections: {:.2}x ({figure:.1} / {echo:.1} µs)",
                    figure / echo
                );
            }
        }
    }
    // The ledger against the other server, scenario by scenario, in this same run. The
    // echo line is a check on the noise: both echoes are axum on tokio, so far from 1
    // means one server met a busier machine; each server's figure over its own echo
    // takes that out, if the noise hit its scenarios as it hit its echo.
    let [ledger, other] = [0, 1];
    if endpoints.len() == 2 && endpoints[ledger].ledger.is_some() {
        println!();
        let name = format!("{}/{}", endpoints[ledger].name, endpoints[other].name);
        for connections in CONNECTIONS {
            let ratio = |scenario| Some(per_second(ledger, scenario, connections)? / per_second(other, scenario, connections)?);
            let Some(echo) = ratio(Scenario::Echo) else { continue };
            println!(
                "{name:<16} echo     req/s at {connections:>3} connections: {echo:>6.2}x   (the same HTTP stack: near 1 when the noise was fair)"
            );
            for (scenario, target) in [(Scenario::Bookings, BOOKINGS_OTHER_TARGET), (Scenario::Hot, HOT_OTHER_TARGET)] {
                let Some(figure) = ratio(scenario) else { continue };
                println!(
                    "{name:<16} {:<8} req/s at {connections:>3} connections: {figure:>6.2}x   target >= {target:.1}   \
                     (each over its own echo: {:.2}x)",
                    scenario.name(),
                    figure / echo
                );
            }
        }
    }
}

async fn bench(options: Options) -> anyhow::Result<bool> {
    let client = reqwest::Client::new();
    let mut endpoints = Vec::new();
    if let Some(ledger) = &options.ledger {
        let server = Server::start(ledger).await?;
        prepare(&client, &server).await?;
        check_echo(&client, server.addr, &format!("build {} with `{BUILD_HINT}`", ledger.display())).await?;
        let (addr, token) = (server.addr, server.token.clone());
        endpoints.push(Endpoint { name: "ledger".into(), addr, token, ledger: Some(server), next_booking: Arc::default() });
    }
    if let Some(external) = options.external {
        check_echo(&client, external.addr, "every server this bench drives needs it").await?;
        endpoints.push(Endpoint {
            name: external.name,
            addr: external.addr,
            token: external.token,
            ledger: None,
            next_booking: Arc::default(),
        });
    }
    // The mixed workload is the ledger's own: another server has no claims, calls or communities.
    let scenarios = if endpoints.iter().all(|e| e.ledger.is_some()) {
        &[Scenario::Echo, Scenario::Bookings, Scenario::Hot, Scenario::Mixed][..]
    } else {
        &[Scenario::Echo, Scenario::Bookings, Scenario::Hot][..]
    };
    let mut rows = Vec::new();
    // Server by server within each connection count, so both meet the same moments of this noisy machine.
    for connections in CONNECTIONS {
        for (index, endpoint) in endpoints.iter().enumerate() {
            for &scenario in scenarios {
                let ledger = endpoint.ledger.as_ref().filter(|_| scenario != Scenario::Echo);
                let before = match ledger {
                    Some(server) => Some(batch_commands(&client, server).await?),
                    None => None,
                };
                let pid = endpoint.ledger.as_ref().map(|server| server.child.id());
                let cpu_before = pid.map(cpu_time).transpose()?;
                let load = run(endpoint, scenario, connections).await;
                let cpu_per_request = match (pid, cpu_before) {
                    (Some(pid), Some(before)) => Some((cpu_time(pid)? - before).as_secs_f64() * 1e6 / load.answered.max(1) as f64),
                    _ => None,
                };
                let batch = match (ledger, before) {
                    (Some(server), Some(before)) => {
                        let after = batch_commands(&client, server).await?;
                        Some((after.0 - before.0) / (after.1 - before.1))
                    }
                    _ => None,
                };
                let per_second = load.latencies.len() as f64 / MEASURED.as_secs_f64();
                if let Some(error) = &load.first_error {
                    eprintln!(
                        "{} {} at {connections} connections: {} errors, the first: {error}",
                        endpoint.name,
                        scenario.name(),
                        load.errors
                    );
                }
                rows.push(Row { endpoint: index, scenario, connections, per_second, load, batch, cpu_per_request });
            }
        }
    }
    print_table(&endpoints, &rows);
    for endpoint in &mut endpoints {
        if let Some(server) = &mut endpoint.ledger {
            let (sum, count) = batch_commands(&client, server).await?;
            println!();
            println!(
                "ledger_batch_commands over the whole server run (schedules included): sum {sum}, count {count}, average {:.1}",
                sum / count
            );
            let status = server.stop()?;
            ensure!(status.success(), "the server did not stop cleanly: {status}");
        }
    }
    Ok(rows.iter().all(|r| r.load.errors == 0))
}

/// A server this bench does not start: `--target URL --token T [--target-name NAME]`.
struct External {
    name: String,
    addr: SocketAddr,
    token: String,
}

struct Options {
    /// The ledger binary to start; none when only an external server is driven.
    ledger: Option<PathBuf>,
    external: Option<External>,
}

const USAGE: &str = "usage: http [--ledger PATH] [--target http://HOST:PORT --token T [--target-name NAME]]";

/// Cargo adds `--bench` when it runs a benchmark. With no `--target`, the ledger
/// alone (`--ledger`, default `target/release/ledger`); with `--target` alone, that
/// server alone; with both, both, side by side.
fn options() -> anyhow::Result<Options> {
    let (mut ledger, mut target, mut token, mut name) = (None, None, None, "other".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--ledger" => ledger = Some(PathBuf::from(value()?)),
            "--target" => target = Some(value()?),
            "--token" => token = Some(value()?),
            "--target-name" => name = value()?,
            "--bench" => {}
            other => bail!("unexpected argument {other:?}; {USAGE}"),
        }
    }
    let external = match target {
        Some(url) => {
            let authority =
                url.strip_prefix("http://").with_context(|| format!("--target {url:?}: only http:// URLs"))?.trim_end_matches('/');
            let addr = authority
                .to_socket_addrs()
                .with_context(|| format!("--target {url:?}: not HOST:PORT"))?
                .next()
                .with_context(|| format!("--target {url:?}: no address"))?;
            Some(External { name, addr, token: token.with_context(|| format!("--target needs --token; {USAGE}"))? })
        }
        None => {
            ensure!(token.is_none(), "--token goes with --target; {USAGE}");
            ledger = Some(ledger.unwrap_or_else(|| PathBuf::from("target/release/ledger")));
            None
        }
    };
    if let Some(ledger) = &ledger {
        ensure!(ledger.is_file(), "{} does not exist: build it with `{BUILD_HINT}`", ledger.display());
    }
    Ok(Options { ledger, external })
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    match options().and_then(|options| runtime.block_on(bench(options))) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("http bench: some requests failed");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("http bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
