//! Restarting on the same data directory gives back everything acknowledged.

use crate::support::{Server, WEB, booking};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_same_projection_and_tokens_continue() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = server.client.clone();
    c.schedule("kloqo", "c1", "d1", 6).await;
    c.schedule("kloqo", "c1", "d2", 3).await;
    let mut bookings = Vec::new();
    for (doctor, slot) in [("d1", 0), ("d1", 1), ("d2", 2), ("d1", 5)] {
        bookings.push(c.post("/v1/kloqo/bookings", WEB, &booking("c1", doctor, "2026-03-02", slot, "p")).await.expect(201));
    }
    let walk_in = r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":3,"patient":"w","kind":"walk_in"}"#;
    c.post("/v1/kloqo/bookings", WEB, walk_in).await.expect(201);
    let cancelled = bookings[1]["booking_id"].as_str().unwrap().to_owned();
    c.post(&format!("/v1/kloqo/bookings/{cancelled}/cancel"), WEB, "{}").await.expect(200);
    let slots_before = c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02", WEB).await.expect(200);
    let position = c.position().await;
    server.stop().await;

    let server = Server::start(dir.path()).await;
    let c = &server.client;
    assert_eq!(c.position().await, position);
    assert_eq!(c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02", WEB).await.expect(200), slots_before);
    for before in &bookings {
        let id = before["booking_id"].as_str().unwrap();
        let after = c.get(&format!("/v1/kloqo/bookings/{id}"), WEB).await.expect(200);
        if id == cancelled {
            assert_eq!(after["status"], "cancelled");
        } else {
            assert_eq!(&after, before);
        }
    }
    // Tokens continue after the restart, and the cancelled A002 is not reissued.
    let next = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "2026-03-02", 1, "q")).await.expect(201);
    assert_eq!(next["token"], "A004");
    let next = c.post("/v1/kloqo/bookings", WEB, walk_in.replace("\"slot\":3", "\"slot\":4").as_str()).await.expect(201);
    assert_eq!(next["token"], "W002");
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "2026-03-02", 0, "r")).await.expect_problem(409, "slot_taken");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let config = crate::support::config(dir.path());
    let second =
        booking_ledger::cli::serve::serve(config, std::sync::Arc::new(booking_ledger::writer::SystemClock), async {}, |_| {}).await;
    let error = format!("{:#}", second.unwrap_err());
    assert!(error.contains("held by another ledger process"), "{error}");
    server.stop().await;
}
