//! Reschedule and attendance (API.md "Reschedule and attendance"): one event
//! moves a booking, a reschedule link moves it once however often it is
//! followed, and attendance is marked once, from the booking's day on.

use std::sync::Arc;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::support::{Client, KLOQO_ADMIN, Server, WEB, booking, clocked_server};

const DATE: &str = "2026-03-02";

async fn slot_state(c: &Client, query: &str, slot: usize) -> Value {
    let slots = c.get(&format!("/v1/kloqo/clinics/kochi/slots?date={DATE}{query}"), WEB).await.expect(200);
    slots["doctors"][0]["slots"][slot].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reschedule_link_followed_twenty_times_at_once_moves_the_booking_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 21).await;
    let booked = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Asha")).await.expect(201);
    assert_eq!(booked["version"], 1);
    let id = booked["booking_id"].as_str().unwrap().to_owned();
    let before = c.position().await;
    let path = format!("/v1/kloqo/bookings/{id}/reschedule");
    let barrier = Arc::new(Barrier::new(20));
    let replies = join_all((1..=20).map(|slot| {
        let (c, barrier, path) = (c.clone(), barrier.clone(), path.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            c.post(&path, WEB, &json!({"slot": slot, "expected_version": 1}).to_string()).await
        })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(Result::unwrap).collect();
    let moved: Vec<Value> = replies.iter().filter(|r| r.status == 200).map(|r| r.json()).collect();
    assert_eq!(moved.len(), 1, "{replies:?}");
    for refused in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(refused.expect_problem(409, "version_conflict")["version"], 2);
    }
    let moved = &moved[0];
    assert_eq!((moved["version"].as_u64(), moved["token"].as_str()), (Some(2), Some("A002")));
    assert_eq!(moved["rescheduled_from"], json!({"doctor": "rao", "date": DATE, "slot": 0, "token": "A001"}));
    assert_eq!(c.position().await, before + 1, "one event moved it");
    let new_slot = moved["slot"].as_u64().unwrap() as usize;
    // The old slot is free, the new one booked; as of before, as it was.
    assert_eq!(slot_state(c, "", 0).await["state"], "free");
    assert_eq!(slot_state(c, "", new_slot).await["token"], "A002");
    assert_eq!(slot_state(c, &format!("&as_of={before}"), 0).await["token"], "A001");
    assert_eq!(slot_state(c, &format!("&as_of={before}"), new_slot).await["state"], "free");
    // The old token is never issued again.
    let next = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Ravi")).await.expect(201);
    assert_eq!(next["token"], "A003");
    assert_eq!(c.get(&format!("/v1/kloqo/bookings/{id}"), WEB).await.expect(200), *moved);
    let audit = c.get("/v1/kloqo/audit", KLOQO_ADMIN).await.expect(200);
    assert_eq!(audit["violations"], json!([]), "{audit}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_answers_as_the_contract_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 3).await;
    c.schedule("kloqo", "kochi", "iyer", 3).await;
    let first = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Asha")).await.expect(201);
    let second = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 1, "Ravi")).await.expect(201);
    let path = format!("/v1/kloqo/bookings/{}/reschedule", first["booking_id"].as_str().unwrap());
    let taken = c.post(&path, WEB, r#"{"slot":1}"#).await.expect_problem(409, "slot_taken");
    assert_eq!(taken["booking_id"], second["booking_id"]);
    c.post(&path, WEB, r#"{"slot":3}"#).await.expect_problem(422, "slot_out_of_range");
    c.post(&path, WEB, r#"{"slot":0,"doctor":"nobody"}"#).await.expect_problem(404, "unknown_doctor");
    let position = c.position().await;
    assert_eq!(c.post(&path, WEB, r#"{"slot":0}"#).await.expect(200), first, "its own slot: as it was");
    assert_eq!(c.position().await, position, "nothing appended");
    // Another doctor and another day: that doctor's, that day's sequence.
    let moved = c.post(&path, WEB, r#"{"slot":2,"doctor":"iyer","date":"2026-03-03"}"#).await.expect(200);
    assert_eq!(
        (moved["doctor"].as_str(), moved["date"].as_str(), moved["token"].as_str()),
        (Some("iyer"), Some("2026-03-03"), Some("A001"))
    );
    let hold = json!({"clinic": "kochi", "doctor": "rao", "date": DATE, "slot": 2});
    c.post("/v1/kloqo/holds", WEB, &hold.to_string()).await.expect(201);
    c.post(&path, WEB, &json!({"slot": 2, "doctor": "rao", "date": DATE}).to_string()).await.expect_problem(409, "slot_held");
    let cancel = format!("/v1/kloqo/bookings/{}/cancel", second["booking_id"].as_str().unwrap());
    assert_eq!(c.post(&cancel, WEB, "{}").await.expect(200)["version"], 2);
    let moved_cancelled = format!("/v1/kloqo/bookings/{}/reschedule", second["booking_id"].as_str().unwrap());
    c.post(&moved_cancelled, WEB, r#"{"slot":0}"#).await.expect_problem(409, "booking_cancelled");
    let unknown = "/v1/kloqo/bookings/0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d/reschedule";
    c.post(unknown, WEB, r#"{"slot":0}"#).await.expect_problem(404, "not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attendance_is_marked_once_from_the_booking_day_and_only_an_admin_corrects_it() {
    // The ledger's clock stands still: "today" cannot turn at midnight mid-test.
    let (server, clock, _dir) = clocked_server().await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 3).await;
    let today = booking_ledger::writer::Clock::now(&*clock).date_naive();
    let tomorrow = today.succ_opt().unwrap();
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let booked = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &day(today), 0, "Asha")).await.expect(201);
    let later = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &day(tomorrow), 0, "Ravi")).await.expect(201);
    let at = |b: &Value, what: &str| format!("/v1/kloqo/bookings/{}/{what}", b["booking_id"].as_str().unwrap());
    let early = c.post(&at(&later, "check-in"), WEB, "{}").await.expect_problem(409, "too_early");
    assert_eq!(early["date"], day(tomorrow));

    let arrived = c.post(&at(&booked, "check-in"), WEB, "").await.expect(200);
    assert_eq!((arrived["attendance"].as_str(), arrived["version"].as_u64()), (Some("arrived"), Some(2)));
    let position = c.position().await;
    assert_eq!(c.post(&at(&booked, "check-in"), WEB, "{}").await.expect(200), arrived, "the same mark again");
    assert_eq!(c.position().await, position, "nothing appended");
    let other = c.post(&at(&booked, "no-show"), WEB, "{}").await.expect_problem(409, "attendance_recorded");
    assert_eq!(other["attendance"], "arrived");
    c.post(&at(&booked, "no-show"), WEB, r#"{"correct":true}"#).await.expect_problem(403, "forbidden");
    c.post(&at(&booked, "no-show"), KLOQO_ADMIN, r#"{"correct":false}"#).await.expect_problem(400, "invalid_request");
    let corrected = c.post(&at(&booked, "no-show"), KLOQO_ADMIN, r#"{"correct":true}"#).await.expect(200);
    assert_eq!((corrected["attendance"].as_str(), corrected["version"].as_u64()), (Some("no_show"), Some(3)));
    c.post(&at(&booked, "reschedule"), WEB, r#"{"slot":1}"#).await.expect_problem(409, "attendance_recorded");
    let events = c.get("/v1/kloqo/events?limit=1000", KLOQO_ADMIN).await.expect(200);
    let marks: Vec<&Value> = events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "attendance_recorded").collect();
    assert_eq!(marks.iter().map(|e| e["data"]["corrected"].as_bool().unwrap()).collect::<Vec<_>>(), [false, true]);
    c.post(&at(&later, "cancel"), WEB, "{}").await.expect(200);
    c.post(&at(&later, "no-show"), WEB, "{}").await.expect_problem(409, "booking_cancelled");
    server.stop().await;
}
