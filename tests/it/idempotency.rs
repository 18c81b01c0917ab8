//! Idempotency-Key: stored answers replayed byte for byte, refused for another
//! request, shared by concurrent repeats, kept across a restart.

use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Barrier;

use crate::support::{APP, Server, WEB, booking, config};

const DATE: &str = "2026-03-02";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_gets_the_stored_answer_byte_for_byte_and_executes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    let body = booking("c1", "d1", DATE, 1, "Asha");
    let first = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "onboarding-42").await;
    first.expect(201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let position = c.position().await;
    let repeat = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "onboarding-42").await;
    assert_eq!((repeat.status, &repeat.body), (201, &first.body));
    assert_eq!(repeat.header("idempotent-replayed"), Some("true"));
    assert_eq!(c.position().await, position);

    // Another request under the same key: refused, nothing executed.
    let other = booking("c1", "d1", DATE, 2, "Asha");
    c.post_keyed("/v1/kloqo/bookings", WEB, &other, "onboarding-42").await.expect_problem(422, "idempotency_key_reused");
    assert_eq!(c.position().await, position);
    // Keys are scoped to the token: another token's key is another key.
    let by_app = c.post_keyed("/v1/kloqo/bookings", APP, &other, "onboarding-42").await;
    by_app.expect(201);

    // Rejections from the writer are stored too, and stay what they were even
    // after the slot is freed.
    let taken = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "second-click").await;
    taken.expect_problem(409, "slot_taken");
    let id = first.json()["booking_id"].as_str().unwrap().to_owned();
    c.post(&format!("/v1/kloqo/bookings/{id}/cancel"), WEB, "{}").await.expect(200);
    let replayed = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "second-click").await;
    assert_eq!((replayed.status, &replayed.body), (409, &taken.body));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.header("content-type"), Some("application/problem+json"));

    // Requests refused before the writer (400) are not stored.
    let bad = c.post_keyed("/v1/kloqo/bookings", WEB, "{", "bad-first").await;
    bad.expect_problem(400, "invalid_request");
    c.post_keyed("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 3, "Ben"), "bad-first").await.expect(201);

    for key in ["", &"k".repeat(256), "has space", "tab\tkey", "ключ"] {
        let reply = c.send("POST", "/v1/kloqo/bookings", Some(WEB), Some(&body), Some(key)).await;
        reply.expect_problem(400, "invalid_idempotency_key");
    }
    c.post_keyed("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "2026-04-01", 0, "Max"), &"k".repeat(255)).await.expect(201);
    server.stop().await;
}

/// A double click times thirty: one booking, thirty identical answers, no 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_concurrent_repeats_make_one_booking() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    let position = c.position().await;
    let body = Arc::new(booking("c1", "d1", DATE, 1, "Asha"));
    let barrier = Arc::new(Barrier::new(30));
    let replies = join_all((0..30).map(|_| {
        let (c, body, barrier) = (c.clone(), body.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            c.post_keyed("/v1/kloqo/bookings", WEB, &body, "double-click").await
        })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(Result::unwrap).collect();
    for reply in &replies {
        assert_eq!((reply.status, &reply.body), (201, &replies[0].body));
    }
    let fresh = replies.iter().filter(|r| r.header("idempotent-replayed").is_none()).count();
    assert_eq!(fresh, 1, "exactly one request executed");
    assert_eq!(c.position().await, position + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_answers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = server.client.clone();
    c.schedule("kloqo", "c1", "d1", 4).await;
    let body = booking("c1", "d1", DATE, 1, "Asha");
    let created = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "k-created").await;
    let refused = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "k-refused").await;
    refused.expect_problem(409, "slot_taken");
    let id = created.json()["booking_id"].as_str().unwrap().to_owned();
    let cancel = format!("/v1/kloqo/bookings/{id}/cancel");
    let cancelled = c.post_keyed(&cancel, WEB, "{}", "k-cancel").await;
    let cancelled_again = c.post_keyed(&cancel, WEB, "{}", "k-cancel-again").await;
    server.stop().await;

    let server = Server::start(dir.path()).await;
    let c = &server.client;
    let position = c.position().await;
    for (path, body, key, first) in [
        ("/v1/kloqo/bookings", body.as_str(), "k-created", &created),
        ("/v1/kloqo/bookings", body.as_str(), "k-refused", &refused),
        (cancel.as_str(), "{}", "k-cancel", &cancelled),
        (cancel.as_str(), "{}", "k-cancel-again", &cancelled_again),
    ] {
        let replay = c.post_keyed(path, WEB, body, key).await;
        assert_eq!((replay.status, &replay.body), (first.status, &first.body), "{key}");
        assert_eq!(replay.header("idempotent-replayed"), Some("true"), "{key}");
    }
    assert_eq!(c.position().await, position, "replays after a restart execute nothing");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_to_the_tenant_and_every_writer_answer_is_stored() {
    use crate::support::ADMIN;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    // A keyed 404 stays a 404 for that key, even once the doctor exists.
    let body = booking("c1", "d1", DATE, 1, "Asha");
    let unknown = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "early").await;
    unknown.expect_problem(404, "unknown_doctor");
    c.schedule("kloqo", "c1", "d1", 4).await;
    c.schedule("other", "c1", "d1", 4).await;
    let replayed = c.post_keyed("/v1/kloqo/bookings", WEB, &body, "early").await;
    assert_eq!((replayed.status, &replayed.body), (404, &unknown.body));

    // The same admin key on two tenants is two keys: both execute.
    let kloqo = c.post_keyed("/v1/kloqo/bookings", ADMIN, &body, "shared").await.expect(201);
    let other = c.post_keyed("/v1/other/bookings", ADMIN, &body, "shared").await.expect(201);
    assert_ne!(kloqo["booking_id"], other["booking_id"]);

    // A refused reuse leaves the key's first answer in place.
    let first = c.post_keyed("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 2, "Ben"), "kept").await;
    first.expect(201);
    c.post_keyed("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 3, "Ben"), "kept")
        .await
        .expect_problem(422, "idempotency_key_reused");
    let again = c.post_keyed("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 2, "Ben"), "kept").await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    server.stop().await;
}

/// API.md: the table holds at most `idempotency_keys_max` keys; when it is full
/// a new key gets 503 `overloaded` with Retry-After, nothing is executed, and
/// the keys it holds are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_idempotency_table_refuses_new_keys_and_still_answers_the_stored_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.writer.idempotency_keys_max = 5;
    let server = Server::start_with(config).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 10).await;
    let mut first = Vec::new();
    for slot in 0..5 {
        let body = booking("c1", "d1", DATE, slot, "Asha");
        first.push((body.clone(), c.post_keyed("/v1/kloqo/bookings", WEB, &body, &format!("key-{slot}")).await));
        first.last().unwrap().1.expect(201);
    }
    let position = c.position().await;

    let full = c.post_keyed("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 5, "Ben"), "key-5").await;
    full.expect_problem(503, "overloaded");
    let retry_after: u64 = full.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(c.position().await, position, "nothing was executed");

    for (slot, (body, answer)) in first.iter().enumerate() {
        let repeat = c.post_keyed("/v1/kloqo/bookings", WEB, body, &format!("key-{slot}")).await;
        assert_eq!((repeat.status, &repeat.body), (201, &answer.body));
        assert_eq!(repeat.header("idempotent-replayed"), Some("true"));
    }
    // Without a key the table is not involved.
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 5, "Ben")).await.expect(201);
    let metrics = c.send("GET", "/metrics", None, None, None).await;
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(metrics.lines().any(|line| line == "ledger_idempotency_keys 5"), "{metrics}");
    server.stop().await;
}
