//! Phone numbers, one per business (incident 01): the leased claim, "already
//! complete", fencing of expired claims, one business per number, E.164, and
//! restarts. Time is a TestClock: leases expire without sleeping.

use std::sync::Arc;

use booking_ledger::writer::Clock;
use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::support::{Client, OTHER, Reply, Server, TestClock, WEB, clocked_server, config};

/// The number Tom's Garage kept, written the way the carrier returns it.
const KEPT: &str = "+18285768205";
const KEPT_SID: &str = "PN8ebb4a06026f510879323d5feea7dda3";
/// One number, written three ways (`+1 (424) 324-2113` in API.md's example).
const NUMBER: &str = "+14243242113";

/// One business's `/phone-number` routes, called with one token.
#[derive(Clone)]
struct Business {
    client: Client,
    path: String,
    token: &'static str,
}

impl Business {
    fn new(client: &Client, name: &str) -> Business {
        Business::in_tenant(client, "kloqo", WEB, name)
    }

    fn in_tenant(client: &Client, tenant: &str, token: &'static str, name: &str) -> Business {
        Business { client: client.clone(), path: format!("/v1/{tenant}/businesses/{name}/phone-number"), token }
    }

    async fn post(&self, action: &str, body: &str) -> Reply {
        self.client.post(&format!("{}/{action}", self.path), self.token, body).await
    }

    async fn claim(&self) -> Reply {
        self.post("claim", "{}").await
    }

    async fn complete(&self, claim_id: &str, phone_number: &str, provider_sid: &str) -> Reply {
        self.post("complete", &json!({"claim_id": claim_id, "phone_number": phone_number, "provider_sid": provider_sid}).to_string()).await
    }

    async fn fail(&self, claim_id: &str, reason: &str) -> Reply {
        self.post("fail", &json!({"claim_id": claim_id, "reason": reason}).to_string()).await
    }

    async fn release(&self) -> Reply {
        self.post("release", r#"{"reason":"closing down"}"#).await
    }

    /// `GET .../phone-number`, which always answers 200.
    async fn read(&self) -> Value {
        self.client.get(&self.path, self.token).await.expect(200)
    }
}

fn claim_id(view: &Value) -> String {
    let id = view["claim_id"].as_str().unwrap_or_else(|| panic!("no claim_id in {view}"));
    uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id}: {e}"));
    id.to_owned()
}

/// `lease_expires_at` as an instant: the 201 and the 409 may spell it differently.
fn lease(view: &Value) -> DateTime<Utc> {
    let at = view["lease_expires_at"].as_str().unwrap_or_else(|| panic!("no lease_expires_at in {view}"));
    DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}")).with_timezone(&Utc)
}

/// When a lease taken now on `clock` ends: the writer's clock has microseconds.
fn lease_from_now(clock: &TestClock) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(clock.now().timestamp_micros()).unwrap() + Duration::minutes(10)
}

fn active(claim_id: &str, phone_number: &str, provider_sid: &str) -> Value {
    json!({"state": "active", "claim_id": claim_id, "phone_number": phone_number, "provider_sid": provider_sid})
}

fn already_complete(claim_id: &str, phone_number: &str, provider_sid: &str) -> Value {
    let mut view = active(claim_id, phone_number, provider_sid);
    view["already_complete"] = json!(true);
    view
}

/// Incident 01 as it happened: "Launch Dashboard" pressed at minutes 0, 4, 14,
/// 20 and 25; the first press bought a number at minute 1. One number, and
/// every later press is told the onboarding is already complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_presses_over_twenty_five_minutes_buy_one_number() {
    let (server, clock, _dir) = clocked_server().await;
    let c = &server.client;
    let garage = Business::new(c, "toms-garage");
    assert_eq!(c.position().await, 0);

    let first = garage.claim().await.expect(201);
    let claim = claim_id(&first);
    assert_eq!(first, json!({"state": "pending", "claim_id": claim, "lease_expires_at": first["lease_expires_at"]}));
    clock.advance(Duration::minutes(1));
    garage.complete(&claim, KEPT, KEPT_SID).await.expect(200);
    assert_eq!(c.position().await, 2, "one claim, one completion");

    let mut minute = 1;
    for press in [4, 14, 20, 25] {
        clock.advance(Duration::minutes(press - minute));
        minute = press;
        let later = garage.claim().await.expect(200);
        assert_eq!(later, already_complete(&claim, KEPT, KEPT_SID), "the press at minute {press}");
    }
    assert_eq!(c.position().await, 2, "the later presses appended nothing");
    assert_eq!(garage.read().await, active(&claim, KEPT, KEPT_SID));
    server.stop().await;
}

