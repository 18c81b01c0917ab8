//! Forensics over HTTP and the offline commands: provenance, the event stream,
//! time travel, the rejection journal, tenant isolation.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{ADMIN, KLOQO_ADMIN, OTHER, Server, WEB, booking};

const DATE: &str = "2026-03-02";

fn ledger(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger")).args(args).arg("--data").arg(dir).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Actor, correlation id and idempotency key go from the request into the
/// ledger, and come back out of `GET /events` and `ledger export`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_round_trips_to_events_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    let http = reqwest::Client::new();
    let booked = http
        .post(format!("{}/v1/kloqo/bookings", c.base))
        .bearer_auth(WEB)
        .header("X-Request-Id", "onboarding-call-687")
        .header("Idempotency-Key", "click-1")
        .header("content-type", "application/json")
        .body(booking("c1", "d1", DATE, 1, "Asha"))
        .send()
        .await
        .unwrap();
    assert_eq!(booked.headers()["x-request-id"], "onboarding-call-687", "the request id is echoed");
    let booked: Value = booked.json().await.unwrap();

    c.get("/v1/kloqo/events", WEB).await.expect_problem(403, "forbidden");
    let events = c.get("/v1/kloqo/events?from=1&limit=10", ADMIN).await.expect(200);
    let event = &events["events"][1];
    assert_eq!(event["position"], booked["position"]);
    assert_eq!((event["type"].as_str(), event["actor"].as_str()), (Some("booking_created"), Some("kloqo-web")));
    assert_eq!((event["correlation_id"].as_str(), event["idempotency_key"].as_str()), (Some("onboarding-call-687"), Some("click-1")));
    assert_eq!(event["data"]["booking_id"], booked["booking_id"]);
    assert_eq!(event["recorded_at"], booked["created_at"]);
    assert_eq!(events["next"], 3);
    server.stop().await;

    let (code, stdout, stderr) = ledger(&["export"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let exported: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(exported.len(), 2);
    let mut expected = event.clone();
    expected["tenant"] = json!("kloqo");
    assert_eq!(exported[1], expected, "export prints what GET /events printed, with the tenant");
    let (code, stdout, _) = ledger(&["replay", "--tenant", "kloqo", "--from", "2"], dir.path());
    assert_eq!(code, 0);
    assert!(stdout.contains("kloqo/kloqo-web") && stdout.contains("token A001"), "{stdout}");
}

/// Reads the SSE stream until `count` events arrived; returns their (id, type).
async fn read_stream(base: &str, from: Option<u64>, last_event_id: Option<u64>, count: usize) -> Vec<(u64, String)> {
    let mut request =
        reqwest::Client::new().get(format!("{base}/v1/kloqo/events/stream{}", from.map(|f| format!("?from={f}")).unwrap_or_default()));
    request = request.bearer_auth(ADMIN);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (mut seen, mut buffer, mut id) = (Vec::new(), String::new(), None);
    while seen.len() < count {
        let chunk = response.chunk().await.unwrap().expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.trim().parse::<u64>().unwrap());
            } else if let Some(kind) = line.strip_prefix("event: ") {
                seen.push((id.take().expect("id before event"), kind.trim().to_owned()));
            }
        }
    }
    seen.truncate(count);
    seen
}

/// A client reads 10 events, goes away, and comes back with Last-Event-ID
/// while bookings keep arriving: every later event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_event_stream_resumes_after_last_event_id_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = server.client.clone();
    c.schedule("kloqo", "c1", "d1", 200).await;
    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (c, writing) = (c.clone(), writing.clone());
        async move {
            for slot in 0..120 {
                c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, slot, "p")).await.expect(201);
                // Another tenant's events are not in kloqo's stream.
                c.post("/v1/other/bookings", OTHER, &booking("c1", "d1", DATE, slot, "p")).await;
            }
            writing.store(false, Ordering::Release);
        }
    });
    let first = read_stream(&c.base, Some(1), None, 10).await;
    assert_eq!(first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(first[0].1, "schedule_set");
    let resume_after = first.last().unwrap().0;
    let second = read_stream(&c.base, None, Some(resume_after), 111).await;
    writer.await.unwrap();
    assert!(!writing.load(Ordering::Acquire));
    let ids: Vec<u64> = second.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (11..=121).collect::<Vec<_>>(), "every later event exactly once, in order");
    assert!(second.iter().all(|(_, kind)| kind == "booking_created"));
    c.get("/v1/kloqo/events/stream", WEB).await.expect_problem(403, "forbidden");
    server.stop().await;
}

