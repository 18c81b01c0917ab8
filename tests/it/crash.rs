//! The server as a real process: SIGKILL in the middle of load (and of writing
//! snapshots) loses no acknowledged booking; SIGTERM drains and exits 0; bad
//! configuration exits 2.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{Client, Process, booking};

const DOCTORS: u32 = 4;
const SLOTS: u32 = 40;
const DATES: [&str; 2] = ["2026-05-01", "2026-05-02"];

/// Books random slots until the server stops answering; returns every 201.
async fn load(client: Client, token: String, seed: u64, answered: Arc<AtomicUsize>) -> Vec<Value> {
    let dates = DATES.map(String::from).into();
    load_days(client, token, seed, answered, dates, Arc::default()).await
}

/// [`load`] on `dates`, counting the 409 `day_closed` answers in `closed`.
async fn load_days(
    client: Client,
    token: String,
    seed: u64,
    answered: Arc<AtomicUsize>,
    dates: Arc<[String]>,
    closed: Arc<AtomicUsize>,
) -> Vec<Value> {
    let mut acknowledged = Vec::new();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    loop {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let pick = (state >> 33) as u32;
        let doctor = format!("d{}", pick % DOCTORS);
        let date = &dates[(pick / DOCTORS) as usize % dates.len()];
        let slot = (pick / 8) % SLOTS;
        let body = booking("c1", &doctor, date, slot, "p");
        let request = reqwest::Client::new()
            .post(format!("{}/v1/kloqo/bookings", client.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send();
        let Ok(response) = request.await else { return acknowledged };
        let status = response.status().as_u16();
        let Ok(bytes) = response.bytes().await else { return acknowledged };
        answered.fetch_add(1, Ordering::Relaxed);
        match status {
            201 => acknowledged.push(serde_json::from_slice(&bytes).unwrap()),
            409 => {
                let problem: Value = serde_json::from_slice(&bytes).unwrap();
                if problem["code"] == "day_closed" {
                    closed.fetch_add(1, Ordering::Relaxed);
                }
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&bytes)),
        }
    }
}

/// Returns once the clients counting in `answered` have `wanted` answers.
async fn answered_at_least(answered: &AtomicUsize, wanted: usize) {
    let answers = || answered.load(Ordering::Relaxed);
    eventually(format!("the clients have {wanted} answers"), WAIT_MAX, async || if answers() >= wanted { Ok(()) } else { Err(answers()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_acknowledged_booking() {
    let dir = tempfile::tempdir().unwrap();
    kill_under_load(dir.path(), &[], false).await;
}

/// The same, with a snapshot every 20 events: the kill comes while the
/// snapshot thread is writing them, again and again. Every snapshot left is
/// whole (`ledger verify` passes), and the restart that loads one has every
/// acknowledged booking and no slot twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_snapshots_are_written_loses_no_acknowledged_booking() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledger.toml");
    std::fs::write(&config, format!("[limits]\nsnapshot_every_events = 20\n{}", crate::support::RETENTION_OPEN_FOREVER)).unwrap();
    let data = dir.path().join("data");
    kill_under_load(&data, &["--config".as_ref(), config.as_os_str()], true).await;
}

/// Every acknowledged booking is there, unchanged, and holds its slot in the
/// slots view of its date (one of `dates`); no slot or token twice.
async fn check_acknowledged(server: &Process, acknowledged: &[Value], dates: &[String], round: u64) {
    let c = &server.client;
    let mut holders = BTreeMap::new();
    let mut tokens = BTreeSet::new();
    for booking in acknowledged {
        let id = booking["booking_id"].as_str().unwrap();
        let found = c.get(&format!("/v1/kloqo/bookings/{id}"), &server.token).await.expect(200);
        assert_eq!(&found, booking, "round {round}: an acknowledged booking changed or vanished");
        let slot = (booking["doctor"].to_string(), booking["date"].as_str().unwrap().to_owned(), booking["slot"].as_u64().unwrap());
        assert!(holders.insert(slot.clone(), id.to_owned()).is_none(), "round {round}: two acknowledged bookings of {slot:?}");
        let token = (booking["doctor"].to_string(), booking["date"].to_string(), booking["token"].to_string());
        assert!(tokens.insert(token.clone()), "round {round}: token {token:?} issued twice");
    }
    for date in dates {
        let view = c.get(&format!("/v1/kloqo/clinics/c1/slots?date={date}"), &server.token).await.expect(200);
        for doctor in view["doctors"].as_array().unwrap() {
            for slot in doctor["slots"].as_array().unwrap() {
                let key = (doctor["doctor"].to_string(), date.clone(), slot["slot"].as_u64().unwrap());
                if let Some(id) = holders.get(&key) {
                    assert_eq!(slot["booking_id"].as_str(), Some(id.as_str()), "round {round}: {key:?}");
                }
            }
        }
    }
}

/// libfaketime, which runs a server at another time (Debian's `faketime`).
fn libfaketime() -> std::path::PathBuf {
    let libs = std::fs::read_dir("/usr/lib").into_iter().flatten().flatten();
    let found = libs.map(|entry| entry.path().join("faketime/libfaketime.so.1")).find(|path| path.exists());
    found.expect("libfaketime (Debian's faketime): `make test` needs it to run a server across midnight, see README")
}

/// A day closes (`open_days_past = 0`: at the next midnight) while sixteen
/// clients book it and the next one, and the server is SIGKILLed before the
/// close, right after the first `day_closed` answer, and after it, with
/// snapshots written every 50 events. Every acknowledged booking is kept,
/// unchanged (the closed day's read back from the closed-day store), no
/// slot or token twice, the closed day's slots show them, it stays closed,
/// and `ledger verify` and `ledger audit` pass. The server runs under
/// libfaketime, 6 s before the next UTC midnight at the start, its clock
/// running on across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_a_day_closes_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledger.toml");
    std::fs::write(&config, "[limits]\nsnapshot_every_events = 50\n[retention]\nopen_days_past = 0\n").unwrap();
    let data = dir.path().join("data");
    let args: [&OsStr; 2] = ["--config".as_ref(), config.as_os_str()];
    let now = chrono::Utc::now();
    let today = now.date_naive();
    let midnight = (today + chrono::Days::new(1)).and_hms_opt(0, 0, 0).unwrap().and_utc();
    let offset = (midnight - now).num_seconds() - 6;
    let env = [
        ("LD_PRELOAD", libfaketime().display().to_string()),
        ("FAKETIME", format!("{offset:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ];
    let dates: Arc<[String]> = [today, today + chrono::Days::new(1)].map(|d| d.to_string()).into();
    let mut acknowledged: Vec<Value> = Vec::new();
    for round in 0..3 {
        let server = Process::spawn_env(&data, &args, &env).await;
        if round == 0 {
            for d in 0..DOCTORS {
                let path = format!("/v1/kloqo/clinics/c1/doctors/d{d}/schedule");
                server.client.put(&path, &server.token, &format!(r#"{{"slots_per_day":{SLOTS}}}"#)).await.expect(200);
            }
        }
        let (answered, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let clients: Vec<_> = (0..16)
            .map(|i| {
                let (c, token) = (server.client.clone(), server.token.clone());
                tokio::spawn(load_days(c, token, round * 100 + i, answered.clone(), dates.clone(), closed.clone()))
            })
            .collect();
        match round {
            0 => answered_at_least(&answered, 40).await,
            1 => {
                eventually("the day closes under load", WAIT_MAX, async || {
                    let refused = closed.load(Ordering::Relaxed);
                    if refused > 0 { Ok(()) } else { Err(answered.load(Ordering::Relaxed)) }
                })
                .await;
            }
            _ => answered_at_least(&answered, 200).await,
        }
        server.kill();
        for booked in join_all(clients).await {
            acknowledged.extend(booked.unwrap());
        }
        if round == 2 {
            assert!(closed.load(Ordering::Relaxed) > 0, "the day stayed closed after the restart");
        }

        let server = Process::spawn_env(&data, &args, &env).await;
        check_acknowledged(&server, &acknowledged, &dates, round).await;
        server.kill();
    }
    let closed_day = acknowledged.iter().filter(|b| b["date"] == dates[0].as_str()).count();
    assert!(closed_day > 0 && closed_day < acknowledged.len(), "bookings on both days: {closed_day} of {}", acknowledged.len());
    for check in ["verify", "audit"] {
        let output = Command::new(env!("CARGO_BIN_EXE_ledger")).arg(check).arg("--data").arg(&data).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "ledger {check}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Four rounds of: sixteen clients booking, SIGKILL mid-flight, restart, and
/// every booking ever acknowledged checked.
async fn kill_under_load(dir: &Path, args: &[&OsStr], snapshots: bool) {
    let mut acknowledged: Vec<Value> = Vec::new();
    for round in 0..4u64 {
        let server = Process::spawn_with(dir, args).await;
        if round == 0 {
            for d in 0..DOCTORS {
                let path = format!("/v1/kloqo/clinics/c1/doctors/d{d}/schedule");
                server.client.put(&path, &server.token, &format!(r#"{{"slots_per_day":{SLOTS}}}"#)).await.expect(200);
            }
        }
        let answered = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> =
            (0..16).map(|i| tokio::spawn(load(server.client.clone(), server.token.clone(), round * 100 + i, answered.clone()))).collect();
        // Kill while all sixteen are mid-flight: after some answers, never at a
        // quiet moment; with snapshots, a few answers after this round's first
        // one was written, as the next ones are taken.
        let answers = || answered.load(Ordering::Relaxed);
        let wanted = if snapshots {
            eventually(format!("round {round}: a snapshot is written"), WAIT_MAX, async || {
                assert!(answers() < 10_000, "round {round}: no snapshot was written");
                let written = server.log.lock().iter().any(|line| line.contains("wrote snapshot"));
                if written { Ok(answers() + 5 + 7 * round as usize) } else { Err(answers()) }
            })
            .await
        } else {
            40
        };
        answered_at_least(&answered, wanted).await;
        server.kill();
        for booked in join_all(clients).await {
            acknowledged.extend(booked.unwrap());
        }
        if snapshots {
            let verified = Command::new(env!("CARGO_BIN_EXE_ledger")).arg("verify").arg("--data").arg(dir).output().unwrap();
            let stdout = String::from_utf8_lossy(&verified.stdout);
            assert_eq!(verified.status.code(), Some(0), "round {round}: a kill left a bad snapshot: {stdout}");
        }

        let server = Process::spawn_with(dir, args).await;
        if snapshots && round > 0 {
            let line = server.wait_for_line("recovered from").await;
            assert!(line.contains(".snap (position"), "round {round}: no snapshot loaded: {line}");
        }
        check_acknowledged(&server, &acknowledged, &DATES.map(String::from), round).await;
        assert!(!acknowledged.is_empty());
        server.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::spawn(dir.path()).await;
    let c = server.client.clone();
    c.put("/v1/kloqo/clinics/c1/doctors/d1/schedule", &server.token, r#"{"slots_per_day":3}"#).await.expect(200);
    let booked = c.post("/v1/kloqo/bookings", &server.token, &booking("c1", "d1", "2026-05-01", 0, "p")).await.expect(201);
    let mut server = server;
    let child = &mut server.child;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "SIGTERM is a clean exit");

    let server = Process::spawn(dir.path()).await;
    let id = booked["booking_id"].as_str().unwrap();
    assert_eq!(server.client.get(&format!("/v1/kloqo/bookings/{id}"), &server.token).await.expect(200), booked);
    server.kill();
}

#[test]
fn bad_configuration_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledger.toml");
    for (text, named) in [("[limits]\nbatch_len_max = 0\n", "limits.batch_len_max"), ("[limits]\nbogus = 1\n", "bogus")] {
        std::fs::write(&config, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_an_admin_token_is_created_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let server = Process::spawn(dir.path()).await;
    let mode = std::fs::metadata(dir.path().join("admin.token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    server.client.get("/v1/any-tenant/clinics/c1/slots?date=2026-05-01", &server.token).await.expect(200);
    let token = server.token.clone();
    server.kill();
    let again = Process::spawn(dir.path()).await;
    assert_eq!(again.token, token, "the token is kept across restarts");
    again.kill();
}

/// What one client had acknowledged before the kill.
#[derive(Default)]
struct Acknowledged {
    communities: Vec<Value>,
    calls: Vec<Value>,
    /// (business, the answer to complete)
    numbers: Vec<(String, Value)>,
    /// businesses with a 201 claim but no acknowledged completion
    claims: Vec<String>,
}

/// One client's mixed load: communities under colliding names, calls to its
/// own numbers, claims completed with its own numbers. Stops at the first
/// failure to reach the server.
async fn mixed_load(client: Client, token: String, who: u64, answered: Arc<AtomicUsize>) -> Acknowledged {
    let mut acknowledged = Acknowledged::default();
    let post = |path: String, body: Value| {
        let request = reqwest::Client::new().post(format!("{}{path}", client.base)).bearer_auth(&token).json(&body).send();
        async move {
            let response = request.await.ok()?;
            let status = response.status().as_u16();
            let body: Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
            Some((status, body))
        }
    };
    for n in 0u64.. {
        let result = match n % 3 {
            0 => post("/v1/kloqo/communities".into(), json!({"name": format!("Club {}", n % 5), "owner": "o", "plan": "p"})).await.map(
                |(s, b)| {
                    assert_eq!(s, 201, "{b}");
                    acknowledged.communities.push(b);
                },
            ),
            1 => post("/v1/kloqo/calls".into(), json!({"campaign": format!("c{who}"), "to": format!("+1424{:03}{:04}", 200 + who, n)}))
                .await
                .map(|(s, b)| {
                    assert_eq!(s, 201, "{b}");
                    acknowledged.calls.push(b);
                }),
            _ => {
                let business = format!("biz-{who}-{n}");
                match post(format!("/v1/kloqo/businesses/{business}/phone-number/claim"), json!({})).await {
                    None => None,
                    Some((status, claim)) => {
                        assert_eq!(status, 201, "{claim}");
                        acknowledged.claims.push(business.clone());
                        let body = json!({"claim_id": claim["claim_id"], "phone_number": format!("+1646{:03}{:04}", 200 + who, n), "provider_sid": "PN"});
                        post(format!("/v1/kloqo/businesses/{business}/phone-number/complete"), body).await.map(|(s, b)| {
                            assert_eq!(s, 200, "{b}");
                            acknowledged.claims.pop();
                            acknowledged.numbers.push((business, b));
                        })
                    }
                }
            }
        };
        if result.is_none() {
            break;
        }
        answered.fetch_add(1, Ordering::Relaxed);
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_mixed_load_keeps_every_acknowledged_claim_call_and_community() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Acknowledged::default();
    for round in 0..3u64 {
        let server = Process::spawn(dir.path()).await;
        let answered = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..16)
            .map(|i| tokio::spawn(mixed_load(server.client.clone(), server.token.clone(), round * 16 + i, answered.clone())))
            .collect();
        answered_at_least(&answered, 60).await;
        server.kill();
        for client in join_all(clients).await {
            let client = client.unwrap();
            all.communities.extend(client.communities);
            all.calls.extend(client.calls);
            all.numbers.extend(client.numbers);
            all.claims.extend(client.claims);
        }

        let server = Process::spawn(dir.path()).await;
        let (c, token) = (&server.client, &server.token);
        let mut slugs = BTreeSet::new();
        for community in &all.communities {
            let slug = community["slug"].as_str().unwrap();
            assert!(slugs.insert(slug.to_owned()), "round {round}: slug {slug} given twice");
            assert_eq!(&c.get(&format!("/v1/kloqo/communities/{slug}"), token).await.expect(200), community, "round {round}");
        }
        let calling = c.get("/v1/kloqo/calls?state=calling", token).await.expect(200);
        let calling: BTreeSet<_> = calling["calls"].as_array().unwrap().iter().map(|call| call["call_id"].to_string()).collect();
        for call in &all.calls {
            assert!(calling.contains(&call["call_id"].to_string()), "round {round}: acknowledged call {} lost", call["call_id"]);
        }
        for (business, completed) in &all.numbers {
            let phone = c.get(&format!("/v1/kloqo/businesses/{business}/phone-number"), token).await.expect(200);
            assert_eq!(&phone, completed, "round {round}: {business}");
        }
        for business in &all.claims {
            let phone = c.get(&format!("/v1/kloqo/businesses/{business}/phone-number"), token).await.expect(200);
            assert_ne!(phone["state"], "none", "round {round}: {business}'s acknowledged claim vanished");
        }
        server.kill();
    }
    assert!(!all.communities.is_empty() && !all.calls.is_empty() && !all.numbers.is_empty());
}

/// SIGTERM while sixteen clients are booking: the server stops accepting,
/// answers what it took, exits 0, and every 201 it gave is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_answers_what_it_took_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::spawn(dir.path()).await;
    for d in 0..DOCTORS {
        let path = format!("/v1/kloqo/clinics/c1/doctors/d{d}/schedule");
        server.client.put(&path, &server.token, &format!(r#"{{"slots_per_day":{SLOTS}}}"#)).await.expect(200);
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> =
        (0..16).map(|i| tokio::spawn(load(server.client.clone(), server.token.clone(), 900 + i, answered.clone()))).collect();
    answered_at_least(&answered, 40).await;
    let mut server = server;
    let child = &mut server.child;
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let acknowledged: Vec<Value> = join_all(clients).await.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0), "a drained shutdown exits 0");

    let server = Process::spawn(dir.path()).await;
    for booking in &acknowledged {
        let id = booking["booking_id"].as_str().unwrap();
        assert_eq!(&server.client.get(&format!("/v1/kloqo/bookings/{id}"), &server.token).await.expect(200), booking);
    }
    assert!(!acknowledged.is_empty());
    server.kill();
}
