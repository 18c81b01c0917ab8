//! `ledger backup` under load: a copy taken while clients book through HTTP
//! verifies clean, audits clean, and a server started on it answers every
//! booking (and every stored keyed answer) acknowledged before it started.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{Server, WEB, booking, config};

const CLIENTS: u32 = 4;
const SLOTS: u32 = 1000;
/// Each client books every slot of its doctor on these days, in turn.
const DAYS: u32 = 9;

fn ledger(args: &[&str], data: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger")).args(args).arg("--data").arg(data).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What one client had acknowledged: each booking's id and slot, and each
/// keyed refusal's key and answer body.
#[derive(Default, Clone)]
struct Acknowledged {
    bookings: Vec<(String, u64)>,
    keyed_refusals: Vec<(String, Vec<u8>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_verifies_and_serves_every_booking_acknowledged_before_it() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let dest = scratch.path().join("backup");
    let mut server_config = config(&data);
    // Snapshots every 100 events, so the backup has one to copy.
    server_config.snapshots.every_events = 100;
    let server = Server::start_with(server_config).await;
    let c = server.client.clone();
    for client in 0..CLIENTS {
        c.schedule("kloqo", "c1", &format!("d{client}"), SLOTS).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Vec<Arc<parking_lot::Mutex<Acknowledged>>> =
        (0..CLIENTS).map(|_| Arc::new(parking_lot::Mutex::new(Acknowledged::default()))).collect();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (c, stop, mine) = (c.clone(), stop.clone(), acknowledged[client as usize].clone());
        clients.push(tokio::spawn(async move {
            let doctor = format!("d{client}");
            for n in 0..SLOTS * DAYS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (date, slot) = (format!("2026-03-0{}", n / SLOTS + 1), n % SLOTS);
                let body = booking("c1", &doctor, &date, slot, "p");
                let reply = c.post("/v1/kloqo/bookings", WEB, &body).await;
                let booked = reply.expect(201);
                mine.lock().bookings.push((booked["booking_id"].as_str().unwrap().to_owned(), slot as u64));
                // Every tenth slot, a keyed second booking of it: a refusal whose
                // answer is stored in the responses journal.
                if slot % 10 == 0 {
                    let key = format!("again-{client}-{n}");
                    let refused = c.post_keyed("/v1/kloqo/bookings", WEB, &body, &key).await;
                    refused.expect_problem(409, "slot_taken");
                    mine.lock().keyed_refusals.push((key, refused.body));
                }
            }
        }));
    }

    // Mid-load: once a few hundred bookings are acknowledged, note them all, then back up.
    let total = || acknowledged.iter().map(|a| a.lock().bookings.len()).sum::<usize>();
    eventually("400 bookings are acknowledged", WAIT_MAX, async || if total() >= 400 { Ok(()) } else { Err(total()) }).await;
    let before: Vec<Acknowledged> = acknowledged.iter().map(|a| a.lock().clone()).collect();
    let position_before = c.position().await;
    let (data_arg, dest_arg) = (data.clone(), dest.clone());
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || ledger(&["backup", "--to", dest_arg.to_str().unwrap()], &data_arg)).await.unwrap();
    let after = total();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("snapshot: ") && !stdout.contains("snapshot: none"), "a snapshot was there to copy: {stdout}");
    let total_before: usize = before.iter().map(|a| a.bookings.len()).sum();
    assert!(after > total_before, "the load went on while the backup ran ({total_before} then {after})");
    assert!(!dest.join("LOCK").exists(), "the backup takes no lock and copies none");
    server.stop().await;

    let (code, stdout, stderr) = ledger(&["verify"], &dest);
    assert_eq!(code, 0, "verify on the backup: {stdout}{stderr}");
    assert!(stdout.contains("ledger:") && stdout.contains("chain intact"), "{stdout}");
    assert!(!stdout.contains("torn"), "every log is cut after a whole record: {stdout}");
    assert!(stdout.contains("checksums and chain links match the logs"), "the snapshot checks out: {stdout}");
    let (code, stdout, stderr) = ledger(&["audit"], &dest);
    assert_eq!(code, 0, "audit on the backup: {stdout}{stderr}");
    assert!(stdout.contains("clean"), "{stdout}");

    // A server on the copy: every booking acknowledged before the backup, and
    // every keyed refusal's stored answer, byte for byte.
    let restored = Server::start(&dest).await;
    let r = &restored.client;
    assert!(r.position().await >= position_before);
    let mut checked = 0;
    for client in &before {
        for (booking_id, slot) in &client.bookings {
            let found = r.get(&format!("/v1/kloqo/bookings/{booking_id}"), WEB).await.expect(200);
            assert_eq!((found["slot"].as_u64(), found["status"].as_str()), (Some(*slot), Some("confirmed")));
            checked += 1;
        }
        for (key, answer) in &client.keyed_refusals {
            let n: u32 = key.rsplit('-').next().unwrap().parse().unwrap();
            let doctor = format!("d{}", key.split('-').nth(1).unwrap());
            let body = booking("c1", &doctor, &format!("2026-03-0{}", n / SLOTS + 1), n % SLOTS, "p");
            let again = r.post_keyed("/v1/kloqo/bookings", WEB, &body, key).await;
            assert_eq!((again.status, &again.body), (409, answer), "the stored answer of {key}");
            assert_eq!(again.header("idempotent-replayed"), Some("true"));
        }
    }
    assert_eq!(checked, total_before);
    restored.stop().await;

    // A backup never goes over an existing one.
    let (code, _, stderr) = ledger(&["backup", "--to", dest.to_str().unwrap()], &data);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not empty"), "{stderr}");
}
