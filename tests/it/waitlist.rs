//! The waitlist (API.md "Waitlist"): a freed slot is offered, as a hold, to
//! the first waiting patient in the same command that freed it; an offer
//! confirmed books, withdrawn passes it on.

use serde_json::{Value, json};

use crate::support::{Client, KLOQO_ADMIN, Server, WEB, booking};

const DATE: &str = "2026-03-02";

async fn join(c: &Client, patient: &str) -> Value {
    let body = json!({"date": DATE, "doctor": "rao", "patient": patient});
    c.post("/v1/kloqo/clinics/kochi/waitlist", WEB, &body.to_string()).await.expect(201)
}

async fn entries(c: &Client) -> Vec<Value> {
    let list = c.get(&format!("/v1/kloqo/clinics/kochi/waitlist?date={DATE}"), WEB).await.expect(200);
    list["entries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_slot_goes_to_the_first_waiting_patient_as_a_hold_in_the_same_command() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 1).await;
    let taken = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Asha")).await.expect(201);
    let ravi = join(c, "Ravi").await;
    assert_eq!(ravi["status"], "waiting");
    let chen = join(c, "Chen").await;
    c.post("/v1/kloqo/clinics/kochi/waitlist", WEB, &json!({"date": DATE, "doctor": "nobody", "patient": "X"}).to_string())
        .await
        .expect_problem(404, "unknown_doctor");

    let position = c.position().await;
    let cancel = format!("/v1/kloqo/bookings/{}/cancel", taken["booking_id"].as_str().unwrap());
    c.post(&cancel, WEB, "{}").await.expect(200);
    assert_eq!(c.position().await, position + 2, "the cancellation and the offer, in one command");
    let now = entries(c).await;
    assert_eq!(now.iter().map(|e| e["status"].as_str().unwrap()).collect::<Vec<_>>(), ["offered", "waiting"]);
    let hold_id = now[0]["hold_id"].as_str().unwrap().to_owned();
    assert!(now[0]["expires_at"].is_string(), "{}", now[0]);
    let slot = c.get(&format!("/v1/kloqo/clinics/kochi/slots?date={DATE}"), WEB).await.expect(200)["doctors"][0]["slots"][0].clone();
    assert_eq!((slot["state"].as_str(), slot["hold_id"].as_str()), (Some("held"), Some(hold_id.as_str())));
    c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Dev")).await.expect_problem(409, "slot_held");
    // The day's history says so, with the instant the offer ends.
    let history = c.get(&format!("/v1/kloqo/clinics/kochi/slots/history?date={DATE}"), WEB).await.expect(200);
    let offer = history["changes"].as_array().unwrap().iter().find(|h| h["type"] == "hold_placed").unwrap().clone();
    let summary = offer["summary"].as_str().unwrap();
    let until = now[0]["expires_at"].as_str().unwrap();
    assert!(summary.contains(&format!("held until {}Z", &until[..19])), "{summary} ({until})");

    // Ravi withdraws: the offer's hold is released and Chen is offered the slot.
    let withdrawn = c.post(&format!("/v1/kloqo/waitlist/{}/withdraw", ravi["entry_id"].as_str().unwrap()), WEB, "").await.expect(200);
    assert_eq!(withdrawn["status"], "withdrawn");
    let now = entries(c).await;
    assert_eq!(now.iter().map(|e| e["status"].as_str().unwrap()).collect::<Vec<_>>(), ["withdrawn", "offered"]);
    let chens_hold = now[1]["hold_id"].as_str().unwrap().to_owned();
    let booked = c.post(&format!("/v1/kloqo/holds/{chens_hold}/confirm"), WEB, "{}").await.expect(201);
    assert_eq!(booked["patient"], "Chen");
    let now = entries(c).await;
    assert_eq!((now[1]["status"].as_str(), &now[1]["booking_id"]), (Some("booked"), &booked["booking_id"]));
    let entry = format!("/v1/kloqo/waitlist/{}/withdraw", chen["entry_id"].as_str().unwrap());
    assert_eq!(c.post(&entry, WEB, "").await.expect_problem(409, "entry_booked")["booking_id"], booked["booking_id"]);
    c.post("/v1/kloqo/waitlist/0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d/withdraw", WEB, "").await.expect_problem(404, "not_found");

    // Joining while a slot is free offers it at once.
    c.schedule("kloqo", "kochi", "rao", 2).await;
    assert_eq!(join(c, "Dev").await["status"], "offered");
    let audit = c.get("/v1/kloqo/audit", KLOQO_ADMIN).await.expect(200);
    assert_eq!(audit["violations"], json!([]), "{audit}");
    server.stop().await;
}

/// Releasing a waitlist offer's hold withdraws its entry, and the slot goes to
/// the next waiting patient in the same command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_an_offers_hold_withdraws_its_entry_and_offers_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 1).await;
    let taken = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", DATE, 0, "Asha")).await.expect(201);
    let (ravi, _chen) = (join(c, "Ravi").await, join(c, "Chen").await);
    c.post(&format!("/v1/kloqo/bookings/{}/cancel", taken["booking_id"].as_str().unwrap()), WEB, "{}").await.expect(200);
    let offered = entries(c).await;
    let ravis_hold = offered[0]["hold_id"].as_str().unwrap().to_owned();
    let position = c.position().await;
    let released = c.post(&format!("/v1/kloqo/holds/{ravis_hold}/release"), WEB, "{}").await.expect(200);
    assert_eq!(released["status"], "released");
    assert_eq!(c.position().await, position + 2, "the release and the next offer, in one command");
    let now = entries(c).await;
    assert_eq!(now.iter().map(|e| e["status"].as_str().unwrap()).collect::<Vec<_>>(), ["withdrawn", "offered"]);
    assert_eq!(now[0]["entry_id"], ravi["entry_id"]);
    assert_ne!(now[1]["hold_id"].as_str(), Some(ravis_hold.as_str()));
    server.stop().await;
}
