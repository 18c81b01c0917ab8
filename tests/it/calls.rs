//! Outbound calls over HTTP: incident 02 replayed, the refusals, outcomes,
//! the kill switch, the stale-call list, restarts. Time is a TestClock.

use std::sync::Arc;

use chrono::Duration;
use futures::future::join_all;
use serde_json::json;
use tokio::sync::Barrier;

use crate::support::{ADMIN, OTHER, Server, TestClock, WEB, clocked_server, config};

const NUMBER: &str = "+14243242113";

fn call(campaign: &str, to: &str) -> String {
    json!({"campaign": campaign, "to": to}).to_string()
}

fn outcome(outcome: &str) -> String {
    json!({ "outcome": outcome }).to_string()
}

/// Incident 02: the scheduler asks every 2 minutes for 2 hours for a number
/// whose status webhook never came. One call is placed; the campaign halts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prospect_called_49_times_is_called_once() {
    let (server, clock, _dir) = clocked_server().await;
    let c = &server.client;
    let mut statuses = std::collections::BTreeMap::new();
    let mut first = None;
    for _ in 0..60 {
        let reply = c.post("/v1/kloqo/calls", WEB, &call("outreach", "+1 (424) 324-2113")).await;
        let key = if reply.status == 201 { "called".to_owned() } else { reply.code() };
        *statuses.entry(key).or_insert(0) += 1;
        if reply.status == 201 {
            first = Some(reply.json());
        }
        clock.advance(Duration::minutes(2));
    }
    assert_eq!(statuses, [("called".to_owned(), 1), ("call_in_progress".to_owned(), 2), ("campaign_halted".to_owned(), 57)].into());
    let first = first.unwrap();
    assert_eq!((first["to"].as_str(), first["state"].as_str()), (Some(NUMBER), Some("calling")));

    let campaign = c.get("/v1/kloqo/campaigns/outreach", WEB).await.expect(200);
    assert_eq!(campaign["state"], "halted");
    assert!(campaign["halt_reason"].as_str().unwrap().contains("duplicate"), "{campaign}");
    // The call whose outcome never arrived is listed as stale.
    let stale = c.get("/v1/kloqo/calls?state=calling&older_than_secs=3600", WEB).await.expect(200);
    assert_eq!(stale["calls"], json!([first]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_campaigns_one_number_one_call() {
    let (server, _clock, _dir) = clocked_server().await;
    let c = &server.client;
    let barrier = Arc::new(Barrier::new(40));
    let replies = join_all((0..40).map(|i| {
        let (c, barrier) = (c.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            c.post("/v1/kloqo/calls", WEB, &call(&format!("campaign-{i}"), NUMBER)).await
        })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(Result::unwrap).collect();
    let winners: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one call is placed");
    let call_id = winners[0].json()["call_id"].clone();
    for loser in replies.iter().filter(|r| r.status != 201) {
        assert_eq!(loser.expect_problem(409, "call_in_progress")["call_id"], call_id);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_cooldown_and_the_block_list() {
    let (server, clock, _dir) = clocked_server().await;
    let c = &server.client;
    let placed = c.post("/v1/kloqo/calls", WEB, &call("a", NUMBER)).await.expect(201);
    let call_id = placed["call_id"].as_str().unwrap().to_owned();
    let in_progress = c.post("/v1/kloqo/calls", WEB, &call("b", "4243242113")).await.expect_problem(409, "call_in_progress");
    assert_eq!(in_progress["call_id"], call_id.as_str());

    c.post(&format!("/v1/kloqo/calls/{call_id}/outcome"), WEB, &outcome("no_answer")).await.expect(200);
    clock.advance(Duration::hours(23));
    let recent = c.post("/v1/kloqo/calls", WEB, &call("c", NUMBER)).await.expect_problem(409, "recently_called");
    assert_eq!(recent["call_id"], call_id.as_str());
    assert_eq!(recent["called_at"], placed["started_at"]);
    let called_at = chrono::DateTime::parse_from_rfc3339(placed["started_at"].as_str().unwrap()).unwrap();
    let retry_after = chrono::DateTime::parse_from_rfc3339(recent["retry_after"].as_str().unwrap()).unwrap();
    assert_eq!(retry_after - called_at, Duration::hours(24));
    clock.advance(Duration::hours(1));
    c.post("/v1/kloqo/calls", WEB, &call("c", NUMBER)).await.expect(201);

    // The block list: 201, then 200, permanent, and checked before anything else about the number.
    let block = json!({"number": "+44 20 7946 0958", "reason": "asked not to be called", "default_region": "GB"}).to_string();
    let blocked = c.post("/v1/kloqo/blocked-numbers", WEB, &block).await.expect(201);
    assert_eq!(blocked, json!({"number": "+442079460958", "reason": "asked not to be called"}));
    c.post("/v1/kloqo/blocked-numbers", WEB, &block).await.expect(200);
    let refused =
        c.post("/v1/kloqo/calls", WEB, &json!({"campaign": "a", "to": "020 7946 0958", "default_region": "GB"}).to_string()).await;
    assert_eq!(refused.expect_problem(409, "number_blocked")["reason"], "asked not to be called");

    c.post("/v1/kloqo/calls", WEB, &call("a", "not a number")).await.expect_problem(422, "invalid_phone_number");
    c.post("/v1/kloqo/calls", WEB, &json!({"campaign": "a", "to": NUMBER, "default_region": "XX"}).to_string())
        .await
        .expect_problem(400, "invalid_request");
    c.post("/v1/kloqo/calls", WEB, &json!({"campaign": "a"}).to_string()).await.expect_problem(400, "invalid_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_recorded_once_and_bad_numbers_are_blocked_forever() {
    let (server, clock, _dir) = clocked_server().await;
    let c = &server.client;
    let placed = c.post("/v1/kloqo/calls", WEB, &call("a", NUMBER)).await.expect(201);
    let path = format!("/v1/kloqo/calls/{}/outcome", placed["call_id"].as_str().unwrap());
    let recorded = c.post(&path, WEB, &outcome("bad_number")).await.expect(200);
    assert_eq!(recorded["state"], "bad_number");
    let position = c.position().await;
    assert_eq!(c.post(&path, WEB, &outcome("bad_number")).await.expect(200), recorded);
    assert_eq!(c.position().await, position, "the same outcome again appends nothing");
    let other = c.post(&path, WEB, &outcome("completed")).await.expect_problem(409, "outcome_already_recorded");
    assert_eq!(other["outcome"], "bad_number");
    clock.advance(Duration::days(400));
    c.post("/v1/kloqo/calls", WEB, &call("b", NUMBER)).await.expect_problem(409, "number_blocked");
    c.post(&format!("/v1/kloqo/calls/{}/outcome", uuid::Uuid::new_v4()), WEB, &outcome("failed")).await.expect_problem(404, "not_found");
    c.post(&path, WEB, &outcome("ringing")).await.expect_problem(400, "invalid_request");
    c.post("/v1/kloqo/calls/nope/outcome", WEB, &outcome("failed")).await.expect_problem(400, "invalid_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failures_halt_a_campaign_and_only_an_admin_resumes_it() {
    let (server, _clock, dir) = clocked_server().await;
    let c = server.client.clone();
    for n in 0..3 {
        let placed = c.post("/v1/kloqo/calls", WEB, &call("spring", &format!("+1424324211{n}"))).await.expect(201);
        c.post(&format!("/v1/kloqo/calls/{}/outcome", placed["call_id"].as_str().unwrap()), WEB, &outcome("failed")).await.expect(200);
    }
    let halted = c.get("/v1/kloqo/campaigns/spring", WEB).await.expect(200);
    assert_eq!((halted["state"].as_str(), halted["consecutive_failures"].as_u64()), (Some("halted"), Some(3)));
    assert_eq!(
        c.post("/v1/kloqo/calls", WEB, &call("spring", "+14243242119")).await.expect_problem(409, "campaign_halted")["reason"],
        halted["halt_reason"]
    );
    // Another campaign is not affected.
    c.post("/v1/kloqo/calls", WEB, &call("summer", "+14243242119")).await.expect(201);
    // The halt survives a restart.
    server.stop().await;
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    assert_eq!(c.get("/v1/kloqo/campaigns/spring", WEB).await.expect(200)["state"], "halted");

    let resume = json!({"reason": "carrier outage fixed"}).to_string();
    c.post("/v1/kloqo/campaigns/spring/resume", WEB, &resume).await.expect_problem(403, "forbidden");
    // The list shows every campaign of the tenant by name, halted or running, in pages.
    let listed = c.get("/v1/kloqo/campaigns", WEB).await.expect(200);
    let states: Vec<(&str, &str)> =
        listed["campaigns"].as_array().unwrap().iter().map(|c| (c["campaign"].as_str().unwrap(), c["state"].as_str().unwrap())).collect();
    assert_eq!(states, [("spring", "halted"), ("summer", "running")], "{listed}");
    let first = c.get("/v1/kloqo/campaigns?limit=1", WEB).await.expect(200);
    assert_eq!((first["campaigns"].as_array().unwrap().len(), first["next"].as_str()), (1, Some("spring")));
    let second = c.get("/v1/kloqo/campaigns?limit=1&after=spring", WEB).await.expect(200);
    assert_eq!((second["campaigns"][0]["campaign"].as_str(), second.get("next")), (Some("summer"), None));
    assert_eq!(c.get("/v1/other/campaigns", OTHER).await.expect(200), json!({"campaigns": []}), "tenants never see each other's");
    let resumed = c.post("/v1/kloqo/campaigns/spring/resume", ADMIN, &resume).await.expect(200);
    assert_eq!(resumed, json!({"campaign": "spring", "state": "running", "consecutive_failures": 0, "duplicate_attempts": 0}));
    c.post("/v1/kloqo/calls", WEB, &call("spring", "+14243242118")).await.expect(201);
    c.post("/v1/kloqo/campaigns/spring/resume", ADMIN, "{}").await.expect_problem(400, "invalid_request");
    let fresh = c.get("/v1/kloqo/campaigns/never-used", WEB).await.expect(200);
    assert_eq!(fresh, json!({"campaign": "never-used", "state": "running", "consecutive_failures": 0, "duplicate_attempts": 0}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stale_call_list_is_oldest_first_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let server = Server::start_with_clock(config(dir.path()), clock.clone()).await;
    let c = server.client.clone();
    let mut placed = Vec::new();
    for n in 0..3 {
        placed.push(c.post("/v1/kloqo/calls", WEB, &call("a", &format!("+1424324210{n}"))).await.expect(201));
        clock.advance(Duration::minutes(10));
    }
    let done = placed[1]["call_id"].as_str().unwrap();
    c.post(&format!("/v1/kloqo/calls/{done}/outcome"), WEB, &outcome("completed")).await.expect(200);
    server.stop().await;

    let server = Server::start_with_clock(config(dir.path()), clock.clone()).await;
    let c = &server.client;
    let all = c.get("/v1/kloqo/calls?state=calling&older_than_secs=0", WEB).await.expect(200);
    assert_eq!(all["calls"], json!([placed[0], placed[2]]));
    let older = c.get("/v1/kloqo/calls?state=calling&older_than_secs=1500", WEB).await.expect(200);
    assert_eq!(older["calls"], json!([placed[0]]));
    c.get("/v1/kloqo/calls?state=completed", WEB).await.expect_problem(400, "invalid_request");
    server.stop().await;
}
