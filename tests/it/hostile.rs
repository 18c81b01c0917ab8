//! API.md "Limits and hostile clients": a token over its rate gets 429, and
//! nothing is appended (the ledger's position is compared before and after).

use std::num::NonZeroU32;

use booking_ledger::http::auth::{Rate, Role, Token};

use crate::support::{Server, WEB, booking, config};

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
