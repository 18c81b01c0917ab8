//! Running it as a service: a server that cannot listen leaves its data
//! directory as it found it and says why once; `--log-format json` writes
//! nothing but JSON lines; the help texts name each default once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

fn ledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
}

#[test]
fn a_busy_port_leaves_the_data_directory_as_it_was_and_the_error_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (absent, empty) = (dir.path().join("absent"), dir.path().join("empty"));
    std::fs::create_dir(&empty).unwrap();
    for (data, format) in [(&absent, "text"), (&empty, "text"), (&empty, "json")] {
        let output = ledger().args(["serve", "--log-format", format, "--listen", &port, "--data"]).arg(data).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.matches(&format!("listening on {port}")).count(), 1, "the error once:\n{stderr}");
        assert!(stderr.contains("Address already in use") || stderr.contains("address in use"), "{stderr}");
        if format == "json" {
            for line in stderr.lines() {
                serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            }
        }
        if data == &absent {
            assert!(!absent.exists(), "the data directory was created");
        } else {
            let left: Vec<_> = std::fs::read_dir(&empty).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "written before listening: {left:?}");
        }
    }
}

/// A binary built with `--no-default-features` has no cluster mode: a
/// `[cluster]` section stops it at start, saying so, before it writes anything.
#[cfg(not(feature = "cluster"))]
#[test]
fn a_binary_built_without_cluster_mode_refuses_a_cluster_section() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = (dir.path().join("ledger.toml"), dir.path().join("data"));
    let cluster = "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nnode = \"n1\"\nadvertise = \"http://127.0.0.1:8081\"\n";
    std::fs::write(
        &config,
        format!("[[token]]\nname = \"ops\"\nsecret = \"0123456789abcdef\"\ntenants = [\"*\"]\nrole = \"admin\"\n{cluster}"),
    )
    .unwrap();
    let output = ledger().args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config).arg("--data").arg(&data).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("field `cluster`: this binary was built without cluster mode"), "{stderr}");
    assert!(!data.exists(), "the data directory was created");
}

#[test]
fn json_logs_are_one_json_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ledger()
        .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let ready = line.contains("; ready");
        lines.push(line);
        if ready {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lines.len() >= 3, "{lines:#?}");
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object["level"].is_string() && object["fields"]["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|line| line.contains("\"addr\"")), "fields are JSON fields: {lines:#?}");
}

#[test]
fn help_names_each_default_once_and_describes_every_option() {
    for command in ["serve", "replay", "audit", "verify", "slots", "export", "snapshot"] {
        let output = ledger().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8(output.stdout).unwrap();
        assert!(help.matches("[default: data]").count() <= 1, "ledger {command} --help:\n{help}");
        // Every option has a description: in the short help, its line says more than its name.
        let output = ledger().args([command, "-h"]).output().unwrap();
        let help = String::from_utf8(output.stdout).unwrap();
        for line in help.lines().filter(|line| line.trim_start().starts_with("--")) {
            let words = line.split_whitespace().filter(|w| !w.starts_with('-') && !w.starts_with('<')).count();
            assert!(words > 0, "ledger {command} --help leaves {:?} undescribed:\n{help}", line.trim());
        }
    }
}

/// The value of the one sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metrics_count_each_route_by_its_template_not_its_path() {
    use crate::support::{ADMIN, Server, booking};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    c.post("/v1/kloqo/bookings", ADMIN, &booking("c1", "d1", "2026-05-01", 1, "Asha")).await.expect(201);
    c.post("/v1/acme-3f9a/bookings", ADMIN, &booking("c1", "d1", "2026-05-01", 1, "Ben")).await.expect(404);
    c.post("/v1/kloqo/bookings", ADMIN, &booking("c1", "d1", "2026-05-01", 1, "Ben")).await.expect(409);
    c.get("/no/such/route-7c1e", ADMIN).await.expect(404);
    let text = String::from_utf8(c.send("GET", "/metrics", None, None, None).await.body).unwrap();

    let bookings = ["route=\"/v1/{tenant}/bookings\"", "method=\"POST\""];
    assert_eq!(sample(&text, "ledger_http_requests_total", &[bookings[0], bookings[1], "status=\"201\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ledger_http_requests_total", &[bookings[0], bookings[1], "status=\"409\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ledger_http_requests_total", &[bookings[0], bookings[1], "status=\"404\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ledger_http_request_duration_seconds_count", &bookings), Some(3.0), "{text}");
    let schedule = "route=\"/v1/{tenant}/clinics/{clinic}/doctors/{doctor}/schedule\"";
    assert_eq!(sample(&text, "ledger_http_requests_total", &[schedule, "method=\"PUT\"", "status=\"200\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ledger_http_requests_total", &["route=\"unmatched\"", "status=\"404\""]), Some(1.0), "{text}");
    // Tenants, names and made-up paths add no series.
    for raw in ["kloqo", "acme-3f9a", "route-7c1e", "/no/such"] {
        assert!(!text.lines().any(|line| line.starts_with("ledger_http") && line.contains(raw)), "{raw} is a label:\n{text}");
    }
    assert!(text.contains("# TYPE ledger_rejections_dropped_total counter"), "{text}");
    server.stop().await;
}

#[test]
fn the_changelog_names_this_version_and_the_license_is_cargo_tomls() {
    let changelog = include_str!("../../CHANGELOG.md");
    let version = env!("CARGO_PKG_VERSION");
    assert!(changelog.contains(&format!("## [{version}] - ")), "CHANGELOG.md has no entry for {version}");
    assert!(changelog.contains("## [Unreleased]"));
    let license = include_str!("../../LICENSE");
    assert!(license.starts_with("MIT License") && license.contains("the booking-ledger authors"));
    assert!(include_str!("../../Cargo.toml").contains("license = \"MIT\""));
}

#[test]
fn listen_takes_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ledger().args(["serve", "--listen", "localhost:0", "--data"]).arg(dir.path()).stderr(Stdio::piped()).spawn().unwrap();
    let line = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|line| line.contains("listening on "))
        .expect("it listens");
    child.kill().unwrap();
    child.wait().unwrap();
    let addr: std::net::SocketAddr = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback(), "{line}");
}
