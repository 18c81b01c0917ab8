//! Holds (API.md "Holds"): one hold per slot however many race for it, a
//! held slot booked only by its confirmation, confirmations that book once,
//! and expiry by the ledger's own clock, written by the ledger, across a restart.

use std::sync::Arc;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{Client, KLOQO_ADMIN, Server, TestClock, WEB, booking, config};

const DATE: &str = "2026-03-02";

fn hold(slot: u32, patient: Option<&str>) -> String {
    let mut body = json!({"clinic": "kochi", "doctor": "rao", "date": DATE, "slot": slot, "ttl_secs": 60});
    if let Some(patient) = patient {
        body["patient"] = json!(patient);
    }
    body.to_string()
}

fn slot_of(slots: &Value, slot: usize) -> Value {
    slots["doctors"][0]["slots"][slot].clone()
}

async fn slots(c: &Client) -> Value {
    c.get(&format!("/v1/kloqo/clinics/kochi/slots?date={DATE}"), WEB).await.expect(200)
}

/// The types of the tenant's events, in order.
async fn event_types(c: &Client) -> Vec<String> {
    let events = c.get("/v1/kloqo/events?limit=1000", KLOQO_ADMIN).await.expect(200);
    events["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_fifty_holds_racing_for_a_slot_one_wins_and_only_its_confirmation_books_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 3).await;
    let barrier = Arc::new(Barrier::new(50));
    let replies = join_all((0..50).map(|i| {
        let (c, barrier) = (c.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            c.post("/v1/kloqo/holds", WEB, &hold(1, Some(&format!("patient {i}")))).await
        })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(Result::unwrap).collect();
    let won: Vec<Value> = replies.iter().filter(|r| r.status == 201).map(|r| r.json()).collect();
    assert_eq!(won.len(), 1, "{replies:?}");
    let hold = &won[0];
    let hold_id = hold["hold_id"].as_str().unwrap();
    assert_eq!(hold["status"], "held");
    for lost in replies.iter().filter(|r| r.status != 201) {
        let problem = lost.expect_problem(409, "slot_held");
        assert_eq!((problem["hold_id"].as_str(), &problem["expires_at"]), (Some(hold_id), &hold["expires_at"]));
    }
    // Nobody books it meanwhile; the slots view shows it held.
    c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 1, "Ravi")).await.expect_problem(409, "slot_held");
    let held = slot_of(&slots(c).await, 1);
    assert_eq!((held["state"].as_str(), held["hold_id"].as_str()), (Some("held"), Some(hold_id)));

    let confirm = format!("/v1/kloqo/holds/{hold_id}/confirm");
    let booked = c.post(&confirm, WEB, "{}").await.expect(201);
    assert_eq!((booked["slot"].as_u64(), booked["hold_id"].as_str(), booked["token"].as_str()), (Some(1), Some(hold_id), Some("A001")));
    assert_eq!(booked["patient"], hold["patient"]);
    let position = c.position().await;
    assert_eq!(c.post(&confirm, WEB, "{}").await.expect(200), booked, "confirmed again: the same booking");
    assert_eq!(c.position().await, position, "nothing appended");
    let release = format!("/v1/kloqo/holds/{hold_id}/release");
    let problem = c.post(&release, WEB, "").await.expect_problem(409, "hold_confirmed");
    assert_eq!(problem["booking_id"], booked["booking_id"]);
    let now = c.get(&format!("/v1/kloqo/holds/{hold_id}"), WEB).await.expect(200);
    assert_eq!((now["status"].as_str(), &now["booking_id"]), (Some("confirmed"), &booked["booking_id"]));
    assert_eq!(slot_of(&slots(c).await, 1)["state"], "booked");
    assert_eq!(event_types(c).await, ["schedule_set", "hold_placed", "booking_created"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_confirmations_and_bad_requests_answer_as_the_contract_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 6).await;
    let mut body: Value = serde_json::from_str(&hold(0, None)).unwrap();
    body["ttl_secs"] = json!(29);
    let problem = c.post("/v1/kloqo/holds", WEB, &body.to_string()).await.expect_problem(400, "invalid_request");
    assert_eq!(problem["field"], "ttl_secs");
    body["ttl_secs"] = json!(30);
    body["patient_id"] = json!("not an id");
    let problem = c.post("/v1/kloqo/holds", WEB, &body.to_string()).await.expect_problem(400, "invalid_request");
    assert_eq!(problem["field"], "patient_id");
    c.post("/v1/kloqo/holds", WEB, &hold(7, None)).await.expect_problem(422, "slot_out_of_range");
    let booked = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 2, "Ravi")).await.expect(201);
    let taken = c.post("/v1/kloqo/holds", WEB, &hold(2, None)).await.expect_problem(409, "slot_taken");
    assert_eq!(taken["booking_id"], booked["booking_id"]);

    let hold_id = c.post("/v1/kloqo/holds", WEB, &hold(0, None)).await.expect(201)["hold_id"].as_str().unwrap().to_owned();
    let confirm = format!("/v1/kloqo/holds/{hold_id}/confirm");
    let problem = c.post(&confirm, WEB, "{}").await.expect_problem(400, "invalid_request");
    assert_eq!(problem["field"], "patient");
    let release = format!("/v1/kloqo/holds/{hold_id}/release");
    let released = c.post(&release, WEB, "").await.expect(200);
    assert_eq!(released["status"], "released");
    let position = c.position().await;
    assert_eq!(c.post(&release, WEB, "").await.expect(200), released, "released again: the same answer");
    assert_eq!(c.position().await, position, "nothing appended");
    c.post(&confirm, WEB, r#"{"patient":"Asha"}"#).await.expect_problem(409, "hold_released");
    c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Asha")).await.expect(201);
    let unknown = "0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d";
    c.post(&format!("/v1/kloqo/holds/{unknown}/confirm"), WEB, "{}").await.expect_problem(404, "not_found");
    c.get(&format!("/v1/kloqo/holds/{unknown}"), WEB).await.expect_problem(404, "not_found");

    // Given at hold time and again, a patient must be the same one.
    let hold_id = c.post("/v1/kloqo/holds", WEB, &hold(1, Some("Asha"))).await.expect(201)["hold_id"].as_str().unwrap().to_owned();
    let confirm = format!("/v1/kloqo/holds/{hold_id}/confirm");
    let problem = c.post(&confirm, WEB, r#"{"patient":"Ravi"}"#).await.expect_problem(409, "hold_patient_mismatch");
    assert_eq!(problem["field"], "patient");
    let walk_in = c.post(&confirm, WEB, r#"{"patient":"Asha","kind":"walk_in"}"#).await.expect(201);
    assert_eq!((walk_in["token"].as_str(), &walk_in["patient_id"]), (Some("W001"), &json!(null)));

    // A patient_id given at hold time is the booking's; another at confirmation is refused.
    let mut with_id: Value = serde_json::from_str(&hold(3, Some("Ravi"))).unwrap();
    with_id["patient_id"] = json!("p-7");
    let hold_id = c.post("/v1/kloqo/holds", WEB, &with_id.to_string()).await.expect(201)["hold_id"].as_str().unwrap().to_owned();
    let confirm = format!("/v1/kloqo/holds/{hold_id}/confirm");
    let other = c.post(&confirm, WEB, r#"{"patient_id":"p-8"}"#).await.expect_problem(409, "hold_patient_mismatch");
    assert_eq!(other["field"], "patient_id");
    assert_eq!(c.post(&confirm, WEB, "{}").await.expect(201)["patient_id"], "p-7");
    let mut booked = json!({"clinic": "kochi", "doctor": "rao", "date": DATE, "slot": 4, "patient": "Dev", "patient_id": "p-9"});
    assert_eq!(c.post("/v1/kloqo/bookings", WEB, &booked.to_string()).await.expect(201)["patient_id"], "p-9");
    booked["patient_id"] = json!("no spaces allowed");
    booked["slot"] = json!(5);
    c.post("/v1/kloqo/bookings", WEB, &booked.to_string()).await.expect_problem(400, "invalid_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_expires_by_the_ledgers_clock_and_what_expired_while_down_expires_first_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let server = Server::start_with_clock(config(dir.path()), clock.clone()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 3).await;
    let first = c.post("/v1/kloqo/holds", WEB, &hold(0, Some("Asha"))).await.expect(201);
    let first_id = first["hold_id"].as_str().unwrap().to_owned();
    clock.advance(chrono::Duration::seconds(60));
    // From its expires_at every read says so, written or not.
    assert_eq!(c.get(&format!("/v1/kloqo/holds/{first_id}"), WEB).await.expect(200)["status"], "expired");
    assert_eq!(slot_of(&slots(c).await, 0)["state"], "free");
    c.post(&format!("/v1/kloqo/holds/{first_id}/confirm"), WEB, "{}").await.expect_problem(409, "hold_expired");
    // The writer appends the expiry by itself, with no command to prompt it.
    eventually("the writer appends hold_expired", WAIT_MAX, async || {
        let types = event_types(c).await;
        if types.last().map(String::as_str) == Some("hold_expired") { Ok(()) } else { Err(types) }
    })
    .await;
    assert_eq!(c.post("/v1/kloqo/holds", WEB, &hold(0, None)).await.expect(201)["status"], "held");
    server.stop().await;

    // Down past that hold's expiry: the restarted ledger expires it before
    // deciding anything, so the slot books.
    clock.advance(chrono::Duration::seconds(61));
    let server = Server::start_with_clock(config(dir.path()), clock.clone()).await;
    let c = &server.client;
    c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Ravi")).await.expect(201);
    let types = event_types(c).await;
    assert_eq!(types[types.len() - 2..], ["hold_expired", "booking_created"], "{types:?}");
    let audit = c.get("/v1/kloqo/audit", KLOQO_ADMIN).await.expect(200);
    assert_eq!(audit["violations"], json!([]), "{audit}");
    server.stop().await;
}

/// A confirmation racing the hold's expiry: each hold ends exactly once,
/// confirmed (a booking) or expired, whichever the writer decided first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_expiring_while_its_confirmation_is_in_flight_either_books_or_expires_never_both() {
    let (server, clock, _dir) = crate::support::clocked_server().await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 30).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for slot in 0..30 {
        let body = json!({"clinic": "kochi", "doctor": "rao", "date": DATE, "slot": slot, "ttl_secs": 30, "patient": "Asha"});
        let hold_id = c.post("/v1/kloqo/holds", WEB, &body.to_string()).await.expect(201)["hold_id"].as_str().unwrap().to_owned();
        let confirm = {
            let (c, path) = (c.clone(), format!("/v1/kloqo/holds/{hold_id}/confirm"));
            tokio::spawn(async move { c.post(&path, WEB, "{}").await })
        };
        clock.advance(chrono::Duration::seconds(30));
        let reply = confirm.await.unwrap();
        let status = c.get(&format!("/v1/kloqo/holds/{hold_id}"), WEB).await.expect(200)["status"].as_str().unwrap().to_owned();
        match reply.status {
            201 => assert_eq!(status, "confirmed", "{reply:?}"),
            _ => {
                reply.expect_problem(409, "hold_expired");
                assert_eq!(status, "expired");
            }
        }
        outcomes.insert(hold_id, reply.status);
    }
    // The writer has written every expiry it owes; then each hold has exactly one ending in the log.
    eventually("every expired hold's event is written", WAIT_MAX, async || {
        let events = c.get("/v1/kloqo/events?limit=1000", KLOQO_ADMIN).await.expect(200);
        let endings: Vec<String> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| match e["type"].as_str().unwrap() {
                "hold_expired" => Some(e["data"]["hold_id"].as_str().unwrap().to_owned()),
                "booking_created" => e["data"]["hold_id"].as_str().map(str::to_owned),
                _ => None,
            })
            .collect();
        let mut unique = endings.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), endings.len(), "a hold ended twice: {endings:?}");
        if endings.len() == outcomes.len() { Ok(()) } else { Err(endings.len()) }
    })
    .await;
    let audit = c.get("/v1/kloqo/audit", KLOQO_ADMIN).await.expect(200);
    assert_eq!(audit["violations"], json!([]), "{audit}");
    eprintln!("confirmed before expiry: {} of {}", outcomes.values().filter(|s| **s == 201).count(), outcomes.len());
    server.stop().await;
}

