//! A browser frontend on another origin (`[server] cors_origins`): preflights
//! answered for listed origins, answers readable by them only, the
//! dashboard's own Content-Security-Policy untouched; off by default.

use crate::support::{ADMIN, Server, config};

const APP: &str = "https://app.example";

async fn server_with_cors(dir: &std::path::Path) -> Server {
    let mut settings = config(dir);
    settings.cors_origins = vec![APP.parse().unwrap()];
    Server::start_with(settings).await
}

fn preflight(origin: &str) -> [(&str, &str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization,content-type,idempotency-key"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_gets_its_preflight_and_can_read_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_cors(dir.path()).await;
    let client = &server.client;

    let answer = client.send_with_headers("OPTIONS", "/v1/kloqo/bookings", &preflight(APP), None).await;
    assert_eq!(answer.status, 204, "{:?}", answer.headers);
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
    let methods = answer.header("access-control-allow-methods").unwrap().to_ascii_lowercase();
    assert!(["get", "post", "put"].iter().all(|m| methods.contains(m)), "{methods}");
    let headers = answer.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
    for name in ["authorization", "content-type", "idempotency-key", "last-event-id"] {
        assert!(headers.contains(name), "{name} not allowed: {headers}");
    }

    let authorization = format!("Bearer {ADMIN}");
    let read = client.send_with_headers("GET", "/v1/kloqo/campaigns", &[("authorization", &authorization), ("origin", APP)], None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("access-control-allow-origin"), Some(APP));
    let exposed = read.header("access-control-expose-headers").unwrap().to_ascii_lowercase();
    for name in ["idempotent-replayed", "x-request-id", "retry-after", "ledger-node"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    // A refusal is readable too (the page shows the problem).
    let refused = client.send_with_headers("GET", "/v1/kloqo/campaigns", &[("origin", APP)], None).await;
    assert_eq!((refused.status, refused.header("access-control-allow-origin")), (401, Some(APP)));

    // Another origin: no CORS header at all, so its browser refuses the answer.
    let other = "https://evil.example";
    let answer = client.send_with_headers("OPTIONS", "/v1/kloqo/bookings", &preflight(other), None).await;
    assert_eq!(answer.header("access-control-allow-origin"), None);
    assert_ne!(answer.status, 204);
    let read = client.send_with_headers("GET", "/v1/kloqo/campaigns", &[("authorization", &authorization), ("origin", other)], None).await;
    assert_eq!((read.status, read.header("access-control-allow-origin")), (200, None));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_the_dashboard_keeps_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let answer = server.client.send_with_headers("OPTIONS", "/v1/kloqo/bookings", &preflight(APP), None).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    let page = server.client.send_with_headers("GET", "/ui/", &[("origin", APP)], None).await;
    let policy = page.header("content-security-policy").expect("the dashboard's CSP").to_owned();
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let server = server_with_cors(dir.path()).await;
    let page = server.client.send_with_headers("GET", "/ui/", &[("origin", APP)], None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-security-policy"), Some(policy.as_str()), "CORS changed the dashboard's CSP");
    server.stop().await;
}
