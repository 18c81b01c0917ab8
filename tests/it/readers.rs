//! Every reader of the ledger meets a damaged record the same way: it stops
//! there and names the segment file and the position; none skips it
//! (ARCHITECTURE.md, "Corruption is never skipped"). One table of readers, run
//! against every kind of damage, so adding a reader is one line.

use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use booking_ledger::core::{Event, EventKind, Schedule};
use booking_ledger::http::ReadLimits;
use booking_ledger::log::{FileLog, FileLogOptions, Location, Log, Tail, codec, location_path};
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::support::{ADMIN, Client, assemble, forged_booking, forged_event};

/// The day `forged_booking` books.
const DATE: &str = "2026-05-01";
/// The record that is damaged: in the middle, with intact records after it.
const DAMAGED: u64 = 4;
/// The ledger's last position.
const LAST: u64 = 6;
/// A bound on a hang (a reader that never ends), never a timing assertion.
const HANG_MAX: Duration = Duration::from_secs(60);

/// What is wrong with record [`DAMAGED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// One bit of its payload flipped on disk: the CRC no longer matches.
    FlippedByte,
    /// A well-framed record (CRC and chain intact) whose payload is no event.
    NotAnEvent,
    /// A well-framed record holding a decodable event of another position.
    Misplaced,
}

const DAMAGES: [Damage; 3] = [Damage::FlippedByte, Damage::NotAnEvent, Damage::Misplaced];

/// How the ledger's records are spread over segment files: the damaged record
/// in the last segment (where a bad frame could pass for a torn tail) or in
/// one that others follow.
const LAYOUTS: [(&str, FileLogOptions); 2] =
    [("one segment", FileLogOptions { segment_bytes_max: 64 << 20 }), ("two records a segment", FileLogOptions { segment_bytes_max: 400 })];

/// A schedule, then five bookings of one day (slots 0 to 4), all of tenant kloqo.
fn events() -> Vec<Event> {
    let schedule = Schedule { slots_per_day: 10, first_slot_minute: None, slot_minutes: None };
    let mut events = vec![forged_event(1, EventKind::ScheduleSet { clinic: "c1".into(), doctor: "d1".into(), schedule })];
    for position in 2..=LAST {
        let EventKind::BookingCreated(mut created) = forged_booking(uuid::Uuid::from_u128(position.into()), position as u32 - 1) else {
            unreachable!("forged_booking forges a booking")
        };
        created.details.slot = position as u32 - 2;
        events.push(forged_event(position, EventKind::BookingCreated(created)));
    }
    events
}

/// Where each record of the ledger in `ledger` is.
fn locations(ledger: &Path) -> Vec<(u64, Location)> {
    let mut found = Vec::new();
    Tail::new(ledger, 1)
        .read_available(usize::MAX, &mut |position, location, _| {
            found.push((position, location));
            ControlFlow::Continue(())
        })
        .unwrap();
    found
}

/// Flips one bit in the middle of the payload of the record at `position`.
fn flip_a_byte(ledger: &Path, position: u64) {
    let mut payload_len = 0;
    let mut location = None;
    Tail::new(ledger, position)
        .read_available(1, &mut |_, at, payload| {
            (location, payload_len) = (Some(at), payload.len());
            ControlFlow::Break(())
        })
        .unwrap();
    let location = location.expect("the record is there");
    let path = location_path(ledger, location);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[location.offset as usize + booking_ledger::log::frame::FRAME_HEADER_BYTES + payload_len / 2] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
}

/// Writes the scenario's ledger into `data`, past the core, with `damage` done
/// to record [`DAMAGED`]; returns the segment file that holds it.
fn write_ledger(data: &Path, options: FileLogOptions, damage: Option<Damage>) -> PathBuf {
    let ledger = data.join("ledger");
    let (mut log, _) = FileLog::open(&ledger, options).unwrap();
    for event in events() {
        let payload = match damage {
            Some(Damage::NotAnEvent) if event.position == DAMAGED => b"this is not an event".to_vec(),
            Some(Damage::Misplaced) if event.position == DAMAGED => codec::encode_event(&Event { position: 9, ..event.clone() }),
            _ => codec::encode_event(&event),
        };
        assert_eq!(log.append(&payload).unwrap(), event.position);
    }
    log.sync().unwrap();
    drop(log);
    if damage == Some(Damage::FlippedByte) {
        flip_a_byte(&ledger, DAMAGED);
    }
    segment_of(&ledger, DAMAGED)
}

/// The segment file that holds the record at `position`, told by the files'
/// names alone, so a damaged ledger can be asked too.
fn segment_of(ledger: &Path, position: u64) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(ledger).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    // Segments are named by their first position, zero-padded: the last one
    // whose first position is at most `position` holds it.
    let first = |path: &PathBuf| path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()).unwrap();
    segments.into_iter().rfind(|path| first(path) <= position).expect("a segment holds the position")
}