/// `Last-Event-ID` is the last position a client saw; after `u64::MAX` there
/// is no position, so it is refused 400, never wrapped round to position 1
/// (which would replay the whole ledger to a client that has seen it all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_event_id_of_u64_max_is_400_not_a_replay_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 2).await;
    let resume = async |id: u64| {
        let url = format!("{}/v1/kloqo/events/stream", c.base);
        reqwest::Client::new().get(url).bearer_auth(ADMIN).header("Last-Event-ID", id.to_string()).send().await.unwrap()
    };
    let response = resume(u64::MAX).await;
    // Checked before the body is read: an accepted stream's body never ends.
    assert_eq!(response.status(), 400, "a stream resumed after u64::MAX was accepted");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let refused = crate::support::Reply { status, headers, body: response.bytes().await.unwrap().to_vec() };
    assert_eq!(refused.expect_problem(400, "invalid_request")["field"], "Last-Event-ID");
    // One less is a position still to come: the stream opens and waits for it.
    let waiting = resume(u64::MAX - 1).await;
    assert_eq!(waiting.status(), 200);
    drop(waiting);
    server.stop().await;
}

/// `as_of` at every position of a small history equals what the slots were
/// right after that position was reached (read then from the live projection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_at_every_position_matches_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    let slots = |clinic: &'static str| format!("/v1/kloqo/clinics/{clinic}/slots?date={DATE}");
    let mut seen: BTreeMap<u64, (Value, Value)> = BTreeMap::new();
    let mut record = async |c: &crate::support::Client| {
        let position = c.position().await;
        let views = (c.get(&slots("c1"), WEB).await.expect(200), c.get(&slots("c2"), WEB).await.expect(200));
        seen.insert(position, views);
    };
    record(c).await;
    c.schedule("kloqo", "c1", "d1", 3).await;
    record(c).await;
    c.schedule("kloqo", "c2", "d9", 2).await;
    record(c).await;
    let mut ids = Vec::new();
    for (clinic, doctor, slot) in [("c1", "d1", 0), ("c2", "d9", 1), ("c1", "d1", 2), ("c1", "d1", 0)] {
        let reply = c.post("/v1/kloqo/bookings", WEB, &booking(clinic, doctor, DATE, slot, "p")).await;
        if reply.status == 201 {
            ids.push(reply.json()["booking_id"].as_str().unwrap().to_owned());
        }
        record(c).await;
    }
    c.post(&format!("/v1/kloqo/bookings/{}/cancel", ids[0]), WEB, "{}").await.expect(200);
    record(c).await;
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 0, "q")).await.expect(201);
    record(c).await;
    c.schedule("kloqo", "c1", "d2", 1).await;
    record(c).await;
    let last = c.position().await;
    for position in 1..=last {
        let (c1, c2) = seen.range(..=position).next_back().map(|(_, views)| views.clone()).unwrap();
        for (clinic, mut expected) in [("c1", c1), ("c2", c2)] {
            let then = c.get(&format!("{}&as_of={position}", slots(clinic)), WEB).await.expect(200);
            expected["as_of"] = json!(position);
            assert_eq!(then, expected, "{clinic} as of {position}");
        }
    }
    server.stop().await;
    // The offline command agrees.
    let (code, stdout, stderr) = ledger(&["slots", "--tenant", "kloqo", "--clinic", "c1", "--date", DATE, "--as-of", "4"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.contains("booked")).count(), 1, "{stdout}");
}

