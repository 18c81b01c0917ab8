//! Test harness: a server in this process (on a real port) or as a child
//! process (for SIGKILL), and a small HTTP client that keeps raw bytes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use booking_ledger::cli::serve::serve;
use booking_ledger::config::Config;
use booking_ledger::core::Rules;
use booking_ledger::http::auth::{Role, Token};
use booking_ledger::log::FileLogOptions;
use booking_ledger::writer::{Clock, SystemClock, WriterConfig};
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::eventually::{WAIT_MAX, eventually};

pub const ADMIN: &str = "admin-secret-0000000000";
/// A client token for tenant `kloqo`.
pub const WEB: &str = "kloqo-web-secret-000000";
/// A second client token for tenant `kloqo`.
pub const APP: &str = "kloqo-app-secret-000000";
/// An admin token for tenant `kloqo` only.
pub const KLOQO_ADMIN: &str = "kloqo-admin-secret-0000";
/// A client token for tenant `other` only.
pub const OTHER: &str = "other-web-secret-000000";

/// `[retention] open_days_past` for tests whose dates are fixed: a century.
pub const OPEN_FOREVER: u32 = 36_525;
/// The same as a configuration file's section, for spawned servers.
pub const RETENTION_OPEN_FOREVER: &str = "[retention]\nopen_days_past = 36525\n";

/// A configuration file holding only [`RETENTION_OPEN_FOREVER`], for servers
/// spawned without one of their own.
pub fn open_forever_config() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("booking-ledger-tests-{}.toml", std::process::id()));
        std::fs::write(&path, RETENTION_OPEN_FOREVER).unwrap();
        path
    })
    .clone()
}

pub fn config(dir: &Path) -> Config {
    let token = |secret: &str, name: &str, tenant: &str, role| {
        (secret.into(), Token { name: name.into(), tenants: vec![tenant.into()], role, rate: None })
    };
    Config {
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        writer: WriterConfig::default(),
        log: FileLogOptions::default(),
        // The tests' dates are fixed (most in March 2026): every day stays
        // open unless a test says otherwise (`days.rs` does).
        rules: Rules { open_days_past: OPEN_FOREVER, ..Rules::default() },
        journal: Default::default(),
        read: Default::default(),
        connections: Default::default(),
        snapshots: Default::default(),
        #[cfg(feature = "cluster")]
        cluster: None,
        // The tests' own "admin" token below stands for the generated one.
        admin_token: false,
        cors_origins: Vec::new(),
        tokens: vec![
            token(ADMIN, "admin", "*", Role::Admin),
            token(WEB, "kloqo-web", "kloqo", Role::Client),
            token(APP, "kloqo-app", "kloqo", Role::Client),
            token(OTHER, "other-web", "other", Role::Client),
            token(KLOQO_ADMIN, "kloqo-admin", "kloqo", Role::Admin),
        ],
    }
}

/// A clock the test sets: leases, cooldowns and windows without sleeping.
pub struct TestClock(parking_lot::Mutex<DateTime<Utc>>);

