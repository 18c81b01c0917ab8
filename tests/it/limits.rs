//! API.md "Limits and hostile clients", connections: slow headers are cut off,
//! slow bodies get 408, large heads 431, connections beyond `max_connections`
//! wait unaccepted, and many idle connections do not keep others out. Spoken
//! over raw sockets, since a well-behaved client cannot misbehave like this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use booking_ledger::config::Config;
use booking_ledger::http::server::open_files_max;
use booking_ledger::writer::SystemClock;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{Server, WEB, config};

/// How long a read may wait for an answer that must come: a bound on a hang,
/// never a timing assertion.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(30);

/// An answer as read off the socket.
#[derive(Debug)]
struct RawReply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn problem(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{}", self.head);
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Reads one answer; None if the connection closed (or was reset) before a whole one came.
async fn read_reply(stream: &mut TcpStream) -> Option<RawReply> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut reply = RawReply { status, head, body: bytes[head_end..].to_vec() };
    let length: usize = reply.header("content-length").map_or(0, |v| v.parse().unwrap());
    while reply.body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => reply.body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(reply)
}

/// Reads one answer that must come.
async fn expect_reply(stream: &mut TcpStream) -> RawReply {
    tokio::time::timeout(ANSWER_WAIT_MAX, read_reply(stream))
        .await
        .expect("the server answers")
        .expect("the server answered before closing")
}

/// `GET path` on a new connection, closed after the answer.
async fn get(addr: SocketAddr, path: &str) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: ledger\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    expect_reply(&mut stream).await
}

/// A server with `limits` applied, ready, whose readiness was checked on
/// connections that are closed again (a pooled client connection would hold
/// one of `max_connections`).
async fn server_with(dir: &std::path::Path, limits: impl FnOnce(&mut Config)) -> (Server, SocketAddr) {
    let mut config = config(dir);
    limits(&mut config);
    let server = Server::start_listening(config, Arc::new(SystemClock)).await;
    let addr: SocketAddr = server.client.base.trim_start_matches("http://").parse().unwrap();
    wait_ready(addr).await;
    (server, addr)
}

/// Waits until `/readyz` answers 200, asked each time on a connection closed again.
async fn wait_ready(addr: SocketAddr) {
    eventually("the server is ready", WAIT_MAX, async || match get(addr, "/readyz").await.status {
        200 => Ok(()),
        status => Err(status),
    })
    .await;
}

fn seconds(config: &mut Config, header_timeout_secs: u64, request_timeout_secs: u64) {
    config.connections.header_timeout = Duration::from_secs(header_timeout_secs);
    config.connections.request_timeout = Duration::from_secs(request_timeout_secs);
}

/// True once the peer has closed `stream` (or answered: whatever it answered is
/// returned); None while it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Option<RawReply>> {
    tokio::time::timeout(wait, read_reply(stream)).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_after_the_header_timeout_and_others_are_served_meanwhile() {
    const SLOW_CONNECTIONS: usize = 20;
    /// Bytes dripped per connection, one a second (as slowloris does): 10 s, ten times the header timeout.
    const DRIP_BYTES_MAX: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with(dir.path(), |c| seconds(c, 1, 1)).await;

    let mut slow = Vec::new();
    for _ in 0..SLOW_CONNECTIONS {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: ledger\r\nx-slow: ").await.unwrap();
        slow.push(tokio::spawn(async move {
            for _ in 0..DRIP_BYTES_MAX {
                // A write the server refuses (reset) also means it closed the connection.
                if stream.write_all(b"a").await.is_err() {
                    return None;
                }
                if let Some(answer) = closed_within(&mut stream, Duration::from_secs(1)).await {
                    return answer.map(|reply| reply.status);
                }
            }
            panic!("the server kept a connection open through {DRIP_BYTES_MAX} slow header bytes");
        }));
    }
    // Served while the slow connections drip.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    for connection in slow {
        let answer = connection.await.unwrap();
        assert!(matches!(answer, None | Some(408)), "a slow head was answered {answer:?} instead of closed");
    }
    assert_eq!(get(addr, "/healthz").await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_over_16_kib_are_431_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with(dir.path(), |_| {}).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = |filler: usize| format!("GET /healthz HTTP/1.1\r\nhost: ledger\r\nx-filler: {}\r\n\r\n", "f".repeat(filler));

    stream.write_all(request(15 * 1024).as_bytes()).await.unwrap();
    assert_eq!(expect_reply(&mut stream).await.status, 200, "15 KiB of headers are within the limit");

    stream.write_all(request(20 * 1024).as_bytes()).await.unwrap();
    let reply = expect_reply(&mut stream).await;
    assert_eq!(reply.status, 431);
    let problem = reply.problem();
    assert_eq!(problem["code"], "request_header_fields_too_large");
    assert_eq!(problem["status"], 431);
    server.stop().await;
}