/// Refused commands are journaled with who sent them and what they hit; the
/// journal is per tenant, admin only, and survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_are_journaled_and_tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = server.client.clone();
    c.schedule("kloqo", "c1", "d1", 2).await;
    c.schedule("other", "c1", "d1", 2).await;
    let held = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect(201);
    for _ in 0..3 {
        c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Ben")).await.expect_problem(409, "slot_taken");
    }
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 7, "Ben")).await.expect_problem(422, "slot_out_of_range");
    c.post("/v1/other/bookings", OTHER, &booking("c1", "d1", DATE, 9, "Oz")).await.expect_problem(422, "slot_out_of_range");
    // The journal is written asynchronously: wait until it has them.
    let journal = async |c: &crate::support::Client, token: &str| {
        eventually("the four rejections are journaled", WAIT_MAX, async || {
            let page = c.get("/v1/kloqo/rejections?limit=100", token).await.expect(200);
            if page["rejections"].as_array().unwrap().len() >= 4 { Ok(page) } else { Err(page) }
        })
        .await
    };
    let page = journal(&c, ADMIN).await;
    let rejections = page["rejections"].as_array().unwrap();
    assert_eq!(rejections.len(), 4, "only kloqo's: {page}");
    let conflict = format!("booking:{}", held["booking_id"].as_str().unwrap());
    assert!(
        rejections[..3].iter().all(|r| r["code"] == "slot_taken" && r["conflicts_with"] == conflict.as_str() && r["actor"] == "kloqo-web")
    );
    assert_eq!(
        rejections[0]["command"],
        json!({"method": "POST", "path": "/v1/kloqo/bookings", "body": {"clinic":"c1","doctor":"d1","date":DATE,"slot":1,"patient":"Ben"}})
    );
    assert_eq!(rejections[3]["code"], "slot_out_of_range");
    c.get("/v1/kloqo/rejections", WEB).await.expect_problem(403, "forbidden");

    // An admin token scoped to kloqo sees kloqo, and nothing of other.
    assert_eq!(journal(&c, KLOQO_ADMIN).await["rejections"], page["rejections"]);
    for path in
        ["/v1/other/events", "/v1/other/rejections", "/v1/other/events/stream", "/v1/other/clinics/c1/slots?date=2026-03-02&as_of=1"]
    {
        c.get(path, KLOQO_ADMIN).await.expect_problem(403, "forbidden");
    }
    let events = c.get("/v1/kloqo/events?limit=1000", KLOQO_ADMIN).await.expect(200);
    assert!(events["events"].as_array().unwrap().iter().all(|e| e["data"]["patient"] != "Oz" && e["actor"] != "other-web"));
    server.stop().await;

    let server = Server::start(dir.path()).await;
    assert_eq!(server.client.get("/v1/kloqo/rejections?limit=100", ADMIN).await.expect(200)["rejections"], page["rejections"]);
    let from_3 = server.client.get("/v1/kloqo/rejections?from=3&limit=1", ADMIN).await.expect(200);
    assert_eq!((from_3["rejections"][0]["seq"].as_u64(), from_3["next"].as_u64()), (Some(3), Some(4)));
    server.client.get("/v1/kloqo/rejections?limit=0", ADMIN).await.expect_problem(400, "invalid_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_refuse_a_directory_a_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    for command in [&["replay"][..], &["export"], &["slots", "--tenant", "t", "--clinic", "c", "--date", DATE]] {
        let (code, _, stderr) = ledger(command, dir.path());
        assert_ne!(code, 0, "{command:?}");
        assert!(stderr.contains("held by another ledger process"), "{command:?}: {stderr}");
    }
    server.stop().await;
}

/// A ledger written past the core (two active bookings of one slot): the
/// server will not take commands on it, but serves the audit that names both
/// positions, and the events that show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_duplicate_booking_is_reported_by_the_audit_over_http() {
    use crate::support::{forge, forged_booking, forged_event};
    use booking_ledger::core::{EventKind, Schedule};
    let dir = tempfile::tempdir().unwrap();
    let schedule = Schedule { slots_per_day: 10, first_slot_minute: None, slot_minutes: None };
    forge(
        dir.path(),
        &[
            forged_event(1, EventKind::ScheduleSet { clinic: "c1".into(), doctor: "d1".into(), schedule }),
            forged_event(2, forged_booking(uuid::Uuid::from_u128(1), 1)),
            forged_event(3, forged_booking(uuid::Uuid::from_u128(2), 2)),
        ],
    );

    let server = Server::start_listening(crate::support::config(dir.path()), Arc::new(booking_ledger::writer::SystemClock)).await;
    let c = &server.client;
    let audit = eventually("the audit is served", WAIT_MAX, async || {
        let reply = c.get("/v1/kloqo/audit", ADMIN).await;
        if reply.status == 200 { Ok(reply.json()) } else { Err(reply) }
    })
    .await;
    assert_eq!(audit["checked_events"], 3);
    let violations = audit["violations"].as_array().unwrap();
    assert!(violations.iter().any(|v| v["rule"] == "one_active_booking_per_slot" && v["positions"] == json!([2, 3])), "{audit}");
    assert_eq!(c.get("/v1/kloqo/events", ADMIN).await.expect(200)["events"].as_array().unwrap().len(), 3);
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 6, "q")).await.expect_problem(503, "unavailable");
    assert_eq!(c.send("GET", "/readyz", None, None, None).await.status, 503);
    c.get("/v1/kloqo/audit", WEB).await.expect_problem(403, "forbidden");
    // Another tenant's audit sees none of it.
    assert_eq!(c.get("/v1/other/audit", ADMIN).await.expect(200), json!({"checked_events": 0, "violations": []}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_written_through_the_server_audits_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 3).await;
    let first = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 0, "a")).await.expect(201);
    c.post(&format!("/v1/kloqo/bookings/{}/cancel", first["booking_id"].as_str().unwrap()), WEB, "{}").await.expect(200);
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 0, "b")).await.expect(201);
    c.post("/v1/kloqo/calls", WEB, &json!({"campaign": "a", "to": "+14243242113"}).to_string()).await.expect(201);
    c.post("/v1/kloqo/calls", WEB, &json!({"campaign": "a", "to": "+14243242113"}).to_string())
        .await
        .expect_problem(409, "call_in_progress");
    assert_eq!(c.get("/v1/kloqo/audit", KLOQO_ADMIN).await.expect(200), json!({"checked_events": 6, "violations": []}));
    server.stop().await;
}
