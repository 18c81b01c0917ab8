//! Snapshots as an operator meets them: written by the server's snapshot
//! thread or by `ledger snapshot`, loaded at the next start, damaged in every
//! way a disk or a hand can damage them (each one reported, skipped, and named
//! by `ledger verify`), or deleted altogether, which loses nothing.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use booking_ledger::core::{Rules, State};
use booking_ledger::log::frame::{self, SEGMENT_HEADER_BYTES};
use booking_ledger::log::{FileLog, FileLogOptions};
use booking_ledger::snapshots::{self, Dirs, SnapshotConfig, StartUp};
use serde_json::Value;

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{ADMIN, Client, Process, Server, booking, config};

struct Run {
    code: Option<i32>,
    stdout: String,
}

fn ledger(args: &[&OsStr]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger")).args(args).output().unwrap();
    Run { code: output.status.code(), stdout: String::from_utf8_lossy(&output.stdout).into_owned() }
}

fn verify(data: &Path) -> Run {
    ledger(&["verify".as_ref(), "--data".as_ref(), data.as_os_str()])
}

/// `ledger snapshot` on `data`; returns the snapshot's position.
fn snapshot(data: &Path) -> u64 {
    let run = ledger(&["snapshot".as_ref(), "--data".as_ref(), data.as_os_str()]);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let position = run.stdout.split("position ").nth(1).and_then(|rest| rest.split(',').next()).unwrap();
    position.parse().unwrap_or_else(|_| panic!("{}", run.stdout))
}

fn dirs(data: &Path) -> Dirs {
    Dirs { ledger: data.join("ledger"), responses: data.join("responses"), snapshots: data.join("snapshots") }
}

fn snapshot_file(data: &Path, position: u64) -> PathBuf {
    data.join("snapshots").join(format!("{position:020}.snap"))
}

/// Books `count` slots from `first`, cancels the first of them, and sends one
/// keyed booking of a taken slot (its refusal goes to the responses journal):
/// `count + 1` events. The schedule is set first (one event the first time).
async fn write(client: &Client, first: u32, count: u32) {
    client.schedule("kloqo", "c1", "d1", 100).await;
    let mut ids = Vec::new();
    for slot in first..first + count {
        let booked = client.post("/v1/kloqo/bookings", ADMIN, &booking("c1", "d1", "2026-05-01", slot, "p")).await.expect(201);
        ids.push(booked["booking_id"].as_str().unwrap().to_owned());
    }
    client.post(&format!("/v1/kloqo/bookings/{}/cancel", ids[0]), ADMIN, "{}").await.expect(200);
    let taken = booking("c1", "d1", "2026-05-01", first + 1, "late");
    client.post_keyed("/v1/kloqo/bookings", ADMIN, &taken, &format!("taken-{first}")).await.expect(409);
}

async fn write_with_server(data: &Path, first: u32, count: u32) {
    let server = Server::start(data).await;
    write(&server.client, first, count).await;
    server.stop().await;
}

/// A `Write` into a shared buffer: the log lines of one start-up.
#[derive(Clone, Default)]
struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Start-up's recovery of `data` (with the warnings it logged) and a recovery
/// of the whole log, for comparison.
fn start_up(data: &Path) -> (StartUp, String, State) {
    let dirs = dirs(data);
    let options = FileLogOptions::default();
    let (log, _) = FileLog::open(&dirs.ledger, options).unwrap();
    let (responses, _) = FileLog::open(&dirs.responses, options).unwrap();
    let now = chrono::Utc::now();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let started =
        tracing::subscriber::with_default(subscriber, || snapshots::recover(&log, &responses, &dirs, Rules::default(), now)).unwrap();
    let full = booking_ledger::replay::recover(&log, &responses, Rules::default(), now).unwrap().state;
    let warnings = String::from_utf8(captured.0.lock().clone()).unwrap();
    (started, warnings, full)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Cuts the ledger's only segment after record `last`.
fn truncate_ledger(data: &Path, last: u64) {
    let segment = data.join("ledger").join("00000000000000000001.seg");
    let bytes = fs::read(&segment).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let record = frame::decode_record(&bytes[offset..]).unwrap();
        offset += record.len;
        if record.position == last {
            break;
        }
    }
    fs::write(&segment, &bytes[..offset]).unwrap();
}

