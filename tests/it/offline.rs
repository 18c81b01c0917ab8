//! The offline commands on evidence: read-only directories (nothing created or
//! changed, a user who cannot write), a live server's directory refused
//! without a lock file created, `ledger rejections`, `replay`'s filters and
//! correlation ids, unknown tenants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{ADMIN, Server, WEB, booking};

const DATE: &str = "2026-03-02";

/// The read-only offline commands, each with the arguments it needs.
fn readers() -> Vec<Vec<&'static str>> {
    vec![
        vec!["verify"],
        vec!["audit"],
        vec!["replay"],
        vec!["replay", "--tenant", "kloqo", "--campaign", "outreach"],
        vec!["export"],
        vec!["slots", "--tenant", "kloqo", "--clinic", "c1", "--date", DATE],
        vec!["rejections"],
        vec!["rejections", "--format", "json", "--tenant", "kloqo"],
    ]
}

fn ledger(args: &[&str], dir: &Path) -> (i32, String, String) {
    run(Command::new(env!("CARGO_BIN_EXE_ledger")).args(args).arg("--data").arg(dir))
}

fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every file and directory under `dir` with its length, permissions and modification time.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, std::time::SystemTime)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        found.insert(path.strip_prefix(dir).unwrap().to_owned(), (meta.len(), meta.permissions().mode(), meta.modified().unwrap()));
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

/// A ledger with schedules, bookings, a cancellation, calls (one refused, with
/// correlation ids), a halted campaign, a phone number, and refusals in the
/// journal; the server stopped.
async fn evidence(dir: &Path) -> Value {
    let server = Server::start(dir).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    let held = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect(201);
    let headers = |tick: &'static str| [("authorization", "Bearer kloqo-web-secret-000000"), ("x-request-id", tick)];
    c.send_with_headers("POST", "/v1/kloqo/bookings", &headers("tick-slot"), Some(&booking("c1", "d1", DATE, 1, "Ben")))
        .await
        .expect_problem(409, "slot_taken");
    let call = json!({"campaign": "outreach", "to": "+1 (424) 324-2113"}).to_string();
    let started = c.send_with_headers("POST", "/v1/kloqo/calls", &headers("tick-1"), Some(&call)).await.expect(201);
    for tick in ["tick-2", "tick-3", "tick-4"] {
        assert_eq!(c.send_with_headers("POST", "/v1/kloqo/calls", &headers(tick), Some(&call)).await.status, 409);
    }
    let call_id = started["call_id"].as_str().unwrap();
    c.post(&format!("/v1/kloqo/calls/{call_id}/outcome"), WEB, r#"{"outcome": "no_answer"}"#).await.expect(200);
    let other_call = json!({"campaign": "spring", "to": "+1 415 555 0100"}).to_string();
    c.post("/v1/kloqo/calls", ADMIN, &other_call).await.expect(201);
    let claim = c.post("/v1/kloqo/businesses/toms-garage/phone-number/claim", WEB, "{}").await.expect(201);
    let complete = json!({"claim_id": claim["claim_id"], "phone_number": "+1 (828) 576-8205", "provider_sid": "PN8ebb"}).to_string();
    c.post("/v1/kloqo/businesses/toms-garage/phone-number/complete", WEB, &complete).await.expect(200);
    c.post("/v1/other/bookings", ADMIN, &booking("c9", "d9", DATE, 1, "Oz")).await.expect_problem(404, "unknown_doctor");
    // The journal is written after the answers: wait until the server has all
    // five refusals (kloqo's four and the other tenant's one), so the page's
    // `next` is the journal's end, as it is offline.
    let journaled = |tenant: &'static str| async move {
        c.get(&format!("/v1/{tenant}/rejections"), ADMIN).await.expect(200)["rejections"].as_array().unwrap().len()
    };
    eventually("the journal holds kloqo's four refusals and other's one", WAIT_MAX, async || {
        let counts = (journaled("kloqo").await, journaled("other").await);
        if counts.0 >= 4 && counts.1 >= 1 { Ok(()) } else { Err(counts) }
    })
    .await;
    let page = c.get("/v1/kloqo/rejections?limit=1000", ADMIN).await;
    assert_eq!(page.status, 200);
    server.stop().await;
    json!({"held": held, "rejections_body": String::from_utf8(page.body).unwrap()})
}

