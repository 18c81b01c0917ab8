//! Real concurrency over real HTTP: many clients, one slot, one winner.

use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Barrier;

use crate::support::{Server, WEB, booking};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_one_slot_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 10).await;
    let barrier = Arc::new(Barrier::new(200));
    let replies = join_all((0..200).map(|i| {
        let (c, barrier) = (c.clone(), barrier.clone());
        tokio::spawn(async move {
            let body = booking("c1", "d1", "2026-03-02", 5, &format!("patient {i}"));
            barrier.wait().await;
            c.post("/v1/kloqo/bookings", WEB, &body).await
        })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(Result::unwrap).collect();
    let winners: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one 201");
    let winner = winners[0].json();
    assert_eq!(winner["token"], "A001");
    for loser in replies.iter().filter(|r| r.status != 201) {
        let problem = loser.expect_problem(409, "slot_taken");
        assert_eq!(problem["booking_id"], winner["booking_id"], "every loser is told who holds the slot");
    }
    assert_eq!(c.position().await, 2, "one schedule, one booking: the losers appended nothing");
    let slots = c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02", WEB).await.expect(200);
    assert_eq!(slots["doctors"][0]["slots"][5]["booking_id"], winner["booking_id"]);
    server.stop().await;
}

/// Concurrent bookings of many slots: tokens stay sequential and unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_bookings_get_sequential_unique_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 100).await;
    let replies = join_all((0..100).map(|slot| {
        let c = c.clone();
        tokio::spawn(async move { c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "2026-03-02", slot, "p")).await })
    }))
    .await;
    let mut tokens: Vec<String> = replies.into_iter().map(|r| r.unwrap().expect(201)["token"].as_str().unwrap().to_owned()).collect();
    tokens.sort();
    let expected: Vec<String> = (1..=100).map(|n| format!("A{n:03}")).collect();
    assert_eq!(tokens, expected);
    server.stop().await;
}