/// Asserts that `text` names `path` and `position` (and not a longer number).
#[track_caller]
fn assert_names(reader: &str, text: &str, path: &Path, position: u64) {
    assert!(text.contains(&path.display().to_string()), "{reader} does not name the file {}: {text}", path.display());
    let said = format!("position {position}");
    let named = text.match_indices(&said).any(|(at, _)| !text[at + said.len()..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(named, "{reader} does not name position {position}: {text}");
}

/// Runs the `ledger` binary on `data`; its exit code, stdout and stderr. A
/// command still running after [`HANG_MAX`] is killed and fails the test:
/// a reader that went past the damage (a server serving, say).
fn ledger(args: &[&str], data: &Path) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let (stdout, stderr) = (drain(Box::new(child.stdout.take().unwrap())), drain(Box::new(child.stderr.take().unwrap())));
    // Waited for on a thread of its own, so that the wait can end at HANG_MAX.
    let pid = child.id().to_string();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait().unwrap()));
    let Ok(status) = exit.recv_timeout(HANG_MAX) else {
        assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success(), "kill -KILL {pid}");
        panic!("ledger {args:?} is still running on a damaged ledger: {}", stderr.join().unwrap());
    };
    (status.code(), stdout.join().unwrap(), stderr.join().unwrap())
}

/// Every reader of the ledger on the command line: start-up and the offline
/// commands. Each must exit 1 and name the file and position on stderr.
/// (`ledger verify` checks frames and the hash chain, not what payloads mean;
/// tests/it/verify.rs covers it.)
const CLI_READERS: &[(&str, &[&str])] = &[
    ("start-up (ledger serve)", &["serve", "--listen", "127.0.0.1:0"]),
    ("ledger audit", &["audit"]),
    ("ledger replay", &["replay"]),
    ("ledger replay --format json", &["replay", "--format", "json"]),
    ("ledger replay --clinic", &["replay", "--tenant", "kloqo", "--clinic", "c1"]),
    ("ledger replay --campaign --actor", &["replay", "--tenant", "kloqo", "--campaign", "a", "--actor", "b"]),
    ("ledger export", &["export"]),
    ("ledger slots", &["slots", "--tenant", "kloqo", "--clinic", "c1", "--date", DATE]),
    ("ledger slots --as-of", &["slots", "--tenant", "kloqo", "--clinic", "c1", "--date", DATE, "--as-of", "5"]),
];

#[test]
fn every_command_line_reader_stops_at_a_damaged_record_and_names_it() {
    for (layout, options) in LAYOUTS {
        for damage in DAMAGES {
            let data = tempfile::tempdir().unwrap();
            let segment = write_ledger(data.path(), options, Some(damage));
            for &(reader, args) in CLI_READERS {
                let (code, stdout, stderr) = ledger(args, data.path());
                let case = format!("{reader} on {damage:?} ({layout})");
                assert_eq!(code, Some(1), "{case}: exit code; stdout: {stdout}; stderr: {stderr}");
                assert_names(&case, &stderr, &segment, DAMAGED);
                // Nothing after the damage was read past it: at most the
                // events before it were printed.
                assert!(stdout.lines().count() < DAMAGED as usize, "{case} printed past the damage: {stdout}");
            }
        }
    }
}

/// The layouts give what the tests above need: in one, the damaged record is
/// in the last segment; in the other, segments follow it.
#[test]
fn the_layouts_put_the_damage_in_the_last_segment_and_before_others() {
    for (layout, options) in LAYOUTS {
        let data = tempfile::tempdir().unwrap();
        write_ledger(data.path(), options, None);
        let ledger = data.path().join("ledger");
        let located = locations(&ledger);
        assert_eq!(located.iter().map(|(p, _)| *p).collect::<Vec<_>>(), (1..=LAST).collect::<Vec<_>>());
        let (damaged, last) = (segment_of(&ledger, DAMAGED), segment_of(&ledger, LAST));
        assert_eq!(damaged == last, layout == "one segment", "{layout}: {damaged:?} and {last:?}");
    }
}

/// What an HTTP reader said about the damage: a problem document, or the data
/// of the stream's `event: error`; either has `code`, `position` and `detail`.
type HttpReader = fn(Client) -> BoxFuture<'static, Value>;

async fn events_page(c: Client) -> Value {
    c.get("/v1/kloqo/events?limit=1000", ADMIN).await.expect_problem(500, "storage_failure")
}

async fn audit(c: Client) -> Value {
    c.get("/v1/kloqo/audit", ADMIN).await.expect_problem(500, "storage_failure")
}

async fn as_of(c: Client) -> Value {
    // Not the last position: that one is answered from the live projection.
    let path = format!("/v1/kloqo/clinics/c1/slots?date={DATE}&as_of={}", LAST - 1);
    c.get(&path, ADMIN).await.expect_problem(500, "storage_failure")
}

