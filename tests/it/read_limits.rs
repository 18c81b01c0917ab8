//! API.md "Limits and hostile clients", reads: live streams beyond
//! `streams_max` get 503 `too_many_streams` and log scans beyond `scans_max`
//! 503 `busy`, each with Retry-After, and a freed place is taken again; `as_of`
//! reads one clinic day, right whatever the clinic's history on other days.
//! (Connections, 408, 431: limits.rs; idempotency keys: idempotency.rs;
//! doctors per clinic: clinics.rs.)

use std::collections::BTreeMap;

use booking_ledger::http::ReadLimits;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{ADMIN, Reply, Server, WEB, assemble, booking, config};

const DATE: &str = "2026-03-02";

/// Opens the tenant's live event stream; the response is returned unread, as
/// a stream's body does not end.
async fn open_stream(base: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("{base}/v1/kloqo/events/stream")).bearer_auth(ADMIN).send().await.unwrap()
}

/// A refused stream's answer, read whole.
async fn refused(response: reqwest::Response) -> Reply {
    assert_ne!(response.status(), 200, "the stream was accepted");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    Reply { status, headers, body: response.bytes().await.unwrap().to_vec() }
}

#[track_caller]
fn assert_retry_after(reply: &Reply) {
    let seconds = reply.header("retry-after").and_then(|s| s.parse::<u64>().ok());
    assert!(seconds.is_some_and(|s| s >= 1), "Retry-After in seconds: {:?}", reply.headers);
}

/// Two streams open with `streams_max = 2`: the third is refused; once one
/// closes its place is free again, and only its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_beyond_streams_max_is_refused_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.read.streams_max = 2;
    let server = Server::start_with(config).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 2).await;
    let (first, second) = (open_stream(&c.base).await, open_stream(&c.base).await);
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));

    let third = refused(open_stream(&c.base).await).await;
    third.expect_problem(503, "too_many_streams");
    assert_retry_after(&third);

    // The server frees the place when it sees the connection close.
    drop(first);
    let reopened = eventually("a closed stream frees its place", WAIT_MAX, async || {
        let response = open_stream(&c.base).await;
        if response.status() == 200 {
            return Ok(response);
        }
        let reply = refused(response).await;
        reply.expect_problem(503, "too_many_streams");
        Err(reply)
    })
    .await;
    // Two are open again: the next one is refused.
    refused(open_stream(&c.base).await).await.expect_problem(503, "too_many_streams");
    drop((second, reopened));
    server.stop().await;
}

/// With `scans_max = 1` and the one permit held (as a long scan would hold
/// it), every read that scans the log is refused 503 `busy`; reads that do
/// not scan, and live streams, are not held up. Released, each scan runs,
/// and gives its permit back (each runs twice in a row).
///
/// The permit is taken through the server's state rather than by a scan kept
/// running, which only a timing could arrange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_beyond_scans_max_is_refused_busy_until_the_permit_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let server = assemble(dir.path(), &dir.path().join("ledger"), ReadLimits { scans_max: 1, ..ReadLimits::default() }).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 2).await;
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 0, "Asha")).await.expect(201);
    let slots = format!("/v1/kloqo/clinics/c1/slots?date={DATE}");
    let as_of = format!("{slots}&as_of=1");
    let scans = ["/v1/kloqo/events", "/v1/kloqo/rejections", "/v1/kloqo/audit", as_of.as_str()];

    let held = server.state.scans.clone().try_acquire_owned().expect("the one permit is free");
    for path in scans {
        let reply = c.get(path, ADMIN).await;
        reply.expect_problem(503, "busy");
        assert_retry_after(&reply);
    }
    assert_eq!(c.get(&slots, WEB).await.expect(200)["doctors"][0]["slots"][0]["state"], "booked", "the current day is no scan");
    let stream = open_stream(&c.base).await;
    assert_eq!(stream.status(), 200, "a live stream is no scan");
    drop(stream);

    drop(held);
    for path in scans.iter().chain(&scans) {
        c.get(path, ADMIN).await.expect(200);
    }
    assert_eq!(c.get(&as_of, ADMIN).await.expect(200)["doctors"][0]["slots"][0]["state"], "free");
}

