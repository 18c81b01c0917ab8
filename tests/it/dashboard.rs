//! The clinic dashboard's server side: the live slots stream (the whole day,
//! then each change, resumable, bounded, per tenant), a day's history for time
//! travel, and `GET /ui/` served from the binary.

use std::time::Duration;

use serde_json::{Value, json};

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{ADMIN, APP, KLOQO_ADMIN, OTHER, Server, WEB, booking, config};

const DATE: &str = "2026-03-02";
/// The issue's bound for a change to reach a dashboard is a second; the tests
/// wait far longer before failing, so a loaded machine cannot fail them, while
/// a change that never arrives still does.
const MESSAGE_WAIT_MAX: Duration = Duration::from_secs(10);

/// An open slots stream, read message by message.
struct SlotsStream {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
struct Message {
    id: Option<u64>,
    event: String,
    data: Value,
}

impl SlotsStream {
    async fn open(base: &str, path: &str, token: &str, last_event_id: Option<u64>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        request.send().await.unwrap()
    }

    async fn start(base: &str, token: &str, last_event_id: Option<u64>) -> SlotsStream {
        let response = SlotsStream::open(base, &format!("/v1/kloqo/clinics/c1/slots/stream?date={DATE}"), token, last_event_id).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SlotsStream { response, buffer: String::new() }
    }

    /// The next message, or a failure after `MESSAGE_WAIT_MAX`.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(MESSAGE_WAIT_MAX, self.read()).await.expect("a message within the wait")
    }

    async fn read(&mut self) -> Message {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse().unwrap());
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        event = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Message { id, event, data: serde_json::from_str(&data).unwrap() };
            }
            let chunk = self.response.chunk().await.unwrap().expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn slot<'a>(view: &'a Value, doctor: &str, slot: u64) -> &'a Value {
    let doctor = view["doctors"].as_array().unwrap().iter().find(|d| d["doctor"] == doctor).expect("the doctor is listed");
    doctor["slots"].as_array().unwrap().iter().find(|s| s["slot"] == slot).expect("the slot is listed")
}

/// The first message is the day as `GET /slots` answers it; then a booking and
/// a cancellation made by another client each arrive as one change, carrying
/// the slot as it now stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slots_stream_sends_the_day_then_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    c.schedule("kloqo", "c1", "d2", 2).await;
    c.post("/v1/kloqo/bookings", APP, &booking("c1", "d1", DATE, 0, "Asha")).await.expect(201);
    // Not this day, not this clinic, not this tenant: no message for them.
    c.post("/v1/kloqo/bookings", APP, &booking("c1", "d1", "2026-03-03", 1, "Ben")).await.expect(201);
    c.schedule("kloqo", "c2", "d1", 4).await;
    c.schedule("other", "c1", "d1", 4).await;
    c.post("/v1/other/bookings", OTHER, &booking("c1", "d1", DATE, 1, "Oz")).await.expect(201);

    let mut stream = SlotsStream::start(&c.base, WEB, None).await;
    let day = stream.next().await;
    let expected = c.get(&format!("/v1/kloqo/clinics/c1/slots?date={DATE}"), WEB).await.expect(200);
    assert_eq!((day.event.as_str(), &day.data), ("day", &expected));
    assert_eq!(day.id, expected["as_of"].as_u64());
    assert_eq!(slot(&day.data, "d1", 0)["patient"], "Asha", "a booked slot shows its patient");

    let booked = c.post("/v1/kloqo/bookings", APP, &booking("c1", "d1", DATE, 2, "Chen")).await.expect(201);
    let change = stream.next().await;
    assert_eq!((change.event.as_str(), change.id), ("change", booked["position"].as_u64()));
    assert_eq!(change.data["type"], "booking_created");
    assert_eq!(
        change.data["doctors"],
        json!([{"doctor": "d1", "slots_per_day": 4, "slots": [{
            "slot": 2, "time": "09:30", "starts_at": format!("{DATE}T09:30:00Z"), "ends_at": format!("{DATE}T09:45:00Z"),
            "state": "booked", "booking_id": booked["booking_id"], "token": booked["token"], "patient": "Chen"
        }]}])
    );
    assert!(change.data["summary"].as_str().unwrap().contains("Chen"), "{}", change.data);

    let id = booked["booking_id"].as_str().unwrap();
    let cancelled = c.post(&format!("/v1/kloqo/bookings/{id}/cancel"), APP, "{}").await.expect(200);
    let change = stream.next().await;
    assert_eq!((change.id, &change.data["type"]), (cancelled["position"].as_u64(), &json!("booking_cancelled")));
    let free = json!([{"slot": 2, "time": "09:30", "starts_at": format!("{DATE}T09:30:00Z"), "ends_at": format!("{DATE}T09:45:00Z"), "state": "free"}]);
    assert_eq!(change.data["doctors"][0]["slots"], free);

    // A new schedule lists every slot of the doctor as it now stands.
    c.schedule("kloqo", "c1", "d2", 3).await;
    let change = stream.next().await;
    assert_eq!(change.data["type"], "schedule_set");
    assert_eq!(change.data["doctors"][0]["doctor"], "d2");
    assert_eq!(change.data["doctors"][0]["slots"].as_array().unwrap().len(), 3);
    server.stop().await;
}