/// The same five presses, and fifteen more, all at once: one claim wins and
/// every other caller is told which claim is buying and until when.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_simultaneous_claims_make_one_pending_claim() {
    let (server, _clock, _dir) = clocked_server().await;
    let c = &server.client;
    let garage = Business::new(c, "toms-garage");
    let barrier = Arc::new(Barrier::new(20));
    let replies = join_all((0..20).map(|_| {
        let (garage, barrier) = (garage.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            garage.claim().await
        })
    }))
    .await;
    let replies: Vec<Reply> = replies.into_iter().map(Result::unwrap).collect();
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one 201");
    let winner = winners[0].json();
    for loser in replies.iter().filter(|r| r.status != 201) {
        let problem = loser.expect_problem(409, "purchase_in_progress");
        assert_eq!(problem["claim_id"], winner["claim_id"], "every loser is told which claim is buying");
        assert_eq!(lease(&problem), lease(&winner));
    }
    assert_eq!(c.position().await, 1, "the losers appended nothing");
    assert_eq!(garage.read().await, winner);
    server.stop().await;
}

/// A claim holds the business for ten minutes of the server's clock; after
/// that a new claim takes over and the old one can neither complete nor fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_claim_is_fenced_off_by_the_next_one() {
    let (server, clock, _dir) = clocked_server().await;
    let c = &server.client;
    let garage = Business::new(c, "toms-garage");
    let expected = lease_from_now(&clock);
    let a = garage.claim().await.expect(201);
    assert_eq!(lease(&a), expected, "ten minutes from the server's clock");
    let a = claim_id(&a);

    clock.advance(Duration::minutes(9));
    let busy = garage.claim().await.expect_problem(409, "purchase_in_progress");
    assert_eq!((busy["claim_id"].as_str(), lease(&busy)), (Some(a.as_str()), expected));

    clock.advance(Duration::minutes(1));
    let b = garage.claim().await.expect(201);
    assert_eq!(lease(&b), expected + Duration::minutes(10));
    let b = claim_id(&b);
    assert_ne!(a, b);
    assert_eq!(garage.read().await["claim_id"], b.as_str());

    let position = c.position().await;
    let late = garage.complete(&a, NUMBER, "PN-a").await.expect_problem(409, "claim_superseded");
    assert_eq!(late["claim_id"], a.as_str());
    garage.fail(&a, "carrier timeout").await.expect_problem(409, "claim_superseded");
    assert_eq!(c.position().await, position, "a fenced claim changes nothing");
    assert_eq!(garage.read().await["claim_id"], b.as_str());

    let completed = garage.complete(&b, NUMBER, "PN-b").await.expect(200);
    assert_eq!(completed, active(&b, NUMBER, "PN-b"));
    let position = c.position().await;
    let again = garage.complete(&b, NUMBER, "PN-b").await.expect(200);
    assert_eq!(again, completed);
    assert_eq!(c.position().await, position, "repeating a completion appends nothing");
    // The old claim stays fenced off now that the number is bought.
    garage.complete(&a, NUMBER, "PN-b").await.expect_problem(409, "claim_superseded");
    server.stop().await;
}

/// A number is active for at most one business of a tenant, however it is
/// written; releasing it frees it for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_number_belongs_to_one_business_until_released() {
    let (server, _clock, _dir) = clocked_server().await;
    let c = &server.client;
    let (x, y) = (Business::new(c, "x"), Business::new(c, "y"));
    let x_claim = claim_id(&x.claim().await.expect(201));
    x.complete(&x_claim, NUMBER, "PN-x").await.expect(200);
    let y_claim = claim_id(&y.claim().await.expect(201));

    let position = c.position().await;
    for written in ["+1 (424) 324-2113", "(424) 324-2113", "424.324.2113", NUMBER] {
        let in_use = y.complete(&y_claim, written, "PN-y").await.expect_problem(409, "phone_number_in_use");
        assert_eq!((in_use["phone_number"].as_str(), in_use["business"].as_str()), (Some(NUMBER), Some("x")), "{written}");
    }
    assert_eq!(c.position().await, position);
    assert_eq!(y.read().await["state"], "pending", "y's claim is still buying");

    assert_eq!(x.release().await.expect(200), json!({"state": "none"}));
    assert_eq!(x.read().await, json!({"state": "none"}));
    let completed = y.complete(&y_claim, "+1 (424) 324-2113", "PN-y").await.expect(200);
    assert_eq!(completed, active(&y_claim, NUMBER, "PN-y"));

    // And now x may not take it back.
    let x_again = claim_id(&x.claim().await.expect(201));
    let in_use = x.complete(&x_again, NUMBER, "PN-x2").await.expect_problem(409, "phone_number_in_use");
    assert_eq!(in_use["business"], "y");
    server.stop().await;
}

