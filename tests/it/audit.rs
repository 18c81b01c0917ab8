//! `ledger audit` on real data directories: a log forged past the core, a log
//! the server wrote, a directory a running server holds.

use std::path::Path;
use std::process::{Command, Output};

use booking_ledger::core::{EventKind, Schedule};
use uuid::Uuid;

use crate::support::{Process, booking, forge, forged_booking, forged_event};

fn ledger(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger")).args(args).arg("--data").arg(data).output().expect("running ledger")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_duplicate_booking_forged_past_the_core_is_reported_naming_both_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let schedule = Schedule { slots_per_day: 4, first_slot_minute: None, slot_minutes: None };
    forge(
        dir.path(),
        &[
            forged_event(1, EventKind::ScheduleSet { clinic: "c1".into(), doctor: "d1".into(), schedule }),
            forged_event(2, forged_booking(first, 1)),
            forged_event(3, forged_booking(second, 2)),
        ],
    );
    let output = ledger(&["audit"], dir.path());
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", text(&output.stderr));
    let line = stdout.lines().find(|l| l.starts_with("one_active_booking_per_slot")).unwrap_or_else(|| panic!("no violation in {stdout}"));
    assert!(line.contains("at positions 2, 3:"), "{line}");
    assert!(line.contains(&first.to_string()) && line.contains(&second.to_string()), "{line}");
    assert!(stdout.contains("checked 3 events: 1 violations"), "{stdout}");

    // Restricted to another tenant, the same log is clean.
    let output = ledger(&["audit", "--tenant", "other"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    assert!(text(&output.stdout).contains("checked 0 events: clean"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_the_server_wrote_audits_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::spawn(dir.path()).await;
    let (c, token) = (server.client.clone(), server.token.clone());
    c.put("/v1/kloqo/clinics/c1/doctors/d1/schedule", &token, r#"{"slots_per_day":3}"#).await.expect(200);
    let first = c.post("/v1/kloqo/bookings", &token, &booking("c1", "d1", "2026-05-01", 0, "asha")).await.expect(201);
    c.post("/v1/kloqo/bookings", &token, &booking("c1", "d1", "2026-05-01", 0, "ravi")).await.expect_problem(409, "slot_taken");
    c.post("/v1/kloqo/bookings", &token, &booking("c1", "d1", "2026-05-01", 1, "ravi")).await.expect(201);
    let id = first["booking_id"].as_str().unwrap();
    c.post(&format!("/v1/kloqo/bookings/{id}/cancel"), &token, "{}").await.expect(200);
    // The cancelled slot taken again: legitimate, and the tokens go on (A003).
    let again = c.post("/v1/kloqo/bookings", &token, &booking("c1", "d1", "2026-05-01", 0, "meera")).await.expect(201);
    assert_eq!(again["token"], "A003");
    c.put("/v1/other/clinics/c1/doctors/d1/schedule", &token, r#"{"slots_per_day":1}"#).await.expect(200);
    c.post("/v1/other/bookings", &token, &booking("c1", "d1", "2026-05-01", 0, "asha")).await.expect(201);
    server.kill();

    let output = ledger(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(text(&output.stdout), "checked 7 events: clean\n");
    let output = ledger(&["audit", "--tenant", "kloqo", "--call-cooldown-secs", "60"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(text(&output.stdout), "checked 5 events: clean\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_a_server_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::spawn(dir.path()).await;
    let output = ledger(&["audit"], dir.path());
    server.kill();
    let stderr = text(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("held by another ledger process"), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    // Once the server is gone, the same directory is audited.
    let output = ledger(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn a_directory_without_a_ledger_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = ledger(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("holds no ledger"), "{}", text(&output.stderr));
}

/// A torn record at the end was never acknowledged: the audit covers the
/// records before it and changes nothing on disk (`ledger verify` reports the tear).
#[test]
fn a_torn_tail_is_left_out_with_a_warning_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = Schedule { slots_per_day: 1, first_slot_minute: None, slot_minutes: None };
    forge(
        dir.path(),
        &[
            forged_event(1, EventKind::ScheduleSet { clinic: "c1".into(), doctor: "d1".into(), schedule }),
            forged_event(2, forged_booking(Uuid::now_v7(), 1)),
        ],
    );
    let segment = dir.path().join("ledger").join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[0xAB; 30]);
    std::fs::write(&segment, &bytes).unwrap();
    let output = ledger(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "checked 2 events: clean\n");
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "the audit must not modify the log");
}