/// A client that saw position N and reconnects with `Last-Event-ID: N` gets
/// exactly the changes after N, including the cancellation of a booking made
/// while it was away, and no second `day`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slots_stream_resumes_after_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 8).await;
    let mut stream = SlotsStream::start(&c.base, KLOQO_ADMIN, None).await;
    let seen = stream.next().await.id.unwrap();
    drop(stream);

    let first = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect(201);
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "2026-03-04", 1, "other day")).await.expect(201);
    let second = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 2, "Ben")).await.expect(201);
    let cancel = c.post(&format!("/v1/kloqo/bookings/{}/cancel", first["booking_id"].as_str().unwrap()), WEB, "{}").await.expect(200);

    let mut resumed = SlotsStream::start(&c.base, KLOQO_ADMIN, Some(seen)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let message = resumed.next().await;
        assert_eq!(message.event, "change", "no second day: {message:?}");
        ids.push(message.id.unwrap());
    }
    assert_eq!(ids, [first["position"].as_u64().unwrap(), second["position"].as_u64().unwrap(), cancel["position"].as_u64().unwrap()]);

    // Resuming in the middle: the day as of then is read from the index, so the
    // cancellation still finds the slot it frees.
    let mut middle = SlotsStream::start(&c.base, KLOQO_ADMIN, first["position"].as_u64()).await;
    assert_eq!(middle.next().await.id, second["position"].as_u64());
    let freed = middle.next().await;
    let free = json!([{"slot": 1, "time": "09:15", "starts_at": format!("{DATE}T09:15:00Z"), "ends_at": format!("{DATE}T09:30:00Z"), "state": "free"}]);
    assert_eq!(freed.data["doctors"][0]["slots"], free);

    // Caught up: a stream resumed at the last position waits for the next change.
    let mut live = SlotsStream::start(&c.base, KLOQO_ADMIN, cancel["position"].as_u64()).await;
    let third = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 3, "Chen")).await.expect(201);
    assert_eq!(live.next().await.id, third["position"].as_u64());

    // A position the ledger has not reached is nobody's last seen.
    let ahead = SlotsStream::open(&c.base, &format!("/v1/kloqo/clinics/c1/slots/stream?date={DATE}"), WEB, Some(1_000_000)).await;
    assert_eq!(ahead.status(), 400);
    server.stop().await;
}

/// Slots streams count against `streams_max` like event streams; each tenant
/// sees only its own days; a bad date is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_streams_are_bounded_and_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.read.streams_max = 1;
    let server = Server::start_with(config).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 2).await;
    let path = format!("/v1/kloqo/clinics/c1/slots/stream?date={DATE}");
    c.get(&path, OTHER).await.expect_problem(403, "forbidden");
    c.send("GET", &path, None, None, None).await.expect_problem(401, "unauthenticated");
    c.get("/v1/kloqo/clinics/c1/slots/stream?date=2026-13-01", WEB).await.expect_problem(400, "invalid_request");

    let mut open = SlotsStream::start(&c.base, WEB, None).await;
    open.next().await;
    let refused = c.get(&path, ADMIN).await;
    refused.expect_problem(503, "too_many_streams");
    assert!(refused.header("retry-after").is_some());
    c.get("/v1/kloqo/events/stream", ADMIN).await.expect_problem(503, "too_many_streams");
    drop(open);
    // The permit goes with the stream (once the server notices the close).
    let _reopened = eventually("the closed stream's permit is freed", WAIT_MAX, async || {
        let response = SlotsStream::open(&c.base, &path, ADMIN, None).await;
        if response.status() == 200 { Ok(response) } else { Err(response.status()) }
    })
    .await;
    server.stop().await;
}

