//! Tenants are isolated and secrets stay secret (API.md "Authentication" and
//! "Limits and hostile clients", Tokens): every tenant route of the OpenAPI
//! document, called on tenant B's resources with tenant A's client and admin
//! tokens, is refused and leaks nothing; a server whose tokens were used,
//! well and badly, never writes a secret to its output.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Client, KLOQO_ADMIN, OTHER, RETENTION_OPEN_FOREVER, Server, WEB, booking};

/// A request to a route that should be refused at once; a live stream that is
/// not refused would hang, so each is bounded.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_route_refuses_tenant_a_tokens_on_tenant_b_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;

    // Tenant B ("other") holds one of everything, made with its own token.
    const PATIENT: &str = "Patient Of Tenant B";
    c.put("/v1/other/clinics/b-clinic/doctors/b-doctor/schedule", OTHER, r#"{"slots_per_day":10}"#).await.expect(200);
    let booked = c.post("/v1/other/bookings", OTHER, &booking("b-clinic", "b-doctor", "2026-03-02", 1, PATIENT)).await.expect(201);
    let call = c.post("/v1/other/calls", OTHER, &json!({"campaign": "b-campaign", "to": "+1 424 324 2113"}).to_string()).await.expect(201);
    let community = c
        .post("/v1/other/communities", OTHER, &json!({"name": "B Community", "owner": "b-owner", "plan": "pro"}).to_string())
        .await
        .expect(201);
    let claim = c.post("/v1/other/businesses/b-business/phone-number/claim", OTHER, "{}").await.expect(201);
    const HELD_FOR: &str = "Held Patient Of Tenant B";
    let hold = json!({"clinic": "b-clinic", "doctor": "b-doctor", "date": "2026-03-02", "slot": 2, "patient": HELD_FOR});
    let hold = c.post("/v1/other/holds", OTHER, &hold.to_string()).await.expect(201);
    const WAITING: &str = "Waiting Patient Of Tenant B";
    let entry = json!({"date": "2026-03-02", "doctor": "b-doctor", "patient": WAITING});
    let entry = c.post("/v1/other/clinics/b-clinic/waitlist", OTHER, &entry.to_string()).await.expect(201);
    let values: Vec<(&str, String)> = vec![
        ("tenant", "other".into()),
        ("clinic", "b-clinic".into()),
        ("doctor", "b-doctor".into()),
        ("booking_id", booked["booking_id"].as_str().unwrap().into()),
        ("call_id", call["call_id"].as_str().unwrap().into()),
        ("campaign", "b-campaign".into()),
        ("slug", community["slug"].as_str().unwrap().into()),
        ("business", "b-business".into()),
        ("hold_id", hold["hold_id"].as_str().unwrap().into()),
        ("entry_id", entry["entry_id"].as_str().unwrap().into()),
    ];
    // What tenant B's answers hold that a caller of tenant A never sent.
    let secrets_of_b = [
        PATIENT.to_owned(),
        HELD_FOR.into(),
        WAITING.into(),
        "B Community".into(),
        "b-owner".into(),
        "+14243242113".into(),
        claim["claim_id"].as_str().unwrap().into(),
    ];
    let before = c.position().await;

    let document = c.send("GET", "/openapi.json", None, None, None).await.expect(200);
    let http = reqwest::Client::builder().timeout(ANSWER_WAIT_MAX).build().unwrap();
    let mut walked = BTreeSet::new();
    for (template, operations) in document["paths"].as_object().unwrap() {
        if !template.starts_with("/v1/{tenant}/") {
            continue;
        }
        let mut path = template.clone();
        for (name, value) in &values {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "{template}: a path parameter this test has no tenant-B value for; add one to `values`");
        for method in operations.as_object().unwrap().keys() {
            // Queries that the routes need, so that a refusal is not a 400 for a missing one.
            let url = format!("{}{path}?date=2026-03-02&from=1", c.base);
            for (attacker, token) in [("client of tenant A", WEB), ("admin of tenant A", KLOQO_ADMIN)] {
                let request = http
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("isolation-{attacker}-{method}-{template}").replace(' ', "-"));
                let request = if method == "post" || method == "put" { request.body("{}") } else { request };
                let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path} by the {attacker}: {e}"));
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                assert!(matches!(status, 403 | 404), "{method} {path} by the {attacker}: {status} {body}");
                let problem: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{method} {path}: not a problem: {body}"));
                assert!(matches!(problem["code"].as_str(), Some("forbidden" | "not_found")), "{method} {path} by the {attacker}: {body}");
                for secret in &secrets_of_b {
                    assert!(!body.contains(secret.as_str()), "{method} {path} by the {attacker} leaks {secret:?}: {body}");
                }
            }
            walked.insert(format!("{} {template}", method.to_uppercase()));
        }
    }
    println!("{} tenant routes walked, each refused for both tokens of tenant A", walked.len());
    // The walk covers every tenant route the router has (24 when written).
    assert!(walked.len() >= 24, "only {} tenant routes in the document: {walked:#?}", walked.len());
    assert_eq!(c.position().await, before, "a refused call appended something");
    server.stop().await;
}

