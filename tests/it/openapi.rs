//! `proto/openapi.json` is the OpenAPI document generated from the code: this
//! test rewrites it and fails whenever the committed copy differs.

use booking_ledger::http::ApiDoc;
use utoipa::OpenApi;

use crate::support::Server;

fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap() + "\n"
}

#[test]
fn proto_openapi_json_is_the_generated_document() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/openapi.json");
    let generated = document();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        std::fs::write(&path, &generated).unwrap();
        panic!("proto/openapi.json differed from the code's document; it has been rewritten: review and commit it");
    }
    for route in [
        "/v1/{tenant}/clinics/{clinic}/doctors/{doctor}/schedule",
        "/v1/{tenant}/bookings",
        "/v1/{tenant}/bookings/{booking_id}",
        "/v1/{tenant}/bookings/{booking_id}/cancel",
        "/v1/{tenant}/clinics/{clinic}/slots",
        "/v1/{tenant}/clinics/{clinic}/slots/stream",
        "/v1/{tenant}/clinics/{clinic}/slots/history",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(generated.contains(&format!("\"{route}\"")), "the document lacks {route}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_same_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let served = server.client.send("GET", "/openapi.json", None, None, None).await.expect(200);
    assert_eq!(served, serde_json::from_str::<serde_json::Value>(&document()).unwrap());
    server.stop().await;
}