/// Reads the live stream from position 1 to its end: every event before the
/// damage, then an `event: error`, then the end of the stream.
async fn stream(c: Client) -> Value {
    let response = reqwest::Client::new().get(format!("{}/v1/kloqo/events/stream", c.base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    read_to_the_error(response, 1).await
}

/// Reads an SSE response to its end, which must be: messages with ids `first`
/// up to the damaged position, then an `event: error`, whose data it returns.
async fn read_to_the_error(mut response: reqwest::Response, first: u64) -> Value {
    let mut text = String::new();
    let read_to_the_end = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(HANG_MAX, read_to_the_end).await.expect("the stream ends after its error");
    let (mut ids, mut error) = (Vec::new(), None);
    for message in text.split("\n\n").filter(|m| !m.trim().is_empty()) {
        let field = |name: &str| message.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
        match field("event:") {
            Some("error") => error = Some(serde_json::from_str::<Value>(field("data:").unwrap()).unwrap()),
            Some(_) => {
                assert!(error.is_none(), "a message after the error: {text}");
                ids.push(field("id:").unwrap().parse::<u64>().unwrap());
            }
            None => {}
        }
    }
    assert_eq!(ids, (first..DAMAGED).collect::<Vec<_>>(), "every message before the damage, and none after: {text}");
    error.unwrap_or_else(|| panic!("the stream ended without an error: {text}"))
}

async fn slots_history(c: Client) -> Value {
    c.get(&format!("/v1/kloqo/clinics/c1/slots/history?date={DATE}"), ADMIN).await.expect_problem(500, "storage_failure")
}

/// A slots stream resumed after position 1 reads the day as of 1 and then the
/// log from 2: either the day cannot be read (a 500 problem), or it sends the
/// changes before the damage, then an `event: error`, then ends.
async fn slots_stream(c: Client) -> Value {
    let url = format!("{}/v1/kloqo/clinics/c1/slots/stream?date={DATE}", c.base);
    let response = reqwest::Client::new().get(url).bearer_auth(ADMIN).header("Last-Event-ID", "1").send().await.unwrap();
    if response.status() != 200 {
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let reply = crate::support::Reply { status, headers, body: response.bytes().await.unwrap().to_vec() };
        return reply.expect_problem(500, "storage_failure");
    }
    read_to_the_error(response, 2).await
}

/// Every reader of the ledger over HTTP. `reads_records_per_request` is false
/// for the audit, which folds each record once as the follower reads it and
/// answers from that: it meets damage only when the follower does.
fn http_readers() -> [(&'static str, bool, HttpReader); 6] {
    [
        ("GET /events", true, |c| Box::pin(events_page(c))),
        ("GET /events/stream", true, |c| Box::pin(stream(c))),
        ("GET /audit", false, |c| Box::pin(audit(c))),
        ("GET .../slots?as_of", true, |c| Box::pin(as_of(c))),
        ("GET .../slots/history", true, |c| Box::pin(slots_history(c))),
        ("GET .../slots/stream after Last-Event-ID 1", true, |c| Box::pin(slots_stream(c))),
    ]
}

#[track_caller]
fn assert_reports(case: &str, report: &Value, segment: &Path) {
    assert_eq!(report["code"], "storage_failure", "{case}: {report}");
    assert_eq!(report["position"], DAMAGED, "{case}: {report}");
    assert_names(case, report["detail"].as_str().unwrap_or_default(), segment, DAMAGED);
}

/// The HTTP readers on a damaged ledger. A server does not start on one
/// (the tests above), so the damage a running server meets is damage done
/// after its writer wrote the records: the server here is assembled from its
/// parts, its writer holding an intact twin of the ledger (so commands, the
/// projection and the durable position are those of a healthy server) while
/// every reader reads the damaged copy. Each reader then runs its own code to
/// the disk: pages and the stream through `log::Tail`, the audit and time
/// travel through the follower, which meets the damage on its first pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_reader_stops_at_a_damaged_record_and_names_it() {
    for (layout, options) in LAYOUTS {
        for damage in DAMAGES {
            let (intact, damaged) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            write_ledger(intact.path(), options, None);
            let segment = write_ledger(damaged.path(), options, Some(damage));
            let server = assemble(intact.path(), &damaged.path().join("ledger"), ReadLimits::default()).await;
            assert_eq!(server.client.position().await, LAST);
            for (reader, _, read) in http_readers() {
                let case = format!("{reader} on {damage:?} ({layout})");
                assert_reports(&case, &read(server.client.clone()).await, &segment);
            }
        }
    }
}

/// A bit flipped on disk after the follower indexed the record intact (the
/// damage a disk can do to a written record): the readers that read records
/// per request meet it. Time travel here reads the day's records by the
/// locations the index kept, not through the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_after_it_was_indexed_is_named_by_every_reader_that_reads_it() {
    for (layout, options) in LAYOUTS {
        let (intact, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_ledger(intact.path(), options, None);
        for entry in std::fs::read_dir(intact.path().join("ledger")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        let server = assemble(intact.path(), copy.path(), ReadLimits::default()).await;
        // The audit answers once the follower has read every durable record.
        assert_eq!(server.client.get("/v1/kloqo/audit", ADMIN).await.expect(200)["checked_events"], LAST);
        let segment = segment_of(copy.path(), DAMAGED);
        flip_a_byte(copy.path(), DAMAGED);
        for (reader, reads_records_per_request, read) in http_readers() {
            if !reads_records_per_request {
                continue;
            }
            let case = format!("{reader} on a byte flipped after indexing ({layout})");
            assert_reports(&case, &read(server.client.clone()).await, &segment);
        }
    }
}