/// `ledger serve --config FILE`, run to the end; its whole output (stdout and
/// stderr) and its exit status.
struct Run {
    output: String,
    addr: Option<SocketAddr>,
    child: std::process::Child,
    drained: Vec<std::thread::JoinHandle<String>>,
}

impl Run {
    fn start(data: &std::path::Path, config: &std::path::Path) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--config")
            .arg(config)
            // Everything the server may say, not only what it says by default.
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ledger");
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut output = String::new();
        let mut addr = None;
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 {
            output.push_str(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                break;
            }
            line.clear();
        }
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Run { output, addr, child, drained: vec![stderr, stdout] }
    }

    fn finish(mut self) -> (String, std::process::ExitStatus) {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        for thread in self.drained {
            self.output.push_str(&thread.join().unwrap());
        }
        (self.output, status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_plain_or_sha256_never_appear_in_the_servers_output() {
    const PLAIN: &str = "plain-secret-a1b2c3d4e5f6";
    const HASHED: &str = "hashed-secret-f6e5d4c3b2a1";
    const LIMITED: &str = "limited-secret-0a9b8c7d6e";
    const WRONG: &str = "wrong-secret-9z8y7x6w5v";
    let hashed_hex: String = Sha256::digest(HASHED.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledger.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[token]]
name = "plain"
secret = "{PLAIN}"
tenants = ["kloqo"]
role = "admin"

[[token]]
name = "hashed"
secret_sha256 = "{hashed_hex}"
tenants = ["kloqo"]
role = "client"

[[token]]
name = "limited"
secret = "{LIMITED}"
tenants = ["kloqo"]
role = "client"
rate_per_sec = 1
burst = 1

{RETENTION_OPEN_FOREVER}"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let run = Run::start(&data, &config);
    let c = Client::new(run.addr.expect("the server listens"));
    c.wait_ready().await;
    c.put("/v1/kloqo/clinics/kochi/doctors/rao/schedule", PLAIN, r#"{"slots_per_day":10}"#).await.expect(200);
    c.post("/v1/kloqo/bookings", HASHED, &booking("kochi", "rao", "2026-03-02", 1, "Asha")).await.expect(201);
    c.get("/v1/kloqo/events", PLAIN).await.expect(200);
    c.get("/v1/kloqo/events", HASHED).await.expect_problem(403, "forbidden");
    c.get("/v1/kloqo/clinics/kochi/slots?date=2026-03-02", &hashed_hex).await.expect_problem(401, "unauthenticated");
    c.get("/v1/kloqo/clinics/kochi/slots?date=2026-03-02", WRONG).await.expect_problem(401, "unauthenticated");
    c.get("/v1/other/clinics/kochi/slots?date=2026-03-02", PLAIN).await.expect_problem(403, "forbidden");
    c.get("/v1/kloqo/clinics/kochi/slots?date=2026-03-02", LIMITED).await.expect(200);
    c.get("/v1/kloqo/clinics/kochi/slots?date=2026-03-02", LIMITED).await.expect_problem(429, "rate_limited");
    let doubled = format!("Bearer  {PLAIN}");
    c.send_with_headers("GET", "/v1/kloqo/events", &[("authorization", &doubled)], None).await.expect_problem(401, "unauthenticated");
    let (output, _) = run.finish();
    assert!(output.contains("listening on"), "the output was captured: {output}");
    for secret in [PLAIN, HASHED, LIMITED, WRONG] {
        assert!(!output.contains(secret), "the server's output holds the secret {secret:?}:\n{output}");
    }

    // A configuration mistake names the field, exits 2, and echoes no secret.
    std::fs::write(
        &config,
        format!(
            "[[token]]\nname = \"both\"\nsecret = \"{PLAIN}\"\nsecret_sha256 = \"{hashed_hex}\"\ntenants = [\"kloqo\"]\nrole = \"client\"\n"
        ),
    )
    .unwrap();
    let run = Run::start(&data, &config);
    assert!(run.addr.is_none());
    let (output, status) = run.finish();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("token[0].secret"), "{output}");
    assert!(!output.contains(PLAIN), "the configuration error echoes the secret: {output}");

    // Nor does a syntax error on the very line of a secret (toml quotes the line it fails on).
    std::fs::write(&config, format!("[[token]]\nname = \"broken\"\nsecret = \"{PLAIN}\" trailing\n")).unwrap();
    let run = Run::start(&data, &config);
    let (output, status) = run.finish();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("line 3"), "the error names the line: {output}");
    assert!(!output.contains(PLAIN), "the syntax error echoes the secret: {output}");
}
