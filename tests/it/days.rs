//! Open and closed days (API.md "Open and closed days"), over HTTP with the
//! ledger's clock moved by the test: a day closes at the start of
//! D + open_days_past + 1 in its clinic's zone; from then every command that
//! would change it is 409 `day_closed`, repeats answer as before, releasing
//! and withdrawing stay allowed, its holds and waiting entries expire by
//! events the ledger appends itself, and reads answer as they did.

use chrono::{Days, Duration, NaiveDate, Timelike, Utc};
use serde_json::{Value, json};

use crate::eventually::{WAIT_MAX, eventually};
use crate::support::{Client, KLOQO_ADMIN, Server, TestClock, WEB, booking, config};
use booking_ledger::config::Config;
use booking_ledger::writer::Clock;

/// A server whose days stay open two days past, as API.md's default, and
/// which snapshots every few events (a snapshot leaves closed days out).
fn two_days_open(dir: &std::path::Path) -> Config {
    let mut config = config(dir);
    config.rules.open_days_past = 2;
    config.snapshots.every_events = 4;
    config
}

async fn event_types(c: &Client) -> Vec<String> {
    let events = c.get("/v1/kloqo/events?limit=1000", KLOQO_ADMIN).await.expect(200);
    events["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

fn id(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_day_refuses_every_change_expires_its_holds_and_waitlist_and_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let server = Server::start_with_clock(two_days_open(dir.path()), clock.clone()).await;
    let c = &server.client;
    let day = clock.now().date_naive();
    let date = day.to_string();
    c.schedule("kloqo", "kochi", "rao", 3).await;
    let a = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &date, 0, "Asha")).await.expect(201);
    let b = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &date, 1, "Ben")).await.expect(201);
    let hold = json!({"clinic": "kochi", "doctor": "rao", "date": date, "slot": 2, "ttl_secs": 3600, "patient": "Hari"});
    let h = c.post("/v1/kloqo/holds", WEB, &hold.to_string()).await.expect(201);
    let join = |patient: &str| json!({"date": date, "patient": patient}).to_string();
    let w1 = c.post("/v1/kloqo/clinics/kochi/waitlist", WEB, &join("Wen")).await.expect(201);
    assert_eq!(w1["status"], "waiting");
    // Ben's cancellation frees slot 1: offered to Wen at once; Xi waits behind.
    let cancel_b = format!("/v1/kloqo/bookings/{}/cancel", id(&b, "booking_id"));
    let cancelled = c.post_keyed(&cancel_b, WEB, r#"{"reason": "moved away"}"#, "cancel-ben").await.expect(200);
    let w2 = c.post("/v1/kloqo/clinics/kochi/waitlist", WEB, &join("Xi")).await.expect(201);
    assert_eq!(w2["status"], "waiting");

    let booking_a = format!("/v1/kloqo/bookings/{}", id(&a, "booking_id"));
    let before_a = c.get(&booking_a, WEB).await.expect(200);
    let before_b = c.get(&format!("/v1/kloqo/bookings/{}", id(&b, "booking_id")), WEB).await.expect(200);

    // Three days on, the day closed at the start of the third (UTC: the clinic has no zone).
    clock.advance(Duration::days(3));
    eventually("the ledger closes the day by itself", WAIT_MAX, async || {
        let types = event_types(c).await;
        if types.last().map(String::as_str) == Some("days_closed") { Ok(()) } else { Err(types) }
    })
    .await;
    let types = event_types(c).await;
    assert_eq!(types[types.len() - 3..], ["hold_expired", "hold_expired", "days_closed"], "Hari's hold and Wen's offer: {types:?}");
    let closed_at = c.position().await;
    let closed_since = (day + Days::new(3)).to_string();

    // Every change is refused, naming when the day closed.
    let refused = |reply: crate::support::Reply| {
        let problem = reply.expect_problem(409, "day_closed");
        assert_eq!((problem["date"].as_str(), problem["closed_since"].as_str()), (Some(date.as_str()), Some(closed_since.as_str())));
    };
    refused(c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &date, 2, "Late")).await);
    refused(c.post("/v1/kloqo/holds", WEB, &hold.to_string()).await);
    refused(c.post("/v1/kloqo/clinics/kochi/waitlist", WEB, &join("Yan")).await);
    refused(c.post(&format!("{booking_a}/cancel"), WEB, "{}").await);
    refused(c.post(&format!("{booking_a}/check-in"), WEB, "{}").await);
    refused(c.post(&format!("{booking_a}/no-show"), WEB, "{}").await);
    refused(c.post(&format!("{booking_a}/reschedule"), WEB, &json!({"date": closed_since, "slot": 0}).to_string()).await);
    refused(c.post(&format!("/v1/kloqo/holds/{}/confirm", id(&h, "hold_id")), WEB, "{}").await);
    // Moving a booking of an open day onto the closed one is refused too.
    let open = c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &closed_since, 0, "Zed")).await.expect(201);
    let reschedule_open = format!("/v1/kloqo/bookings/{}/reschedule", id(&open, "booking_id"));
    refused(c.post(&reschedule_open, WEB, &json!({"date": date, "slot": 2}).to_string()).await);
    assert_eq!(c.position().await, closed_at + 1, "nothing appended but the open day's booking");

    // Repeats answer as they did while the day was open; release and withdraw stay allowed.
    assert_eq!(c.post_keyed(&cancel_b, WEB, r#"{"reason": "moved away"}"#, "cancel-ben").await.expect(200), cancelled);
    assert_eq!(c.post(&cancel_b, WEB, "{}").await.expect(200)["status"], "cancelled");
    assert_eq!(c.post(&format!("{booking_a}/reschedule"), WEB, r#"{"slot": 0}"#).await.expect(200)["slot"], 0);
    c.post(&format!("/v1/kloqo/holds/{}/release", id(&h, "hold_id")), WEB, "{}").await.expect_problem(409, "hold_expired");
    let withdrawn = c.post(&format!("/v1/kloqo/waitlist/{}/withdraw", id(&w2, "entry_id")), WEB, "{}").await.expect(200);
    assert_eq!(withdrawn["status"], "expired");
    assert_eq!(c.position().await, closed_at + 1, "repeats append nothing");

    // A later zone changes nothing of the closed day: its instants are those it closed with.
    c.put("/v1/kloqo/clinics/kochi", WEB, r#"{"time_zone": "Asia/Kolkata"}"#).await.expect(200);
    let repeat = c.post(&cancel_b, WEB, "{}").await.expect(200);
    assert_eq!((&repeat["starts_at"], &repeat["version"]), (&before_b["starts_at"], &before_b["version"]), "{repeat}");
    // Reads answer as before; the waitlist says what closing did.
    assert_eq!(c.get(&booking_a, WEB).await.expect(200), before_a);
    assert_eq!(c.get(&format!("/v1/kloqo/bookings/{}", id(&b, "booking_id")), WEB).await.expect(200), before_b);
    let slots = c.get(&format!("/v1/kloqo/clinics/kochi/slots?date={date}"), WEB).await.expect(200);
    let states: Vec<&str> = slots["doctors"][0]["slots"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["booked", "free", "free"], "{slots}");
    let waitlist = c.get(&format!("/v1/kloqo/clinics/kochi/waitlist?date={date}"), WEB).await.expect(200);
    let statuses: Vec<&str> = waitlist["entries"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["expired", "expired"], "{waitlist}");
    let audit = c.get("/v1/kloqo/audit", KLOQO_ADMIN).await.expect(200);
    assert_eq!(audit["violations"], json!([]), "{audit}");
    server.stop().await;

    // A restart closes nothing twice, and the day stays closed.
    let server = Server::start_with_clock(two_days_open(dir.path()), clock.clone()).await;
    let c = &server.client;
    refused(c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &date, 2, "Late")).await);
    c.post("/v1/kloqo/bookings", WEB, &booking("kochi", "rao", &closed_since, 1, "Ola")).await.expect(201);
    assert_eq!(c.position().await, closed_at + 3, "the open day's two bookings and the zone");
    let reads = closed_reads(c, &date, &booking_a, &id(&h, "hold_id")).await;
    assert_eq!(reads[1], before_a, "the booking reads as it did while its day was open");
    server.stop().await;

    // The closed-day store and the read side's are derived: deleted, or
    // damaged, they are rebuilt from the ledger at start-up, with the same answers.
    let store = dir.path().join(booking_ledger::closed::FILE);
    let read_store = dir.path().join(booking_ledger::forensics::disk::FILE);
    assert!(read_store.exists(), "the read side's store holds the closed day's records");
    for damage in ["deleted", "overwritten", "rebuilt by `ledger reindex`"] {
        match damage {
            "deleted" => [&store, &read_store].iter().for_each(|path| std::fs::remove_file(path).unwrap()),
            "overwritten" => [&store, &read_store]
                .iter()
                .for_each(|path| std::fs::write(path, b"not a store at all, but long enough to be mistaken for one.....").unwrap()),
            _ => {
                let output =
                    std::process::Command::new(env!("CARGO_BIN_EXE_ledger")).arg("reindex").arg("--data").arg(dir.path()).output().unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(output.status.success() && stdout.contains("rebuilt"), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
            }
        }
        assert!(std::fs::read_dir(dir.path().join("snapshots")).unwrap().count() > 0, "a snapshot to skip");
        let server = Server::start_with_clock(two_days_open(dir.path()), clock.clone()).await;
        let c = &server.client;
        assert_eq!(closed_reads(c, &date, &booking_a, &id(&h, "hold_id")).await, reads, "after the store was {damage}");
        refused(c.post(&format!("{booking_a}/cancel"), WEB, "{}").await);
        assert_eq!(c.post_keyed(&cancel_b, WEB, r#"{"reason": "moved away"}"#, "cancel-ben").await.expect(200), cancelled);
        server.stop().await;
    }
}

/// What the API answers about a closed day: the slots as of its first
/// booking, that booking, a hold, the slots, the waitlist.
async fn closed_reads(c: &Client, date: &str, booking: &str, hold_id: &str) -> Vec<Value> {
    let first = c.get(booking, WEB).await.expect(200);
    vec![
        c.get(&format!("/v1/kloqo/clinics/kochi/slots?date={date}&as_of={}", first["position"]), WEB).await.expect(200),
        first,
        c.get(&format!("/v1/kloqo/holds/{hold_id}"), WEB).await.expect(200),
        c.get(&format!("/v1/kloqo/clinics/kochi/slots?date={date}"), WEB).await.expect(200),
        c.get(&format!("/v1/kloqo/clinics/kochi/waitlist?date={date}"), WEB).await.expect(200),
    ]
}

/// A day closes by its clinic's zone: at 20:00 UTC it is already tomorrow in
/// Kolkata, so a date closed there is still open in a UTC clinic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_closes_at_midnight_in_its_clinics_zone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    // On to the next 20:00 UTC (01:30 the next day in Kolkata).
    let now = clock.now();
    let to_twenty = (20 * 3600 - i64::from(now.num_seconds_from_midnight())).rem_euclid(86_400);
    clock.advance(Duration::seconds(to_twenty));
    let server = Server::start_with_clock(two_days_open(dir.path()), clock.clone()).await;
    let c = &server.client;
    for clinic in ["utc", "kolkata"] {
        c.schedule("kloqo", clinic, "rao", 3).await;
    }
    c.put("/v1/kloqo/clinics/kolkata", WEB, r#"{"time_zone": "Asia/Kolkata"}"#).await.expect(200);
    let today_utc: NaiveDate = clock.now().with_timezone(&Utc).date_naive();
    let date = (today_utc - Days::new(2)).to_string();
    c.post("/v1/kloqo/bookings", WEB, &booking("utc", "rao", &date, 0, "Asha")).await.expect(201);
    let problem = c.post("/v1/kloqo/bookings", WEB, &booking("kolkata", "rao", &date, 0, "Asha")).await.expect_problem(409, "day_closed");
    assert_eq!(problem["closed_since"], (today_utc + Days::new(1)).to_string(), "Kolkata's today: {problem}");
    server.stop().await;
}

/// An external calendar's reference bound on a day that closed stays bound:
/// the writer reads it back from the closed-day store, across a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_ref_bound_on_a_closed_day_stays_bound_forever() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let server = Server::start_with_clock(two_days_open(dir.path()), clock.clone()).await;
    let c = &server.client;
    c.schedule("kloqo", "kochi", "rao", 3).await;
    let day = clock.now().date_naive();
    let external = |date: NaiveDate, slot: u32, correlation: &str| {
        json!({"clinic": "kochi", "doctor": "rao", "date": date.to_string(), "slot": slot, "patient": "Asha",
               "external_ref": "cal-8Fxv", "correlation_id": correlation})
        .to_string()
    };
    let bound = c.post("/v1/kloqo/bookings", WEB, &external(day, 0, "call-1")).await.expect(201);
    clock.advance(Duration::days(3));
    eventually("the ledger closes the day", WAIT_MAX, async || {
        let types = event_types(c).await;
        if types.last().map(String::as_str) == Some("days_closed") { Ok(()) } else { Err(types) }
    })
    .await;
    let later = day + Days::new(4);
    let problem = c.post("/v1/kloqo/bookings", WEB, &external(later, 1, "call-2")).await.expect_problem(409, "external_ref_bound");
    assert_eq!(problem["booking_id"], bound["booking_id"], "{problem}");
    // The same call again is answered with the booking it made.
    let again = c.post("/v1/kloqo/bookings", WEB, &external(later, 1, "call-1")).await;
    assert_eq!(again.json()["booking_id"], bound["booking_id"]);
    server.stop().await;
    let server = Server::start_with_clock(two_days_open(dir.path()), clock.clone()).await;
    let c = &server.client;
    let problem = c.post("/v1/kloqo/bookings", WEB, &external(later, 1, "call-2")).await.expect_problem(409, "external_ref_bound");
    assert_eq!(problem["booking_id"], bound["booking_id"], "after a restart: {problem}");
    server.stop().await;
}
