//! API.md "Limits and hostile clients": a flood beyond what the server answers
//! at once is shed with 503, a token over its rate gets 429, and hostile
//! bodies, keys and names get a clear 4xx. Every refusal appends nothing: the
//! ledger's position is compared before and after.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use booking_ledger::http::auth::{Rate, Role, Token};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Reply, Server, WEB, booking, config};

/// A request spoken over a raw socket, so that its path reaches the server
/// byte for byte (an HTTP client library resolves `..` and `%2E%2E` itself).
async fn raw(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: ledger\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&body);
    stream.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await.expect("the server answers").unwrap();
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
    let head = String::from_utf8(answer[..end].to_vec()).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut map = HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            map.append(HeaderName::from_bytes(name.trim().as_bytes()).unwrap(), HeaderValue::from_str(value.trim()).unwrap());
        }
    }
    Reply { status, headers: map, body: answer[end..].to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_requests_in_flight_max_is_shed_with_503_and_admitted_requests_keep_a_bounded_latency() {
    const FLOOD: u32 = 600;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.connections.requests_in_flight_max = 8;
    let server = Server::start_with(config).await;
    server.client.schedule("kloqo", "kochi", "rao", 1000).await;
    let before = server.client.position().await;

    let replies = futures::future::join_all((0..FLOOD).map(|i| {
        let client = server.client.clone();
        async move {
            let started = Instant::now();
            let date = format!("2026-03-{:02}", 1 + i / 1000);
            let reply = client.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &date, i % 1000 + 1, "Asha")).await;
            (reply, started.elapsed())
        }
    }))
    .await;

    let mut admitted = Vec::new();
    let mut shed = 0;
    for (reply, took) in &replies {
        match reply.status {
            201 => admitted.push(*took),
            503 => {
                reply.expect_problem(503, "overloaded");
                assert_eq!(reply.header("retry-after"), Some("1"));
                shed += 1;
            }
            other => panic!("a flooded booking got {other}: {}", String::from_utf8_lossy(&reply.body)),
        }
    }
    admitted.sort();
    let p99 = admitted.get(admitted.len() * 99 / 100).copied().unwrap_or_default();
    println!("flood of {FLOOD} at requests_in_flight_max 8: {} admitted (p99 {p99:?}), {shed} shed with 503", admitted.len());
    assert!(shed > 0, "a flood of {FLOOD} bookings at once beyond 8 in flight was never shed");
    assert!(!admitted.is_empty(), "some bookings get through");
    assert_eq!(server.client.position().await, before + admitted.len() as u64, "a shed booking appended something");
    // Probes are never shed, and the server serves again once the flood is over.
    server.client.send("GET", "/healthz", None, None, None).await.expect(200);
    server.client.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", "2026-04-01", 1, "Ravi")).await.expect(201);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_nothing_is_appended() {
    const LIMITED: &str = "limited-secret-00000000";
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let rate = Rate { per_sec: NonZeroU32::new(1).unwrap(), burst: NonZeroU32::new(3).unwrap() };
    config
        .tokens
        .push((LIMITED.into(), Token { name: "limited".into(), tenants: vec!["kloqo".into()], role: Role::Client, rate: Some(rate) }));
    let server = Server::start_with(config).await;
    server.client.schedule("kloqo", "kochi", "rao", 100).await;
    for slot in 1..=3 {
        server.client.post("/v1/kloqo/bookings", LIMITED, &booking("kochi", "rao", "2026-03-02", slot, "Asha")).await.expect(201);
    }
    let before = server.client.position().await;
    let refused = server.client.post("/v1/kloqo/bookings", LIMITED, &booking("kochi", "rao", "2026-03-02", 4, "Asha")).await;
    refused.expect_problem(429, "rate_limited");
    let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(server.client.position().await, before, "a rate-limited booking appended something");
    // Other tokens are not held back by it.
    server.client.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", "2026-03-02", 5, "Ravi")).await.expect(201);
    server.stop().await;
}