/// A clinic whose doctor is booked and cancelled 1,500 times on 1,500 other
/// days (3,000 records), in bursts between six changes to one day: `as_of`
/// that day, at each change and in the middle and at the end of each burst,
/// is the day exactly as the live projection showed it right after the last
/// change before. The day-scoped index neither misses the day's records among
/// the others nor lets theirs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_one_day_is_right_among_a_long_history_of_other_days() {
    /// A change to the day: book a slot, or cancel the nth booking made.
    enum Change {
        Book(u32),
        Cancel(usize),
    }
    const CHANGES: [Change; 6] = [Change::Book(0), Change::Book(1), Change::Cancel(0), Change::Book(0), Change::Book(3), Change::Cancel(1)];
    const BURSTS: usize = CHANGES.len();
    const DAYS_PER_BURST: usize = 250;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    let day = format!("/v1/kloqo/clinics/c1/slots?date={DATE}");
    // The day as the live projection shows it, by the position it stands at.
    let mut seen: BTreeMap<u64, Value> = BTreeMap::new();
    let mut record = async |c: &crate::support::Client| {
        let view = c.get(&day, WEB).await.expect(200);
        seen.insert(view["as_of"].as_u64().unwrap(), view);
    };
    record(c).await;
    let first_other_day = chrono::NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
    let mut ids: Vec<String> = Vec::new();
    let mut burst_ends = Vec::new();
    for (burst, change) in CHANGES.iter().enumerate() {
        // Other days: each booked and cancelled, many at once (one writer batch for several).
        join_all((0..DAYS_PER_BURST).map(|i| {
            let date = first_other_day + chrono::Days::new((burst * DAYS_PER_BURST + i) as u64);
            async move {
                let body = booking("c1", "d1", &date.format("%Y-%m-%d").to_string(), (i % 4) as u32, "other");
                let booked = c.post("/v1/kloqo/bookings", WEB, &body).await.expect(201);
                let cancel = format!("/v1/kloqo/bookings/{}/cancel", booked["booking_id"].as_str().unwrap());
                c.post(&cancel, WEB, "{}").await.expect(200);
            }
        }))
        .await;
        burst_ends.push(c.position().await);
        // Then one change to the day.
        match *change {
            Change::Book(slot) => {
                let booked = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, slot, "p")).await.expect(201);
                ids.push(booked["booking_id"].as_str().unwrap().to_owned());
            }
            Change::Cancel(nth) => {
                c.post(&format!("/v1/kloqo/bookings/{}/cancel", ids[nth]), WEB, "{}").await.expect(200);
            }
        }
        record(c).await;
    }
    let last = c.position().await;
    assert_eq!(last, 1 + (BURSTS * DAYS_PER_BURST * 2) as u64 + BURSTS as u64, "every command appended its event");
    assert_eq!(seen.len(), BURSTS + 1, "each change moved the day to a new position");
    let booked = |view: &Value| -> Vec<u64> {
        let slots = view["doctors"][0]["slots"].as_array().unwrap();
        slots.iter().filter(|s| s["state"] == "booked").map(|s| s["slot"].as_u64().unwrap()).collect()
    };
    assert_eq!(booked(seen.values().last().unwrap()), vec![0, 3], "the day ends with slots 0 and 3 booked");

    // Each change, the end of each burst, and the middle of each burst (where
    // other days' bookings are still active).
    let starts = seen.keys().copied().collect::<Vec<_>>();
    let middles = starts.iter().zip(&burst_ends).map(|(start, end)| (start + end) / 2).collect::<Vec<_>>();
    let positions = starts.into_iter().chain(burst_ends).chain(middles).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(positions.len(), 3 * BURSTS + 1);
    for position in positions {
        let (_, view) = seen.range(..=position).next_back().unwrap();
        let mut expected = view.clone();
        expected["as_of"] = json!(position);
        let then = c.get(&format!("{day}&as_of={position}"), WEB).await.expect(200);
        assert_eq!(then, expected, "the day as of {position}");
    }
    server.stop().await;
}
