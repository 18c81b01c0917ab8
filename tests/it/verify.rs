//! `ledger verify` as an investigator runs it: the real binary on data
//! directories written by the file log or by a server that was then killed.
//! A clean directory and a torn tail exit 0; a flipped byte anywhere exits 1
//! naming the file and the position; a directory a server holds is refused.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use booking_ledger::log::frame::{self, SEGMENT_HEADER_BYTES};
use booking_ledger::log::{FileLog, FileLogOptions, Log};

use crate::support::{Process, booking};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn verify(data: &Path) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger")).arg("verify").arg("--data").arg(data).output().unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `count` records of arbitrary bytes to the log in `dir`, in batches of
/// ten, in small segments; returns the segments in order.
fn write_log(dir: &Path, count: u64) -> Vec<PathBuf> {
    let (mut log, _) = FileLog::open(dir, FileLogOptions { segment_bytes_max: 4096 }).unwrap();
    for i in 1..=count {
        log.append(format!("record {i}: {}", "payload ".repeat((i % 5) as usize)).as_bytes()).unwrap();
        if i.is_multiple_of(10) {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    let mut segments: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    segments
}

/// A data directory with a ledger of `count` records and an empty responses log.
fn data_dir(count: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(&dir.path().join("ledger"), count);
    write_log(&dir.path().join("responses"), 0);
    (dir, segments)
}

/// The position of the record that holds byte `at` of a segment.
fn position_at(segment: &Path, at: usize) -> u64 {
    let bytes = fs::read(segment).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let record = frame::decode_record(&bytes[offset..]).unwrap();
        if at < offset + record.len {
            return record.position;
        }
        offset += record.len;
    }
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    fs::write(path, &bytes).unwrap();
}

fn file_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

#[test]
fn a_clean_ledger_over_several_segments_exits_0() {
    let (dir, segments) = data_dir(1000);
    assert!(segments.len() >= 5, "{} segments", segments.len());
    let run = verify(dir.path());
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let ledger = format!("ledger: 1000 records in {} segments, chain intact, last position 1000", segments.len());
    assert!(run.stdout.contains(&ledger), "{}", run.stdout);
    assert!(run.stdout.contains("responses: 0 records in 1 segment, chain intact, last position 0"), "{}", run.stdout);
    assert!(run.stdout.contains("rejections: no rejections/ directory"), "{}", run.stdout);
}

#[test]
fn a_flipped_byte_in_the_middle_of_a_segment_exits_1_naming_the_file_and_position() {
    let (dir, segments) = data_dir(1000);
    let middle = &segments[segments.len() / 2];
    let at = fs::metadata(middle).unwrap().len() as usize / 2;
    let position = position_at(middle, at);
    flip(middle, at);
    let run = verify(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let line = run.stdout.lines().find(|l| l.starts_with("ledger:")).unwrap();
    assert!(line.contains(&format!("CORRUPT at position {position} ")), "{line}");
    assert!(line.contains(file_name(middle)), "{line}");
    assert!(line.contains(&format!("; {} records before it intact", position - 1)), "{line}");
}

#[test]
fn a_truncated_tail_exits_0_reporting_the_torn_tail() {
    let (dir, segments) = data_dir(1000);
    let last = segments.last().unwrap();
    let (offset, len, position) = last_record(last);
    assert_eq!(position, 1000);
    let file = fs::OpenOptions::new().write(true).open(last).unwrap();
    file.set_len((offset + len - 10) as u64).unwrap();
    drop(file);
    let run = verify(dir.path());
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let line = run.stdout.lines().find(|l| l.starts_with("ledger:")).unwrap();
    assert!(line.contains("999 records") && line.contains("chain intact, last position 999"), "{line}");
    let torn = format!("torn tail of {} bytes at {} byte offset {offset} (position 1000, never acknowledged", len - 10, last.display());
    assert!(line.contains(&torn), "{line}");
}

/// The byte offset, frame length and position of a segment's last record.
fn last_record(segment: &Path) -> (usize, usize, u64) {
    let bytes = fs::read(segment).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut last = None;
    while offset < bytes.len() {
        let record = frame::decode_record(&bytes[offset..]).unwrap();
        last = Some((offset, record.len, record.position));
        offset += record.len;
    }
    last.unwrap()
}

/// The rejection journal is checked too: rotation may have removed its oldest
/// segments, which is clean, but a flipped byte in it is corruption.
#[test]
fn the_rejection_journal_is_verified_even_after_rotation() {
    let (dir, _) = data_dir(10);
    let journal = write_log(&dir.path().join("rejections"), 500);
    fs::remove_file(&journal[0]).unwrap();
    let run = verify(dir.path());
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("rejections: ") && run.stdout.contains("chain intact, last position 500"), "{}", run.stdout);

    let segment = &journal[journal.len() / 2];
    let at = SEGMENT_HEADER_BYTES + 100;
    let position = position_at(segment, at);
    flip(segment, at);
    let run = verify(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let line = run.stdout.lines().find(|l| l.starts_with("rejections:")).unwrap();
    assert!(line.contains(&format!("CORRUPT at position {position} ")) && line.contains(file_name(segment)), "{line}");
    assert!(run.stdout.contains("ledger: 10 records in 1 segment, chain intact"), "{}", run.stdout);
}

/// A server's directory is refused while it runs; after a SIGKILL what it
/// wrote (bookings, their stored answers, refusals) verifies clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_servers_directory_is_refused_and_verifies_clean_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::spawn(dir.path()).await;
    let c = &server.client;
    c.put("/v1/kloqo/clinics/c1/doctors/d1/schedule", &server.token, r#"{"slots_per_day":20}"#).await.expect(200);
    for slot in 0..20 {
        let body = booking("c1", "d1", "2026-05-01", slot, &format!("patient {slot}"));
        c.post_keyed("/v1/kloqo/bookings", &server.token, &body, &format!("key-{slot}")).await.expect(201);
        // The same slot again: refused, and its answer stored under its own key.
        let body = booking("c1", "d1", "2026-05-01", slot, "someone else");
        c.post_keyed("/v1/kloqo/bookings", &server.token, &body, &format!("again-{slot}")).await.expect_problem(409, "slot_taken");
    }
    let position = c.position().await;

    let run = verify(dir.path());
    assert_ne!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("held by another ledger process") && run.stderr.contains("stop the server first"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    server.kill();
    let run = verify(dir.path());
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("ledger: {position} records in 1 segment, chain intact, last position {position}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("responses: 20 records in 1 segment, chain intact, last position 20"), "{}", run.stdout);
}