/// Makes `dir` and everything under it readable by anyone and writable by no one.
fn make_read_only(dir: &Path) {
    assert!(run(Command::new("chmod").args(["-R", "a+rX,a-w"]).arg(dir)).0 == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_offline_commands_create_and_change_nothing_even_where_nobody_may_write() {
    let scratch = tempfile::tempdir().unwrap();
    let original = scratch.path().join("data");
    evidence(&original).await;
    let copy = scratch.path().join("copy");
    assert_eq!(run(Command::new("cp").args(["-a"]).arg(&original).arg(&copy)).0, 0);
    std::fs::remove_file(copy.join("LOCK")).unwrap();
    std::fs::remove_file(copy.join("admin.token")).ok();
    // With no LOCK (a copy made without it) and with one (a copy with it): nothing is created or touched.
    for with_lock in [false, true] {
        if with_lock {
            std::fs::copy(original.join("LOCK"), copy.join("LOCK")).unwrap();
        }
        let before = listing(&copy);
        for args in readers() {
            let (code, stdout, stderr) = ledger(&args, &copy);
            assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
            assert!(!stdout.is_empty(), "{args:?} printed nothing");
        }
        assert_eq!(listing(&copy), before, "a read-only command changed the directory");
        assert_eq!(copy.join("LOCK").exists(), with_lock);
    }

    make_read_only(&copy);
    if effective_uid() != 0 {
        for args in readers() {
            let (code, stdout, stderr) = ledger(&args, &copy);
            assert_eq!(code, 0, "{args:?} on a read-only directory: {stdout}{stderr}");
        }
        return;
    }
    // Root bypasses permissions: run as nobody, who can read the copy and write nothing in it.
    assert_eq!(run(Command::new("chmod").arg("a+rx").arg(scratch.path())).0, 0);
    let as_nobody = |args: &[&str]| {
        run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_ledger"))
            .args(args)
            .arg("--data")
            .arg(&copy))
    };
    let (code, _, stderr) = as_nobody(&["verify"]);
    if code != 0 && (stderr.contains("setpriv") || stderr.contains("Permission denied") && !stderr.contains("ledger:")) {
        println!("skipped the run as nobody: setpriv cannot run the binary as uid 65534 here ({})", stderr.trim());
        return;
    }
    let (code, _, stderr) = as_nobody(&["snapshot"]);
    assert_ne!(code, 0, "nobody cannot write the copy, so a snapshot must fail: {stderr}");
    for args in readers() {
        let (code, stdout, stderr) = as_nobody(&args);
        assert_eq!(code, 0, "{args:?} as nobody on a read-only copy: {stdout}{stderr}");
    }
}

/// The effective user id, from /proc (no libc call needed).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_refuse_a_directory_a_live_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.client.schedule("kloqo", "c1", "d1", 4).await;
    let lock = std::fs::read(dir.path().join("LOCK")).unwrap();
    for args in readers() {
        let (code, _, stderr) = ledger(&args, dir.path());
        assert_eq!(code, 1, "{args:?}");
        assert!(stderr.contains("held by another ledger process"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read(dir.path().join("LOCK")).unwrap(), lock, "the server's LOCK is untouched");
    server.stop().await;
    // Once it stopped, they read it.
    let (code, _, stderr) = ledger(&["verify"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    // While readers hold it (shared, any number at once), no server starts on it.
    let first = booking_ledger::cli::open_read_only(dir.path()).unwrap();
    let second = booking_ledger::cli::open_read_only(dir.path()).unwrap();
    assert!(first.is_some() && second.is_some());
    let refused = booking_ledger::node::lock_data_dir(dir.path()).unwrap_err();
    assert!(format!("{refused:#}").contains("held by another ledger process"), "{refused:#}");
    drop((first, second));
    drop(booking_ledger::node::lock_data_dir(dir.path()).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_rejections_prints_the_journal_as_get_rejections_does_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let evidence = evidence(dir.path()).await;
    let http = evidence["rejections_body"].as_str().unwrap();

    // JSON with --tenant: the very document GET /v1/kloqo/rejections answered.
    let (code, stdout, stderr) = ledger(&["rejections", "--tenant", "kloqo", "--format", "json"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim_end(), http);
    let kloqo: Value = serde_json::from_str(http).unwrap();
    assert_eq!(kloqo["rejections"].as_array().unwrap().len(), 4, "{kloqo}");

    // Without --tenant: every tenant's, each naming its tenant.
    let (_, stdout, _) = ledger(&["rejections", "--format", "json"], dir.path());
    let all: Value = serde_json::from_str(&stdout).unwrap();
    let tenants: Vec<&str> = all["rejections"].as_array().unwrap().iter().map(|r| r["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["kloqo", "kloqo", "kloqo", "kloqo", "other"]);

    // Text: one line each, with the correlation id, the code and the conflict.
    let (_, stdout, _) = ledger(&["rejections", "--tenant", "kloqo"], dir.path());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let held = evidence["held"]["booking_id"].as_str().unwrap();
    assert!(lines[0].contains("kloqo/kloqo-web  [tick-slot]  slot_taken (booking:") && lines[0].contains(held), "{}", lines[0]);
    assert!(lines[0].contains("POST /v1/kloqo/bookings"), "{}", lines[0]);
    assert!(lines[1].contains("[tick-2]  call_in_progress"), "{}", lines[1]);

    // By code, and by time.
    let (_, stdout, _) = ledger(&["rejections", "--code", "call_in_progress"], dir.path());
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.lines().all(|l| l.contains("call_in_progress")));
    let times: Vec<&str> = kloqo["rejections"].as_array().unwrap().iter().map(|r| r["recorded_at"].as_str().unwrap()).collect();
    let (_, stdout, _) = ledger(&["rejections", "--tenant", "kloqo", "--since", times[1], "--until", times[2]], dir.path());
    let seqs: Vec<&str> = stdout.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    let expected: Vec<String> = kloqo["rejections"].as_array().unwrap()[1..3].iter().map(|r| r["seq"].to_string()).collect();
    assert_eq!(seqs, expected, "{stdout}");
    let (code, _, stderr) = ledger(&["rejections", "--since", "yesterday"], dir.path());
    assert_eq!(code, 2, "a bad time is a usage error: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_filters_by_campaign_number_business_and_actor_and_shows_correlation_ids() {
    let dir = tempfile::tempdir().unwrap();
    evidence(dir.path()).await;
    let replay = |filter: &[&str]| {
        let mut args = vec!["replay", "--tenant", "kloqo"];
        args.extend_from_slice(filter);
        let (code, stdout, stderr) = ledger(&args, dir.path());
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let everything = replay(&[]);
    assert!(everything.contains("kloqo/kloqo-web  [tick-1]  call "), "the correlation id is shown: {everything}");

    // The campaign: its call, the refusals, the halt, and the call's outcome (which names no campaign).
    let outreach = replay(&["--campaign", "outreach"]);
    let kinds: Vec<&str> = outreach.lines().map(|l| l.split("  ").last().unwrap().split_whitespace().next().unwrap()).collect();
    assert_eq!(kinds, ["call", "refused", "refused", "campaign", "call"], "{outreach}");
    assert!(outreach.lines().last().unwrap().contains("ended: no_answer"), "{outreach}");
    assert!(!outreach.contains("spring") && !outreach.contains("booked"), "{outreach}");

    // The number, as a person writes it: the calls to it and their outcome, nothing else.
    let number = replay(&["--number", "+1 (424) 324-2113"]);
    assert_eq!(number.lines().count(), 4, "{number}");
    assert!(number.lines().all(|l| l.contains("+14243242113") || l.contains("ended: no_answer")), "{number}");
    // A number bought by a business.
    let bought = replay(&["--number", "+18285768205"]);
    assert_eq!(bought.lines().count(), 1, "{bought}");
    assert!(bought.contains("toms-garage bought +18285768205"), "{bought}");

    let business = replay(&["--business", "toms-garage"]);
    assert_eq!(business.lines().count(), 2, "{business}");
    assert!(business.contains("claimed") && business.contains("bought"), "{business}");

    // The actor: the admin started the spring call only; filters combine.
    let admin = replay(&["--actor", "admin"]);
    assert!(admin.contains("campaign spring") && !admin.contains("outreach"), "{admin}");
    assert!(admin.lines().all(|l| l.contains("kloqo/admin")), "{admin}");
    assert_eq!(replay(&["--actor", "admin", "--campaign", "outreach"]), "");
    let json_lines = replay(&["--campaign", "outreach", "--format", "json"]);
    let first: Value = serde_json::from_str(json_lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["correlation_id"], "tick-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tenant_is_an_error_not_an_empty_success() {
    let dir = tempfile::tempdir().unwrap();
    evidence(dir.path()).await;
    for args in [
        &["replay", "--tenant", "acme"][..],
        &["export", "--tenant", "acme"],
        &["rejections", "--tenant", "acme"],
        &["slots", "--tenant", "acme", "--clinic", "c1", "--date", DATE],
    ] {
        let (code, stdout, stderr) = ledger(args, dir.path());
        assert_eq!(code, 1, "{args:?}: {stdout}");
        assert!(stderr.contains("unknown tenant \"acme\""), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
    }
    // A tenant seen only in the rejection journal is known to `rejections` (and only there).
    let (code, stdout, stderr) = ledger(&["rejections", "--tenant", "other"], dir.path());
    assert_eq!((code, stdout.lines().count()), (0, 1), "{stderr}");
    // A known tenant whose filter matches nothing is an empty success.
    let (code, stdout, _) = ledger(&["replay", "--tenant", "kloqo", "--campaign", "none"], dir.path());
    assert_eq!((code, stdout.as_str()), (0, ""));
}
