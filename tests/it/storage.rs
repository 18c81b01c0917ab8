//! Storage faults over HTTP (API.md, "Limits and hostile clients" -> Storage):
//! a server whose ledger is on a disk that fails on demand answers 503
//! `storage_unavailable` (outcome unknown for the failed batch, not executed
//! while storage is down), says why on `/readyz`, keeps serving reads, and
//! writes again without a restart once the disk does; a keyed command caught
//! in the failure resolves on repeat.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use booking_ledger::log::{Fault, FaultyDisk};
use booking_ledger::writer::WriterConfig;

use crate::support::{ADMIN, Client, Reply, WEB, assemble_on, booking};

const EIO: i32 = 5;

async fn server(dir: &Path, disk: &Arc<FaultyDisk>) -> Client {
    let config = WriterConfig { reopen_interval_min: Duration::from_millis(20), ..WriterConfig::default() };
    let assembled = assemble_on(dir, &dir.join("ledger"), Default::default(), Some(disk.clone()), config).await;
    let c = assembled.client;
    c.schedule("kloqo", "c1", "d1", 10).await;
    c
}

fn book(slot: u32) -> String {
    booking("c1", "d1", "2026-05-01", slot, "p")
}

#[track_caller]
fn expect_unavailable(reply: &Reply, outcome: &str) {
    let problem = reply.expect_problem(503, "storage_unavailable");
    assert_eq!(problem["outcome"], outcome, "{problem}");
    let retry_after: u32 = reply.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry_after >= 1);
}

async fn readyz(c: &Client) -> Reply {
    c.send("GET", "/readyz", None, None, None).await
}

/// The data directory passes `ledger verify`.
fn verify(dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger")).arg("verify").arg("--data").arg(dir).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fsync_is_503_storage_unavailable_reads_go_on_and_the_server_resumes_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FaultyDisk::new());
    let c = server(dir.path(), &disk).await;
    let first = c.post("/v1/kloqo/bookings", WEB, &book(0)).await.expect(201);
    let position = c.position().await;

    // The device breaks: every fsync fails, what was written stays in the file.
    disk.fail_every_sync(Some(EIO));
    let caught = c.post_keyed("/v1/kloqo/bookings", WEB, &book(1), "caught").await;
    expect_unavailable(&caught, "unknown");
    let ready = readyz(&c).await;
    let problem = ready.expect_problem(503, "storage_unavailable");
    assert!(problem["cause"].as_str().unwrap().contains("os error 5"), "readiness names the cause: {problem}");
    assert_eq!(problem["retrying"], true);
    // Until the log re-opens, commands are refused unexecuted (the writer is
    // re-opening every 20 ms and failing: every re-open syncs).
    let refused = c.post("/v1/kloqo/bookings", WEB, &book(2)).await;
    expect_unavailable(&refused, "not_executed");

    // Reads are served, from the state every acknowledged command made.
    let id = first["booking_id"].as_str().unwrap();
    assert_eq!(c.get(&format!("/v1/kloqo/bookings/{id}"), WEB).await.expect(200), first);
    let slots = c.get("/v1/kloqo/clinics/c1/slots?date=2026-05-01", WEB).await.expect(200);
    let states: Vec<&str> = slots["doctors"][0]["slots"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(&states[..3], ["booked", "free", "free"], "nothing unacknowledged is visible");
    let events = c.get("/v1/kloqo/events?from=1", ADMIN).await.expect(200);
    assert_eq!(events["events"].as_array().unwrap().len() as u64, position);
    c.get("/v1/kloqo/audit", ADMIN).await.expect(200);

    // The device recovers: the server writes again, with no restart.
    disk.fail_every_sync(None);
    c.wait_ready().await;
    // The caught booking had reached the disk: its repeat is its stored answer.
    let repeated = c.post_keyed("/v1/kloqo/bookings", WEB, &book(1), "caught").await;
    let resolved = repeated.expect(201);
    assert_eq!(repeated.header("idempotent-replayed"), Some("true"));
    assert_eq!(resolved["token"], "A002");
    assert_eq!(c.position().await, position + 1, "the caught booking is published, once");
    c.post("/v1/kloqo/bookings", WEB, &book(2)).await.expect(201);
    verify(dir.path());
}

/// A keyed command whose batch was lost (the kernel dropped the pages it
/// could not write back) executes once when repeated; later repeats replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_lost_with_its_batch_executes_once_on_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FaultyDisk::new());
    let c = server(dir.path(), &disk).await;
    let position = c.position().await;
    disk.arm(Fault::FailSync { errno: EIO, kept: Some(0) }, 0);
    expect_unavailable(&c.post_keyed("/v1/kloqo/bookings", WEB, &book(3), "lost").await, "unknown");
    c.wait_ready().await;
    assert_eq!(c.position().await, position, "nothing of the lost batch is there");

    let executed = c.post_keyed("/v1/kloqo/bookings", WEB, &book(3), "lost").await;
    let body = executed.expect(201);
    assert_eq!(executed.header("idempotent-replayed"), None, "executed now, not replayed");
    let again = c.post_keyed("/v1/kloqo/bookings", WEB, &book(3), "lost").await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(again.body, executed.body, "byte for byte");
    assert_eq!(c.position().await, position + 1, "executed exactly once");
    assert_eq!(body["token"], "A001");
    verify(dir.path());
}

/// A full disk: commands get 503 storage_unavailable, never a 500, never a
/// 201 that is lost; once space returns the server books again, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FaultyDisk::new());
    let c = server(dir.path(), &disk).await;
    disk.set_space(Some(0));
    expect_unavailable(&c.post("/v1/kloqo/bookings", WEB, &book(0)).await, "unknown");
    let ready = readyz(&c).await;
    let problem = ready.expect_problem(503, "storage_unavailable");
    assert!(problem["cause"].as_str().unwrap().contains("os error 28"), "{problem}");
    // The writer re-opens (that needs no space) and fails again, for as long as the disk is full.
    let mut acknowledged = Vec::new();
    for slot in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let reply = c.post("/v1/kloqo/bookings", WEB, &book(slot)).await;
        match reply.status {
            201 => acknowledged.push(reply.json()),
            _ => assert_eq!(reply.expect_problem(503, "storage_unavailable")["code"], "storage_unavailable"),
        }
    }
    assert!(acknowledged.is_empty(), "nothing fits on a full disk");

    disk.set_space(None);
    c.wait_ready().await;
    let booked = c.post("/v1/kloqo/bookings", WEB, &book(9)).await.expect(201);
    assert_eq!(booked["slot"], 9);
    verify(dir.path());
}