/// Hyper refuses heads past its own buffer (and request lines it cannot
/// parse) before the router sees them; those answers are problem documents
/// too, and are read by a client still sending (the server lingers on close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_of_headers_and_unparsable_requests_are_problem_documents() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with(dir.path(), |_| {}).await;
    let before = server.client.position().await;

    let filler = "f".repeat(1000);
    let mut request = format!("POST /v1/kloqo/bookings HTTP/1.1\r\nhost: ledger\r\nauthorization: Bearer {WEB}\r\n");
    for i in 0..1024 {
        request.push_str(&format!("x-filler-{i}: {filler}\r\n"));
    }
    request.push_str("\r\n");
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reading, mut writing) = stream.into_split();
    let sending = tokio::spawn(async move { writing.write_all(request.as_bytes()).await });
    let mut answer = Vec::new();
    tokio::time::timeout(ANSWER_WAIT_MAX, reading.read_to_end(&mut answer)).await.expect("the server answers").unwrap();
    let _ = sending.await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert!(text.contains("content-type: application/problem+json"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!((body["code"].as_str(), body["status"].as_u64()), (Some("request_header_fields_too_large"), Some(431)));

    for garbage in ["GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nbad header line\r\n\r\n", "GET /healthz HTTP/1.1\r\nhost: a\0b\r\n\r\n"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(garbage.as_bytes()).await.unwrap();
        let reply = expect_reply(&mut stream).await;
        assert_eq!(reply.status, 400, "{garbage:?}: {}", reply.head);
        assert_eq!(reply.problem()["code"], "invalid_request", "{garbage:?}");
    }
    assert_eq!(server.client.position().await, before);
    server.stop().await;
}

/// A body declared larger than the limit is refused at once, not awaited
/// until the request's deadline (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_413_before_the_body_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with(dir.path(), |c| seconds(c, 10, 3600)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/kloqo/bookings HTTP/1.1\r\nhost: ledger\r\nauthorization: Bearer {WEB}\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n"
    );
    stream.write_all(format!("{head}{{\"clinic\":\"c1\"}}").as_bytes()).await.unwrap();
    let reply = expect_reply(&mut stream).await;
    assert_eq!((reply.status, reply.problem()["code"].as_str()), (413, Some("payload_too_large")));
    assert_eq!(server.client.position().await, 0, "nothing was booked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_is_a_408_problem_and_so_is_one_that_drips() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with(dir.path(), |c| seconds(c, 1, 1)).await;
    let head = format!(
        "POST /v1/kloqo/bookings HTTP/1.1\r\nhost: ledger\r\nauthorization: Bearer {WEB}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );

    // Ten bytes of a hundred, then silence.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("{head}{{\"clinic\":").as_bytes()).await.unwrap();
    let reply = expect_reply(&mut stream).await;
    assert_eq!(reply.status, 408);
    let problem = reply.problem();
    assert_eq!((problem["code"].as_str(), problem["request_timeout_secs"].as_u64()), (Some("request_timeout"), Some(1)));
    assert_eq!(reply.header("connection"), Some("close"));

    // One byte every tenth of a second: every read makes progress, the whole
    // body would take ten times the request timeout.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = None;
    for _ in 0..100 {
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        if let Some(reply) = closed_within(&mut stream, Duration::from_millis(100)).await {
            answer = reply;
            break;
        }
    }
    let reply = answer.expect("the dripping body was answered before the server closed");
    assert_eq!((reply.status, reply.problem()["code"].as_str()), (408, Some("request_timeout")));
    assert_eq!(server.client.position().await, 0, "nothing was booked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_unaccepted_until_one_closes() {
    const CONNECTIONS_MAX: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with(dir.path(), |c| {
        c.connections.connections_max = CONNECTIONS_MAX;
        // Long enough that the idle connections are not closed under the test.
        seconds(c, 60, 60);
    })
    .await;
    let keep_alive = b"GET /healthz HTTP/1.1\r\nhost: ledger\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(keep_alive).await.unwrap();
        // Answered: accepted, and from now on idle, holding its place.
        assert_eq!(expect_reply(&mut stream).await.status, 200);
        open.push(stream);
    }

    let mut waiting = TcpStream::connect(addr).await.expect("the kernel's backlog takes the connection");
    waiting.write_all(keep_alive).await.unwrap();
    assert!(
        closed_within(&mut waiting, Duration::from_millis(500)).await.is_none(),
        "a connection beyond max_connections was accepted and answered"
    );
    drop(open.pop());
    assert_eq!(expect_reply(&mut waiting).await.status, 200, "answered once a place was free");
    drop(open);
    drop(waiting);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_do_not_keep_a_request_out() {
    // Client and server ends share this process's open-files limit with the
    // other tests running beside this one: 2 x 5,000 + spare fits the 20,000
    // of the machines here (`ulimit -n`); under a lower limit it says so and
    // opens fewer.
    const IDLE_WANTED: u64 = 5000;
    const FILES_SPARE: u64 = 512;
    let files_max = open_files_max().unwrap_or(u64::MAX);
    let idle = IDLE_WANTED.min(files_max.saturating_sub(FILES_SPARE) / 2);
    if idle < IDLE_WANTED {
        println!("open-files limit {files_max}: {idle} idle connections instead of {IDLE_WANTED}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with(dir.path(), |c| seconds(c, 60, 60)).await;
    let mut open = Vec::new();
    for _ in 0..idle {
        open.push(TcpStream::connect(addr).await.unwrap());
    }
    // Every idle connection is held open by the server, not shed.
    eventually(format!("the server holds the {idle} idle connections and this one"), WAIT_MAX, async || {
        let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
        let held = metrics.lines().find_map(|line| line.strip_prefix("ledger_connections_open ")).unwrap().parse::<u64>().unwrap();
        if held > idle { Ok(()) } else { Err(held) }
    })
    .await;
    assert_eq!(get(addr, "/readyz").await.status, 200);
    // A booking among them is answered (how fast is for a benchmark).
    server.client.schedule("kloqo", "kochi", "rao", 10).await;
    let booked = server.client.post("/v1/kloqo/bookings", WEB, &crate::support::booking("kochi", "rao", "2026-03-02", 1, "Asha")).await;
    booked.expect(201);
    drop(open);
    server.stop().await;
}

/// The probe's failure: with more connections than file descriptors, accepts
/// fail with EMFILE. The server must neither spin nor stop, and must serve
/// again once connections close. `ledger serve` runs as a child with a small
/// open-files limit, so this process's own limit is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_backs_off_and_serves_again_once_connections_close() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc::TryRecvError;
    /// The child's open-files limit, far below the default max_connections.
    const FILES_MAX: u32 = 64;
    /// More connections than the child has descriptors for.
    const CONNECTIONS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FILES_MAX} && exec \"$0\" serve --listen 127.0.0.1:0 --data \"$1\""))
        .arg(env!("CARGO_BIN_EXE_ledger"))
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ledger");
    let (lines_sender, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = lines_sender.send(line.unwrap_or_default());
        }
    });
    // Waits for a log line containing `needle`, passing over the lines before it.
    let wait_for = async |needle: &'static str| {
        let mut last = None;
        eventually(format!("ledger logs {needle:?}"), WAIT_MAX, async || {
            loop {
                match lines.try_recv() {
                    Ok(line) if line.contains(needle) => return Ok(line),
                    Ok(line) => last = Some(line),
                    Err(TryRecvError::Empty) => return Err(last.clone()),
                    Err(TryRecvError::Disconnected) => panic!("ledger exited without logging {needle:?}"),
                }
            }
        })
        .await
    };
    let listening = wait_for("listening on ").await;
    let addr: SocketAddr = listening.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    wait_ready(addr).await;
    wait_for("exceed the open-files limit").await; // said at start-up, before any accept failed

    let mut open = Vec::new();
    for _ in 0..CONNECTIONS {
        open.push(TcpStream::connect(addr).await.expect("the kernel's backlog takes the connection"));
    }
    wait_for("accepting a connection failed").await;
    drop(open);
    assert_eq!(get(addr, "/readyz").await.status, 200, "served again once descriptors were free");
    let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    let errors: u64 = metrics.lines().find_map(|line| line.strip_prefix("ledger_accept_errors_total ")).unwrap().parse().unwrap();
    // A loop that retried at once would fail accepts by the hundred thousand;
    // backing off, it fails a handful of times per second at most.
    assert!((1..10_000).contains(&errors), "{errors} failed accepts");
    assert!(child.try_wait().unwrap().is_none(), "the server is still running");
    child.kill().unwrap();
    child.wait().unwrap();
}