/// What a case does to a copy of the data directory.
type Damage<'a> = dyn Fn(&Path) + 'a;

/// Every way a snapshot can be bad, each on a copy of one data directory with
/// a good older snapshot: start-up reports the bad one (the file and why),
/// loads the older one, and ends in the state a recovery from the whole log
/// gives; `ledger verify` names the bad one and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_snapshot_is_reported_skipped_and_named_by_verify() {
    let pristine = tempfile::tempdir().unwrap();
    write_with_server(pristine.path(), 0, 12).await;
    let older = snapshot(pristine.path());
    write_with_server(pristine.path(), 20, 12).await;
    let newer = snapshot(pristine.path());
    assert_eq!((older, newer), (14, 27), "a schedule, then 13 events per write");
    let run = verify(pristine.path());
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(run.stdout.matches("checksums and chain links match the logs").count(), 2, "{}", run.stdout);
    // Another ledger, as long: its snapshot has the same position and other links.
    let other = tempfile::tempdir().unwrap();
    write_with_server(other.path(), 0, 12).await;
    write_with_server(other.path(), 20, 12).await;
    assert_eq!(snapshot(other.path()), newer);

    let cases: [(&str, &Damage<'_>, &str); 4] = [
        (
            "a flipped byte",
            &|data| {
                let path = snapshot_file(data, newer);
                let mut bytes = fs::read(&path).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x20;
                fs::write(&path, bytes).unwrap();
            },
            "body checksum mismatch",
        ),
        (
            "another ledger's",
            &|data| {
                fs::copy(snapshot_file(other.path(), newer), snapshot_file(data, newer)).unwrap();
            },
            "chain link",
        ),
        ("ahead of the log", &|data| truncate_ledger(data, newer - 3), "ahead of the ledger"),
        (
            "half-written",
            &|data| {
                let path = snapshot_file(data, newer);
                let bytes = fs::read(&path).unwrap();
                fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
                fs::write(data.join("snapshots").join(format!("{:020}.snap.tmp", newer + 1)), &bytes[..100]).unwrap();
            },
            "cut short",
        ),
    ];
    for (case, damage, reason) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), copy.path());
        damage(copy.path());
        let bad = format!("{newer:020}.snap");

        let run = verify(copy.path());
        assert_eq!(run.code, Some(1), "{case}: {}", run.stdout);
        let named = run.stdout.lines().find(|line| line.contains("BAD")).unwrap_or_else(|| panic!("{case}: {}", run.stdout));
        assert!(named.contains(&bad) && named.contains(reason), "{case}: {named}");

        let (started, warnings, full) = start_up(copy.path());
        assert_eq!(started.snapshot.map(|(position, _)| position), Some(older), "{case}: the older snapshot is loaded");
        let warned = warnings.lines().find(|line| line.contains(&bad)).unwrap_or_else(|| panic!("{case}: {warnings}"));
        assert!(warned.contains("WARN") && warned.contains(reason), "{case}: {warned}");
        assert_eq!(started.recovered.state, full, "{case}: the state of the whole log");
        if case == "half-written" {
            assert!(warnings.contains(".snap.tmp"), "{warnings}");
            let left: Vec<_> = fs::read_dir(copy.path().join("snapshots")).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.iter().all(|name| !name.to_string_lossy().ends_with(".tmp")), "{left:?}");
        }
    }
}

/// Every booking of the day, each booking, and the keyed refusals' stored answers.
async fn answers(client: &Client, token: &str) -> Vec<Value> {
    let mut answers = vec![client.get("/v1/kloqo/clinics/c1/slots?date=2026-05-01", token).await.expect(200)];
    let slots = answers[0]["doctors"][0]["slots"].as_array().unwrap().clone();
    for slot in slots.iter().filter(|slot| slot["state"] == "booked") {
        let id = slot["booking_id"].as_str().unwrap();
        answers.push(client.get(&format!("/v1/kloqo/bookings/{id}"), token).await.expect(200));
    }
    for first in [0, 20] {
        let taken = booking("c1", "d1", "2026-05-01", first + 1, "late");
        let repeat = client.send("POST", "/v1/kloqo/bookings", Some(token), Some(&taken), Some(&format!("taken-{first}"))).await;
        assert_eq!(repeat.header("idempotent-replayed"), Some("true"), "the stored answer survived");
        answers.push(repeat.expect(409));
    }
    answers
}