/// `[limits] holds_max`: one more active hold is 429 `too_many_holds` with
/// Retry-After (the seconds until the earliest expiry), keyed or not, and a
/// keyed one's repeat says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_holds_max_a_hold_is_429_with_retry_after_also_on_a_keyed_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.rules.holds_max = 2;
    let server = Server::start_with(config).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 5).await;
    c.post("/v1/kloqo/holds", WEB, &hold(0, Some("Asha"))).await.expect(201);
    c.post("/v1/kloqo/holds", WEB, &hold(1, Some("Ravi"))).await.expect(201);
    let position = c.position().await;
    let refused = c.post("/v1/kloqo/holds", WEB, &hold(2, Some("Chen"))).await;
    let problem = refused.expect_problem(429, "too_many_holds");
    assert_eq!(problem["limit"], 2);
    let retry_after: u32 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "the earliest hold expires within its 60 s: {retry_after}");
    let keyed = c.post_keyed("/v1/kloqo/holds", WEB, &hold(2, Some("Chen")), "chen-1").await;
    keyed.expect_problem(429, "too_many_holds");
    assert!(keyed.header("retry-after").is_some(), "a keyed refusal says when to retry");
    let again = c.post_keyed("/v1/kloqo/holds", WEB, &hold(2, Some("Chen")), "chen-1").await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert!(again.header("retry-after").is_some(), "so does its repeat");
    assert_eq!(again.body, keyed.body);
    assert_eq!(c.position().await, position, "nothing appended");
    server.stop().await;
}
