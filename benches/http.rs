//! HTTP load on a real `ledger serve`: durable bookings next to an echo that does no work.
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
//! The table gives, per scenario and connection count, the expected answers per second
//! to requests sent and answered inside the measured window (2xx, and for `hot` also
//! 409 `slot_taken`, of which `refused` counts the 409s), their latency percentiles,
//! and the unexpected answers or failed requests of the whole run, warm-up included.
//! `bookings/echo`, `hot/echo` and `mixed/echo` are the share of the bare HTTP
//! ceiling the ledger keeps, printed beside their targets at 64 connections; `avg
//! batch` is how many commands shared each fdatasync during that run (from the
//! server's `ledger_batch_commands`). The load generator (a two-worker tokio runtime)
//! and the server share this machine's cores, so figures compare with each other,
//! not with a server on a machine of its own. Exits non-zero if any request failed.

use std::net::{SocketAddr, TcpListener};
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
struct Target {
    addr: SocketAddr,
    scenario: Scenario,
    authorization: Option<String>,
    /// The next request number, across every run, so no two commands share a slot, business, number or name.
    next_booking: Arc<AtomicU64>,
    /// Requests that start and finish between these two instants are measured.
    measured_from: Instant,
    end: Instant,
}

impl Target {
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
    first_error: Option<String>,
}

impl Load {
    fn new() -> Load {
        Load {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            refused: 0,
            errors: 0,
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
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One keep-alive connection sending requests back to back until `target.end`.
/// A failed request ends the connection.
async fn drive(target: Arc<Target>) -> Load {
    let mut load = Load::new();
    if let Err(error) = drive_into(&target, &mut load).await {
        load.error(format!("{error:#}"));
    }
    load
}

async fn drive_into(target: &Target, load: &mut Load) -> anyhow::Result<()> {
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
        } else if started >= target.measured_from && done <= target.end {
            load.latencies.saturating_record((done - started).as_micros() as u64);
            load.refused += u64::from(verdict == Verdict::Refused);
        }
    }
}

/// Runs `connections` connections against `scenario` for the warm-up and the measured window.
async fn run(server: &Server, scenario: Scenario, connections: usize, next_booking: &Arc<AtomicU64>) -> Load {
    let start = Instant::now();
    let target = Arc::new(Target {
        addr: server.addr,
        scenario,
        authorization: (scenario != Scenario::Echo).then(|| format!("Bearer {}", server.token)),
        next_booking: next_booking.clone(),
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

/// Sets every doctor's schedule and checks that the server has the echo route.
async fn prepare(client: &reqwest::Client, server: &Server, ledger: &Path) -> anyhow::Result<()> {
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
    let echo = client.post(server.url("/bench/echo")).body("{}").send().await?;
    ensure!(echo.status().is_success(), "{} answers {} to POST /bench/echo: build it with `{BUILD_HINT}`", ledger.display(), echo.status());
    Ok(())
}

struct Row {
    scenario: Scenario,
    connections: usize,
    per_second: f64,
    load: Load,
    /// Commands per fdatasync during the run, for the ledger's scenarios.
    batch: Option<f64>,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{WARM_UP:?} warm-up discarded, {MEASURED:?} measured; latencies of expected answers in the window \
         (2xx; for hot also 409 slot_taken, counted in refused); errors over the whole run"
    );
    println!();
    println!(
        "{:<9} {:>5} {:>10} {:>9} {:>9} {:>9} {:>7} {:>10}",
        "scenario", "conns", "req/s", "p50 ms", "p99 ms", "refused", "errors", "avg batch"
    );
    for row in rows {
        let ms = |q: f64| row.load.latencies.value_at_quantile(q) as f64 / 1000.0;
        let batch = row.batch.map_or("-".into(), |b| format!("{b:.1}"));
        println!(
            "{:<9} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9} {:>7} {:>10}",
            row.scenario.name(),
            row.connections,
            row.per_second,
            ms(0.5),
            ms(0.99),
            row.load.refused,
            row.load.errors,
            batch
        );
    }
    println!();
    for connections in CONNECTIONS {
        let per_second = |scenario| rows.iter().find(|r| r.scenario == scenario && r.connections == connections).map(|r| r.per_second);
        let Some(echo) = per_second(Scenario::Echo) else { continue };
        for (scenario, target) in
            [(Scenario::Bookings, Some(BOOKINGS_ECHO_TARGET)), (Scenario::Hot, Some(HOT_ECHO_TARGET)), (Scenario::Mixed, None)]
        {
            let Some(figure) = per_second(scenario) else { continue };
            let target = match target {
                Some(target) if connections == TARGET_CONNECTIONS => format!("   target >= {target:.2}"),
                _ => String::new(),
            };
            println!("{:<13} req/s at {connections:>3} connections: {:.3}{target}", format!("{}/echo", scenario.name()), figure / echo);
        }
    }
}

async fn bench(ledger: &Path) -> anyhow::Result<bool> {
    let mut server = Server::start(ledger).await?;
    let client = reqwest::Client::new();
    prepare(&client, &server, ledger).await?;
    let next_booking = Arc::new(AtomicU64::new(0));
    let mut rows = Vec::new();
    for connections in CONNECTIONS {
        for scenario in [Scenario::Echo, Scenario::Bookings, Scenario::Hot, Scenario::Mixed] {
            let before = batch_commands(&client, &server).await?;
            let load = run(&server, scenario, connections, &next_booking).await;
            let after = batch_commands(&client, &server).await?;
            let batch = (scenario != Scenario::Echo).then(|| (after.0 - before.0) / (after.1 - before.1));
            let per_second = load.latencies.len() as f64 / MEASURED.as_secs_f64();
            if let Some(error) = &load.first_error {
                eprintln!("{} at {connections} connections: {} errors, the first: {error}", scenario.name(), load.errors);
            }
            rows.push(Row { scenario, connections, per_second, load, batch });
        }
    }
    let (sum, count) = batch_commands(&client, &server).await?;
    print_table(&rows);
    println!("ledger_batch_commands over the whole server run (schedules included): sum {sum}, count {count}, average {:.1}", sum / count);
    let status = server.stop()?;
    ensure!(status.success(), "the server did not stop cleanly: {status}");
    Ok(rows.iter().all(|r| r.load.errors == 0))
}

/// `--ledger PATH`; cargo adds `--bench` when it runs a benchmark.
fn ledger_path() -> anyhow::Result<PathBuf> {
    let mut ledger = PathBuf::from("target/release/ledger");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ledger" => ledger = args.next().context("--ledger needs a path")?.into(),
            "--bench" => {}
            other => bail!("unexpected argument {other:?}; usage: http [--ledger PATH]"),
        }
    }
    ensure!(ledger.is_file(), "{} does not exist: build it with `{BUILD_HINT}`", ledger.display());
    Ok(ledger)
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    match ledger_path().and_then(|ledger| runtime.block_on(bench(&ledger))) {
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