impl TestClock {
    pub fn new() -> Arc<TestClock> {
        Arc::new(TestClock(parking_lot::Mutex::new(Utc::now())))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// With the body as text, as a failed check shows what it last saw.
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        f.debug_struct("Reply").field("status", &self.status).field("headers", &self.headers).field("body", &body).finish()
    }
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        self.json()
    }

    #[track_caller]
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!((self.status, self.code().as_str()), (status, code), "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let problem = self.json();
        for member in ["type", "title", "status", "detail", "code"] {
            assert!(problem.get(member).is_some(), "problem without {member}: {problem}");
        }
        problem
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        let http = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
        Client { base: format!("http://{addr}"), http }
    }

    /// Cluster tests only, as is `try_send`: a node's address, a request to a node that may be down.
    #[cfg(feature = "cluster")]
    pub fn addr(&self) -> SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    /// A request whose transport failure is returned, not a panic.
    #[cfg(feature = "cluster")]
    pub async fn try_send(&self, method: &str, path: &str, token: &str, body: &str) -> reqwest::Result<Reply> {
        let authorization = format!("Bearer {token}");
        self.try_send_with_headers(method, path, &[("authorization", &authorization)], Some(body)).await
    }

    pub async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>, key: Option<&str>) -> Reply {
        let authorization = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = [("authorization", authorization.as_deref()), ("Idempotency-Key", key)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        self.send_with_headers(method, path, &headers, body).await
    }

    /// A request with exactly these headers (besides what the client adds itself).
    pub async fn send_with_headers(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        self.try_send_with_headers(method, path, headers, body).await.expect("the server answers")
    }

    async fn try_send_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> reqwest::Result<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply { status, headers, body })
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send("GET", path, Some(token), None, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &str) -> Reply {
        self.send("POST", path, Some(token), Some(body), None).await
    }

    pub async fn post_keyed(&self, path: &str, token: &str, body: &str, key: &str) -> Reply {
        self.send("POST", path, Some(token), Some(body), Some(key)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: &str) -> Reply {
        self.send("PUT", path, Some(token), Some(body), None).await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually("the server is ready", WAIT_MAX, async || self.ready().await).await
    }

    /// One look at `/readyz`: Ok if it answers 200, else what it answered.
    pub async fn ready(&self) -> Result<(), String> {
        match self.http.get(format!("{}/readyz", self.base)).send().await {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(response.status().to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The ledger's last position, from `/readyz`.
    pub async fn position(&self) -> u64 {
        let reply = self.send("GET", "/readyz", None, None, None).await;
        reply.expect(200)["position"].as_u64().unwrap()
    }

    /// Slots every 15 minutes from 09:00; a day of more than 60 (which would
    /// run past midnight) starts at 00:00 with slots as long as fit.
    pub async fn schedule(&self, tenant: &str, clinic: &str, doctor: &str, slots_per_day: u32) {
        let path = format!("/v1/{tenant}/clinics/{clinic}/doctors/{doctor}/schedule");
        let (first, minutes) = if slots_per_day <= 60 { ("09:00", 15) } else { ("00:00", (24 * 60 / slots_per_day).max(1)) };
        let body = format!(r#"{{"slots_per_day":{slots_per_day},"first_slot":"{first}","slot_minutes":{minutes}}}"#);
        self.put(&path, ADMIN, &body).await.expect(200);
    }
}

pub fn booking(clinic: &str, doctor: &str, date: &str, slot: u32, patient: &str) -> String {
    format!(r#"{{"clinic":"{clinic}","doctor":"{doctor}","date":"{date}","slot":{slot},"patient":"{patient}"}}"#)
}

/// A server running in this process until `stop`.
pub struct Server {
    pub client: Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Server::start_with(config(dir)).await
    }

    pub async fn start_with(config: Config) -> Server {
        Server::start_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Server {
        let server = Server::start_listening(config, clock).await;
        server.client.wait_ready().await;
        server
    }

    /// Starts a server and waits only until it answers `/healthz`: for ledgers
    /// it will not become ready on.
    pub async fn start_listening(config: Config, clock: Arc<dyn Clock>) -> Server {
        let (stop, stopped) = oneshot::channel::<()>();
        let (listening, addr) = oneshot::channel();
        let task = tokio::spawn(serve(
            config,
            clock,
            async move {
                let _ = stopped.await;
            },
            move |addr| {
                let _ = listening.send(addr);
            },
        ));
        let client = Client::new(addr.await.expect("the server listens"));
        Server { client, stop, task }
    }

    /// SIGTERM's path: stop accepting, drain, exit cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().expect("a clean shutdown");
    }
}

/// `ledger serve` as a child process, to be killed.
pub struct Process {
    pub child: Child,
    pub client: Client,
    /// The generated admin token's secret (`admin.token`), if there is one.
    pub token: String,
    /// Its log lines (stderr) so far.
    pub log: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Process {
    pub async fn spawn(dir: &Path) -> Process {
        Process::spawn_with(dir, &[]).await
    }

    /// With more arguments to `ledger serve`, such as `--config FILE`.
    pub async fn spawn_with(dir: &Path, args: &[&std::ffi::OsStr]) -> Process {
        Process::spawn_env(dir, args, &[]).await
    }

    /// With more arguments and environment variables (libfaketime's, say).
    pub async fn spawn_env(dir: &Path, args: &[&std::ffi::OsStr], env: &[(&str, String)]) -> Process {
        let own_config = args.iter().any(|a| *a == "--config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir)
            .args(args)
            .args(if own_config { vec![] } else { vec!["--config".into(), open_forever_config().into_os_string()] })
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ledger");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let addr: SocketAddr = loop {
            let line = lines.next().expect("ledger exited before listening").unwrap();
            let addr = line.split("listening on ").nth(1).map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap());
            log.lock().push(line);
            if let Some(addr) = addr {
                break addr;
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| kept.lock().push(line)));
        let client = Client::new(addr);
        client.wait_ready().await;
        // Empty when the config turned the generated admin token off.
        let token = std::fs::read_to_string(dir.join("admin.token")).map(|t| t.trim().to_owned()).unwrap_or_default();
        Process { child, client, token, log }
    }

    /// Waits for a log line containing `text` and returns it.
    pub async fn wait_for_line(&self, text: &str) -> String {
        eventually(format!("a log line contains {text:?}"), WAIT_MAX, async || {
            let log = self.log.lock();
            log.iter().find(|line| line.contains(text)).cloned().ok_or_else(|| log.clone())
        })
        .await
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

/// A test that fails midway leaves no server running (nor its stderr pipe open).
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on a fresh directory whose clock the test sets.
pub async fn clocked_server() -> (Server, Arc<TestClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let server = Server::start_with_clock(config(dir.path()), clock.clone()).await;
    (server, clock, dir)
}

/// An event of tenant `kloqo` by actor `forger`, for logs written past the core.
pub fn forged_event(position: u64, kind: booking_ledger::core::EventKind) -> booking_ledger::core::Event {
    booking_ledger::core::Event {
        position,
        recorded_at: Utc::now(),
        tenant: "kloqo".into(),
        actor: "forger".into(),
        request_id: format!("req-{position}").into(),
        idempotency_key: None,
        kind,
        response: None,
    }
}

/// A booking of slot 0 of c1/d1 on 2026-05-01.
pub fn forged_booking(booking_id: uuid::Uuid, token_number: u32) -> booking_ledger::core::EventKind {
    use booking_ledger::core::{BookingCreated, BookingDetails, BookingKind, EventKind};
    EventKind::BookingCreated(BookingCreated {
        details: BookingDetails {
            booking_id,
            clinic: "c1".into(),
            doctor: "d1".into(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
            slot: 0,
            patient: "p".into(),
            kind: BookingKind::Advance,
            external: booking_ledger::core::External::boxed(None, None, None),
        },
        token_number,
    })
}

/// Writes `events` straight to the ledger in `data`, past `decide`: what a bug
/// or a hand edit could leave behind.
pub fn forge(data: &Path, events: &[booking_ledger::core::Event]) {
    use booking_ledger::log::{FileLog, FileLogOptions, Log, codec};
    let (mut log, _) = FileLog::open(&data.join("ledger"), FileLogOptions::default()).unwrap();
    for event in events {
        assert_eq!(log.append(&codec::encode_event(event)).unwrap(), event.position);
    }
    log.sync().unwrap();
}

/// A server assembled from its parts the way `ledger serve` assembles it
/// (writer, rejection journal, follower, read limits, router), except that the
/// writer's log and the log the read side reads may be two directories. With
/// one directory it is the ordinary server, with its [`AppState`] at hand (to
/// take a read permit, say). With two, the writer publishes the projection and
/// durable position of an intact ledger while every reader reads a damaged
/// copy of it: a disk that went bad under a running server, which a server
/// cannot be started on (start-up refuses a damaged ledger).
///
/// [`AppState`]: booking_ledger::http::AppState
pub struct Assembled {
    pub client: Client,
    pub state: booking_ledger::http::Shared,
}

/// Assembles a server whose writer appends to the ledger in `data` and whose
/// readers (pages, streams, the follower's index and audit, time travel) read
/// the ledger directory `read_ledger`.
pub async fn assemble(data: &Path, read_ledger: &Path, read: booking_ledger::http::ReadLimits) -> Assembled {
    assemble_on(data, read_ledger, read, None, WriterConfig::default()).await
}

/// Like [`assemble`], with the writer's two logs (the ledger and the responses
/// journal) on `disk`, which fails on demand, and the writer configured.
pub async fn assemble_on(
    data: &Path,
    read_ledger: &Path,
    read: booking_ledger::http::ReadLimits,
    disk: Option<Arc<booking_ledger::log::FaultyDisk>>,
    writer_config: WriterConfig,
) -> Assembled {
    use booking_ledger::forensics::follower::{Indexes, follow};
    use booking_ledger::http::{AppState, app, auth::Auth, views};
    use booking_ledger::log::FileLog;
    use booking_ledger::metrics::Metrics;
    use booking_ledger::rejections::JournalConfig;
    use booking_ledger::replay::recover;
    use booking_ledger::writer::Writer;

    let options = FileLogOptions::default();
    let open = |dir: &Path| match &disk {
        Some(disk) => FileLog::open_on(dir, options, disk.clone()).unwrap().0,
        None => FileLog::open(dir, options).unwrap().0,
    };
    let (log, responses) = (open(&data.join("ledger")), open(&data.join("responses")));
    let (journal_log, _) = FileLog::open(&data.join("rejections"), options).unwrap();
    let rules = Rules { open_days_past: OPEN_FOREVER, ..Rules::default() };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let recovered = recover(&log, &responses, rules, clock.now()).expect("the writer's ledger is intact");
    let metrics = Arc::new(Metrics::new());
    let (journal, journal_handle) =
        booking_ledger::rejections::Journal::new(journal_log, &data.join("rejections"), JournalConfig::default());
    let writer =
        Writer::new(Box::new(log), Box::new(responses), recovered.state, views::render, clock.clone(), writer_config, metrics.clone())
            .with_journal(journal);
    let (handle, _) = writer.spawn();
    let mut state = AppState::new(Auth::new(config(data).tokens), metrics, Some(read_ledger.to_owned()), clock);
    state.rules = rules;
    state.journal = Some(journal_handle);
    let indexes = Indexes::new(read_ledger, rules);
    state.indexes = Some(indexes.clone());
    let state = Arc::new(state.with_read_limits(read));
    tokio::spawn(follow(indexes, handle.durable(), None));
    state.set_writer(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = Client::new(listener.local_addr().unwrap());
    let router = app(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    client.wait_ready().await;
    Assembled { client, state }
}