/// What is sent (named, path, headers, body) and the status and code it must get.
type Case = (&'static str, String, Vec<(&'static str, String)>, Vec<u8>, u16, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_keys_and_names_are_clear_4xx_problems_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let base = server.client.base.clone();
    server.client.schedule("kloqo", "kochi", "rao", 100).await;
    let before = server.client.position().await;
    let json = [("authorization", &*format!("Bearer {WEB}")), ("content-type", "application/json")];
    let good = booking("kochi", "rao", "2026-03-02", 1, "Asha");

    let mut cases: Vec<Case> = Vec::new();
    let post = |path: &str| path.to_owned();
    let headers = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        json.iter().map(|(n, v)| (*n, v.to_string())).chain(extra.iter().map(|(n, v)| (*n, v.to_string()))).collect()
    };
    // Deeply nested JSON: serde_json's recursion limit (128), not a stack overflow.
    cases.push(("nested", post("/v1/kloqo/bookings"), headers(&[]), "[".repeat(60_000).into_bytes(), 400, "invalid_request"));
    let nested_object = format!("{}{}", r#"{"clinic":"#.repeat(5_000), "1");
    cases.push(("nested objects", post("/v1/kloqo/bookings"), headers(&[]), nested_object.into_bytes(), 400, "invalid_request"));
    // Invalid UTF-8 inside a string.
    let mut invalid = br#"{"clinic":"kochi","doctor":"rao","date":"2026-03-02","slot":1,"patient":"A"#.to_vec();
    invalid.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    cases.push(("invalid utf-8", post("/v1/kloqo/bookings"), headers(&[]), invalid, 400, "invalid_request"));
    // Huge numbers.
    for slot in ["1e400", "99999999999999999999999999", "-1", "1.5", &"9".repeat(10_000)] {
        let body = format!(r#"{{"clinic":"kochi","doctor":"rao","date":"2026-03-02","slot":{slot},"patient":"Asha"}}"#);
        cases.push(("huge number", post("/v1/kloqo/bookings"), headers(&[]), body.into_bytes(), 400, "invalid_request"));
    }
    let schedule = r#"{"slots_per_day":1e10}"#.as_bytes().to_vec();
    cases.push((
        "huge slots_per_day",
        post("/v1/kloqo/clinics/kochi/doctors/rao/schedule"),
        headers(&[]),
        schedule,
        400,
        "invalid_request",
    ));
    // Oversized and invisible idempotency keys.
    let long_key = "k".repeat(256);
    cases.push((
        "long key",
        post("/v1/kloqo/bookings"),
        headers(&[("idempotency-key", &long_key)]),
        good.clone().into_bytes(),
        400,
        "invalid_idempotency_key",
    ));
    cases.push((
        "key with a space",
        post("/v1/kloqo/bookings"),
        headers(&[("idempotency-key", "a b")]),
        good.clone().into_bytes(),
        400,
        "invalid_idempotency_key",
    ));
    // A body that is not sent as JSON.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let mut sent = headers(&[]);
        sent[1].1 = content_type.to_owned();
        cases.push(("not json", post("/v1/kloqo/bookings"), sent, good.clone().into_bytes(), 415, "unsupported_media_type"));
    }
    cases.push((
        "no content type",
        post("/v1/kloqo/bookings"),
        headers(&[])[..1].to_vec(),
        good.clone().into_bytes(),
        415,
        "unsupported_media_type",
    ));
    // Path tricks in tenant and clinic names.
    let schedule = br#"{"slots_per_day":10}"#.to_vec();
    for (path, status, code) in [
        ("/v1/../kloqo/clinics/kochi/doctors/rao/schedule", 404, "not_found"),
        ("/v1/../clinics/kochi/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/%2E%2E/clinics/kochi/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo%2Fother/clinics/kochi/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kl%C3%B6qo/clinics/kochi/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/KLOQO/clinics/kochi/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/../doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/%2E%2E/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/a%2Fb/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/a%5Cb/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/%E2%80%8B/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/ko%E2%80%AEchi/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/ko%00chi/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/clinics/%FF/doctors/rao/schedule", 400, "invalid_request"),
        ("/v1/kloqo/businesses/..%2F..%2Fetc/phone-number/claim", 400, "invalid_request"),
    ] {
        cases.push(("path trick", path.to_owned(), headers(&[]), schedule.clone(), status, code));
    }

    for (what, path, headers, body, status, code) in cases {
        let method = if path.ends_with("/schedule") { "PUT" } else { "POST" };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = raw(&base, method, &path, &headers, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code.to_owned()),
            "{what}: {method} {path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{what}");
        let detail = reply.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty() && detail.len() < 1000, "{what}: detail {detail:?}");
    }
    assert_eq!(server.client.position().await, before, "a hostile request appended something");
    // An empty body needs no Content-Type: cancel with no reason.
    let booked = server.client.post("/v1/kloqo/bookings", WEB, &good).await.expect(201);
    let cancel = format!("/v1/kloqo/bookings/{}/cancel", booked["booking_id"].as_str().unwrap());
    let reply = raw(&base, "POST", &cancel, &json[..1], Vec::new()).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let _: Value = reply.json();
    server.stop().await;
}