fn metric(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `ledger snapshot` offline, then a server that loads it (its log line and its
/// metric say so) and answers as it did; then `snapshots/` deleted, and a
/// server that recovers the whole log and answers the same again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_offline_is_loaded_and_deleting_every_snapshot_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    write(&server.client, 0, 12).await;
    write(&server.client, 20, 12).await;
    let before = answers(&server.client, ADMIN).await;
    server.stop().await;

    let position = snapshot(dir.path());
    assert_eq!(position, 27);
    // The admin token of a server without configuration is named "admin" too:
    // the stored answers are scoped to the same token name.
    let server = Process::spawn(dir.path()).await;
    let line = server.wait_for_line("recovered from").await;
    assert!(line.contains(&format!("{position:020}.snap (position {position})")), "{line}");
    let metrics = server.client.get("/metrics", &server.token).await;
    assert_eq!(metric(&String::from_utf8_lossy(&metrics.body), "ledger_recovered_snapshot_position"), position);
    assert_eq!(answers(&server.client, &server.token).await, before, "the same answers from the snapshot");
    let refused = ledger(&["snapshot".as_ref(), "--data".as_ref(), dir.path().as_os_str()]);
    assert_eq!(refused.code, Some(1), "a directory a server holds is refused: {}", refused.stdout);
    server.kill();

    fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    let server = Process::spawn(dir.path()).await;
    assert!(server.wait_for_line("recovered from").await.contains("the whole log"));
    let metrics = server.client.get("/metrics", &server.token).await;
    assert_eq!(metric(&String::from_utf8_lossy(&metrics.body), "ledger_recovered_snapshot_position"), 0);
    assert_eq!(answers(&server.client, &server.token).await, before, "the same answers without any snapshot");
    server.kill();
}

/// The server's own snapshot thread, every 10 events: snapshots appear as the
/// ledger grows, only the newest two are kept, and the next start loads the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_takes_snapshots_as_the_ledger_grows_and_keeps_the_newest_two() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = config(dir.path());
    settings.snapshots = SnapshotConfig { every_events: 10, kept: 2 };
    let server = Server::start_with(settings).await;
    let snapshot_position = async |client: &Client| {
        let metrics = client.get("/metrics", ADMIN).await;
        metric(&String::from_utf8_lossy(&metrics.body), "ledger_snapshot_position")
    };
    for first in [0, 20, 40] {
        write(&server.client, first, 12).await;
    }
    // A snapshot each time 10 more events than the last one's are durable, so
    // the last one of these 40 events is past 30 (and at least two came before it).
    let taken = eventually("the snapshot thread's last snapshot is past position 30", WAIT_MAX, async || {
        let taken = snapshot_position(&server.client).await;
        if taken > 30 { Ok(taken) } else { Err(taken) }
    })
    .await;
    let before = answers(&server.client, ADMIN).await;
    server.stop().await;
    let kept = booking_ledger::log::snapshot::list_snapshots(&dir.path().join("snapshots")).unwrap();
    assert_eq!(kept.len(), 2, "the newest two kept of three or more: {kept:?}");
    assert_eq!(kept[1].0, taken);
    assert!(kept[0].0 + 10 <= taken, "{kept:?}");
    let run = verify(dir.path());
    assert_eq!(run.code, Some(0), "{}", run.stdout);

    let mut settings = config(dir.path());
    settings.snapshots = SnapshotConfig { every_events: 10, kept: 2 };
    let server = Server::start_with(settings).await;
    let metrics = server.client.get("/metrics", ADMIN).await;
    assert_eq!(metric(&String::from_utf8_lossy(&metrics.body), "ledger_recovered_snapshot_position"), taken);
    assert_eq!(answers(&server.client, ADMIN).await, before);
    server.stop().await;
}
