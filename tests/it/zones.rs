//! Clinics and time zones (API.md): a clinic's zone, slots and bookings as
//! instants with the offset in force, and a daylight-saving gap unavailable.

use chrono::Datelike;
use serde_json::{Value, json};

use crate::support::{Client, Server, WEB, booking};

const SPRING: &str = "2026-03-29";

async fn night_schedule(c: &Client) {
    // 01:00, 01:30, 02:00, 02:30, 03:00, 03:30: Berlin skips 02:00 to 03:00 on SPRING.
    let schedule = json!({"slots_per_day": 6, "first_slot": "01:00", "slot_minutes": 30});
    c.put("/v1/kloqo/clinics/berlin/doctors/weber/schedule", WEB, &schedule.to_string()).await.expect(200);
}

async fn slots(c: &Client, date: &str) -> Vec<Value> {
    let day = c.get(&format!("/v1/kloqo/clinics/berlin/slots?date={date}"), WEB).await.expect(200);
    day["doctors"][0]["slots"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinics_zone_gives_every_slot_its_instant_and_a_skipped_time_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.get("/v1/kloqo/clinics/berlin", WEB).await.expect_problem(404, "not_found");
    night_schedule(c).await;
    let utc = c.get("/v1/kloqo/clinics/berlin", WEB).await.expect(200);
    assert_eq!((utc["time_zone"].as_str(), utc["position"].as_u64()), (Some("UTC"), Some(0)));
    assert_eq!(slots(c, SPRING).await[2]["starts_at"], "2026-03-29T02:00:00Z", "UTC writes Z");

    let bad = c.put("/v1/kloqo/clinics/berlin", WEB, r#"{"time_zone":"Mars/Olympus"}"#).await.expect_problem(400, "invalid_request");
    assert_eq!(bad["field"], "time_zone");
    let set = c.put("/v1/kloqo/clinics/berlin", WEB, r#"{"time_zone":"Europe/Berlin"}"#).await.expect(200);
    assert_eq!(set["time_zone"], "Europe/Berlin");
    assert_eq!(set["tzdata"].as_str().unwrap().len(), 5, "{set}");
    let position = c.position().await;
    assert_eq!(c.put("/v1/kloqo/clinics/berlin", WEB, r#"{"time_zone":"Europe/Berlin"}"#).await.expect(200), set);
    assert_eq!(c.position().await, position, "the same zone again appends nothing");
    assert_eq!(c.get("/v1/kloqo/clinics/berlin", WEB).await.expect(200), set);

    let day = slots(c, SPRING).await;
    assert_eq!(
        (day[1]["starts_at"].as_str(), day[1]["ends_at"].as_str()),
        (Some("2026-03-29T01:30:00+01:00"), Some("2026-03-29T03:00:00+02:00"))
    );
    for skipped in [2, 3] {
        assert_eq!(day[skipped]["state"], "unavailable", "{}", day[skipped]);
        assert!(day[skipped]["time"].is_string() && day[skipped].get("starts_at").is_none(), "{}", day[skipped]);
    }
    assert_eq!(day[4]["starts_at"], "2026-03-29T03:00:00+02:00");
    let refused = c.post("/v1/kloqo/bookings", WEB, &booking("berlin", "weber", SPRING, 2, "Asha")).await;
    assert_eq!(refused.expect_problem(422, "slot_unavailable")["time"], "02:00");
    let hold = json!({"clinic": "berlin", "doctor": "weber", "date": SPRING, "slot": 3});
    c.post("/v1/kloqo/holds", WEB, &hold.to_string()).await.expect_problem(422, "slot_unavailable");
    let booked = c.post("/v1/kloqo/bookings", WEB, &booking("berlin", "weber", SPRING, 4, "Asha")).await.expect(201);
    assert_eq!((booked["time"].as_str(), booked["starts_at"].as_str()), (Some("03:00"), Some("2026-03-29T03:00:00+02:00")));
    // The day's history lists the zone change with the schedules and bookings.
    let history = c.get(&format!("/v1/kloqo/clinics/berlin/slots/history?date={SPRING}"), WEB).await.expect(200);
    let kinds: Vec<&str> = history["changes"].as_array().unwrap().iter().map(|h| h["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["schedule_set", "clinic_zone_set", "booking_created"], "{history}");
    // A summer day: the offset in force then.
    assert_eq!(slots(c, "2026-07-01").await[0]["starts_at"], "2026-07-01T01:00:00+02:00");
    server.stop().await;

    // `ledger slots` shows the same instants, offline.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["slots", "--tenant", "kloqo", "--clinic", "berlin", "--date", SPRING, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("time zone Europe/Berlin"), "{stdout}");
    let line = |slot: &str| stdout.lines().find(|l| l.split_whitespace().nth(1) == Some(slot)).unwrap_or_default().to_owned();
    assert!(line("2").contains("unavailable") && line("2").contains("02:00"), "{stdout}");
    assert!(line("4").contains("2026-03-29T03:00:00+02:00") && line("4").contains("booked"), "{stdout}");
}

/// Every daylight-saving transition of 2026 and 2027 in four zones (one with
/// a 30-minute shift, one with none), for a day of 15-minute slots from
/// midnight: each slot's instant, or its absence in a gap, as `SlotTime`
/// computes it with chrono-tz equals what Python's `zoneinfo` computes from
/// the system's tzdata, an implementation nobody here wrote.
#[test]
fn every_transition_of_2026_and_2027_matches_an_independent_computation() {
    use booking_ledger::core::{Schedule, SlotTime, Tz};
    use chrono::{NaiveDate, Offset, TimeZone};
    let day = Schedule { slots_per_day: 96, first_slot_minute: Some(0), slot_minutes: Some(15) };
    let mut cases = Vec::new();
    for name in ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"] {
        let zone: Tz = name.parse().unwrap();
        let mut date = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut transitions = 0;
        while date.year() < 2028 {
            let offset = |d: NaiveDate| zone.offset_from_utc_date(&d).fix();
            let next = date.succ_opt().unwrap();
            // The day whose offset differs from the next day's holds a transition.
            if offset(date) != offset(next) {
                transitions += 1;
                for on in [date, next] {
                    cases.push((name, on));
                }
            }
            date = next;
        }
        assert_eq!(transitions, if name == "Asia/Kolkata" { 0 } else { 4 }, "{name}");
        if transitions == 0 {
            cases.push((name, NaiveDate::from_ymd_opt(2026, 3, 29).unwrap()));
        }
    }
    let script = r#"
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
for line in sys.stdin:
    name, date = line.split()
    z = ZoneInfo(name)
    y, m, d = map(int, date.split("-"))
    for minute in range(0, 24 * 60, 15):
        wall = datetime(y, m, d, minute // 60, minute % 60, tzinfo=z)
        back = wall.astimezone(timezone.utc).astimezone(z)
        exists = back.replace(tzinfo=None) == wall.replace(tzinfo=None)
        print(name, date, minute, wall.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if exists else "gap")
"#;
    use std::io::Write;
    let mut python = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3, with the system's tzdata (Debian's tzdata package)");
    let input: String = cases.iter().map(|(name, date)| format!("{name} {date}\n")).collect();
    python.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected = String::from_utf8(output.stdout).unwrap();
    let mut ours = String::new();
    for (name, date) in &cases {
        let zone: Tz = name.parse().unwrap();
        for slot in 0..96 {
            let instant = match SlotTime::of(zone, &day, *date, slot) {
                SlotTime::At { starts_at, .. } => starts_at.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                SlotTime::Unavailable { .. } => "gap".to_owned(),
                SlotTime::Untimed => unreachable!("a timed schedule"),
            };
            ours += &format!("{name} {date} {} {instant}\n", slot * 15);
        }
    }
    assert_eq!(ours.lines().count(), expected.lines().count());
    for (a, b) in ours.lines().zip(expected.lines()) {
        assert_eq!(a, b, "ours, then zoneinfo's");
    }
    assert!(ours.contains("Australia/Lord_Howe 2026-10-04 120 gap"), "Lord Howe's 30-minute gap is in the cases");
}