/// A day's history lists every change time travel can show, each in one line,
/// and `as_of` at each of them shows the day right after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_history_lists_its_changes_for_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    let booked = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect(201);
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "2026-03-09", 1, "other day")).await.expect(201);
    c.post("/v1/kloqo/calls", WEB, &json!({"campaign": "a", "to": "+14243242113"}).to_string()).await.expect(201);
    c.post(&format!("/v1/kloqo/bookings/{}/cancel", booked["booking_id"].as_str().unwrap()), WEB, r#"{"reason":"ill"}"#).await.expect(200);
    c.schedule("other", "c1", "d1", 4).await;

    let history = c.get(&format!("/v1/kloqo/clinics/c1/slots/history?date={DATE}"), WEB).await.expect(200);
    let changes = history["changes"].as_array().unwrap();
    let positions: Vec<u64> = changes.iter().map(|c| c["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, [1, 2, 5]);
    let summaries: Vec<&str> = changes.iter().map(|c| c["summary"].as_str().unwrap()).collect();
    assert_eq!(
        summaries,
        [
            "schedule of d1: 4 slots a day from 09:00, 15 min each",
            "d1 slot 1 (09:15) booked for Asha: token A001",
            "d1 slot 1 (09:15) freed: A001 for Asha cancelled (ill)"
        ]
    );
    assert_eq!(history["as_of"], 6, "read through the ledger's last position");
    assert!(history.get("next").is_none());
    let page = c.get(&format!("/v1/kloqo/clinics/c1/slots/history?date={DATE}&from=2&limit=1"), WEB).await.expect(200);
    assert_eq!((page["changes"][0]["position"].as_u64(), page["next"].as_u64()), (Some(2), Some(5)));
    let then = c.get(&format!("/v1/kloqo/clinics/c1/slots?date={DATE}&as_of=2"), WEB).await.expect(200);
    assert_eq!(slot(&then, "d1", 1)["patient"], "Asha", "as_of shows the patient too");
    c.get(&format!("/v1/kloqo/clinics/c1/slots/history?date={DATE}"), OTHER).await.expect_problem(403, "forbidden");
    c.get(&format!("/v1/kloqo/clinics/c1/slots/history?date={DATE}&limit=0"), WEB).await.expect_problem(400, "invalid_request");
    server.stop().await;
}

/// The dashboard is served from the binary, with a policy that keeps the page
/// to its own origin; anything else under `/ui/` is a 404 problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary_with_a_same_origin_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    let page = c.send("GET", "/ui/", None, None, None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").expect("a Content-Security-Policy").to_owned();
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{policy} lacks {directive}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("http"), "{policy}");
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains(r#"<script type="module" src="app.js">"#), "{html}");
    assert!(!html.contains("://"), "the page names no other origin");
    for (file, kind) in
        [("app.js", "text/javascript"), ("api.js", "text/javascript"), ("style.css", "text/css"), ("icon.svg", "image/svg+xml")]
    {
        let asset = c.send("GET", &format!("/ui/{file}"), None, None, None).await;
        assert_eq!(asset.status, 200, "{file}");
        assert!(asset.header("content-type").unwrap().starts_with(kind), "{file}");
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
    }
    c.send("GET", "/ui/secrets.txt", None, None, None).await.expect_problem(404, "not_found");
    let bare = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirect = bare.get(format!("{}/ui", c.base)).send().await.unwrap();
    assert_eq!((redirect.status().as_u16(), redirect.headers()["location"].to_str().unwrap()), (308, "/ui/"));
    server.stop().await;
}