/// Numbers are compared in E.164; what does not parse is 422 and what is not
/// a well-formed request is 400, and neither appends anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numbers_are_normalized_and_bad_requests_refused() {
    let (server, _clock, _dir) = clocked_server().await;
    let c = &server.client;
    let salon = Business::new(c, "salon");
    let claim = claim_id(&salon.claim().await.expect(201));
    let position = c.position().await;

    for unparseable in ["not a number", "12", "+1 555", "+999 1234567", &"1".repeat(65)] {
        let problem = salon.complete(&claim, unparseable, "PN-1").await.expect_problem(422, "invalid_phone_number");
        assert_eq!(problem["field"], "phone_number", "{unparseable}");
    }
    let valid = format!(r#"{{"claim_id":"{claim}","phone_number":"{NUMBER}","provider_sid":"PN-1"}}"#);
    for (action, body, named) in [
        ("claim", r#"{"business":"salon"}"#, "business"),
        ("complete", &valid.replace("provider_sid", "sid"), "`sid`"),
        ("complete", &valid.replace(r#""provider_sid":"PN-1""#, r#""provider_sid":"PN-1","area":"424""#), "area"),
        ("complete", &format!(r#"{{"phone_number":"{NUMBER}","provider_sid":"PN-1"}}"#), "claim_id"),
        ("complete", &valid.replace(&claim, "123"), "claim_id"),
        ("complete", &valid.replace("PN-1", ""), "provider_sid"),
        ("complete", "not json", "expected"),
        ("fail", &format!(r#"{{"claim_id":"{claim}"}}"#), "reason"),
        ("fail", r#"{"claim_id":"nope","reason":"x"}"#, "claim_id"),
        ("fail", &format!(r#"{{"claim_id":"{claim}","reason":""}}"#), "reason"),
        ("release", r#"{"why":"x"}"#, "why"),
    ] {
        let problem = salon.post(action, body).await.expect_problem(400, "invalid_request");
        assert!(problem["detail"].as_str().unwrap().contains(named), "{action} {body}: {problem}");
    }
    assert_eq!(c.position().await, position, "refusals append nothing");
    assert_eq!(salon.read().await["state"], "pending");

    let completed = salon.complete(&claim, "(424) 324-2113", "PN-1").await.expect(200);
    assert_eq!(completed, active(&claim, NUMBER, "PN-1"), "US numbers may omit +1");
    let position = c.position().await;
    salon.complete(&claim, "+1-424-324-2113", "PN-1").await.expect(200);
    assert_eq!(c.position().await, position, "the same number written differently is the same completion");
    server.stop().await;
}

/// GET follows the business through none, pending, active and back; fail and
/// release answer `none`; another tenant's business of the same name is
/// another business.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn states_read_back_and_tenants_are_isolated() {
    let (server, _clock, _dir) = clocked_server().await;
    let c = &server.client;
    let salon = Business::new(c, "salon");
    assert_eq!(salon.read().await, json!({"state": "none"}));

    let first = salon.claim().await.expect(201);
    let first_claim = claim_id(&first);
    assert_eq!(salon.read().await, first);
    let busy = salon.release().await.expect_problem(409, "purchase_in_progress");
    assert_eq!(busy["claim_id"], first_claim.as_str(), "no release while a claim is buying");

    assert_eq!(salon.fail(&first_claim, "carrier said no").await.expect(200), json!({"state": "none"}));
    assert_eq!(salon.read().await, json!({"state": "none"}));
    let position = c.position().await;
    assert_eq!(salon.fail(&first_claim, "carrier said no").await.expect(200), json!({"state": "none"}));
    assert_eq!(c.position().await, position, "repeating a fail appends nothing");
    salon.complete(&first_claim, NUMBER, "PN-1").await.expect_problem(409, "claim_superseded");
    salon.complete(&uuid::Uuid::new_v4().to_string(), NUMBER, "PN-1").await.expect_problem(409, "claim_superseded");

    let second = claim_id(&salon.claim().await.expect(201));
    salon.complete(&second, NUMBER, "PN-2").await.expect(200);
    assert_eq!(salon.read().await, active(&second, NUMBER, "PN-2"));
    assert_eq!(salon.release().await.expect(200), json!({"state": "none"}));
    assert_eq!(salon.read().await, json!({"state": "none"}));
    let position = c.position().await;
    assert_eq!(salon.release().await.expect(200), json!({"state": "none"}));
    assert_eq!(c.position().await, position, "releasing nothing appends nothing");
    let third = claim_id(&salon.claim().await.expect(201));
    salon.complete(&third, NUMBER, "PN-3").await.expect(200);

    // Tenant `other` has its own "salon", which may hold the same number.
    let theirs = Business::in_tenant(c, "other", OTHER, "salon");
    assert_eq!(theirs.read().await, json!({"state": "none"}));
    let their_claim = claim_id(&theirs.claim().await.expect(201));
    assert_eq!(theirs.complete(&their_claim, NUMBER, "PN-other").await.expect(200), active(&their_claim, NUMBER, "PN-other"));
    salon.complete(&their_claim, NUMBER, "PN-other").await.expect_problem(409, "claim_superseded");
    assert_eq!(salon.read().await, active(&third, NUMBER, "PN-3"));
    c.get("/v1/kloqo/businesses/salon/phone-number", OTHER).await.expect_problem(403, "forbidden");
    c.post("/v1/kloqo/businesses/salon/phone-number/claim", OTHER, "{}").await.expect_problem(403, "forbidden");
    server.stop().await;
}

/// Claims and numbers are in the ledger, not in memory: a restart keeps the
/// pending claim's lease, the active number and its owner, and the fencing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_numbers_survive_a_restart() {
    let (server, clock, dir) = clocked_server().await;
    let c = &server.client;
    let garage = Business::new(c, "toms-garage");
    let pending = garage.claim().await.expect(201);
    let a = claim_id(&pending);
    let salon = Business::new(c, "salon");
    let salon_claim = claim_id(&salon.claim().await.expect(201));
    salon.complete(&salon_claim, NUMBER, "PN-salon").await.expect(200);
    server.stop().await;

    let server = Server::start_with_clock(config(dir.path()), clock.clone()).await;
    let c = &server.client;
    let (garage, salon) = (Business::new(c, "toms-garage"), Business::new(c, "salon"));
    let position = c.position().await;
    assert_eq!(position, 3);
    assert_eq!(garage.read().await["claim_id"], a.as_str());
    assert_eq!(lease(&garage.read().await), lease(&pending));
    assert_eq!(salon.read().await, active(&salon_claim, NUMBER, "PN-salon"));

    clock.advance(Duration::minutes(5));
    let busy = garage.claim().await.expect_problem(409, "purchase_in_progress");
    assert_eq!((busy["claim_id"].as_str(), lease(&busy)), (Some(a.as_str()), lease(&pending)));
    assert_eq!(salon.claim().await.expect(200), already_complete(&salon_claim, NUMBER, "PN-salon"));
    salon.complete(&salon_claim, NUMBER, "PN-salon").await.expect(200);
    let in_use = garage.complete(&a, "+1 (424) 324-2113", "PN-garage").await.expect_problem(409, "phone_number_in_use");
    assert_eq!(in_use["business"], "salon");
    assert_eq!(c.position().await, position);

    clock.advance(Duration::minutes(5));
    let b = claim_id(&garage.claim().await.expect(201));
    server.stop().await;

    // Restarted again: the fencing of the expired claim holds.
    let server = Server::start_with_clock(config(dir.path()), clock.clone()).await;
    let c = &server.client;
    let garage = Business::new(c, "toms-garage");
    garage.complete(&a, KEPT, KEPT_SID).await.expect_problem(409, "claim_superseded");
    garage.fail(&a, "too late").await.expect_problem(409, "claim_superseded");
    assert_eq!(garage.complete(&b, KEPT, KEPT_SID).await.expect(200), active(&b, KEPT, KEPT_SID));
    server.stop().await;
}
