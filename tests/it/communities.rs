//! Communities (incident 03): one click is one community, concurrent creations
//! of one name get distinct slugs, and slugs follow API.md's rules across a
//! restart.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::support::{Client, OTHER, Reply, Server, WEB};

const PATH: &str = "/v1/kloqo/communities";

fn community(name: &str) -> String {
    json!({"name": name, "owner": "asha", "plan": "pro"}).to_string()
}

async fn create(c: &Client, name: &str) -> Reply {
    c.post(PATH, WEB, &community(name)).await
}

/// The slug a successful creation of `name` got.
async fn slug(c: &Client, name: &str) -> String {
    create(c, name).await.expect(201)["slug"].as_str().unwrap().to_owned()
}

async fn read(c: &Client, slug: &str) -> Reply {
    c.get(&format!("{PATH}/{slug}"), WEB).await
}

/// Two creations of one name racing can no longer both see a slug as free:
/// ten at once get the base and the suffixes 1 to 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_simultaneous_creations_of_one_name_get_ten_slugs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    let barrier = Arc::new(Barrier::new(10));
    let replies = join_all((0..10).map(|_| {
        let (c, barrier) = (c.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            create(&c, "My Community").await
        })
    }))
    .await;
    let created: Vec<Value> = replies.into_iter().map(|r| r.unwrap().expect(201)).collect();
    let slugs: BTreeSet<&str> = created.iter().map(|v| v["slug"].as_str().unwrap()).collect();
    let expected: BTreeSet<String> =
        std::iter::once("my-community".to_owned()).chain((1..=9).map(|n| format!("my-community-{n}"))).collect();
    assert_eq!(slugs, expected.iter().map(String::as_str).collect());
    let ids: BTreeSet<&str> = created.iter().map(|v| v["community_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10, "ten communities");
    for view in &created {
        assert_eq!(&read(c, view["slug"].as_str().unwrap()).await.expect(200), view);
    }
    assert_eq!(c.position().await, 10, "one event per community");
    server.stop().await;
}

/// Incident 03's double click, five times over, with the key the form was
/// given when it mounted: one community and five identical answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_double_click_with_one_idempotency_key_creates_one_community() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;
    let position = c.position().await;
    let body = Arc::new(community("My Community"));
    let barrier = Arc::new(Barrier::new(5));
    let replies = join_all((0..5).map(|_| {
        let (c, body, barrier) = (c.clone(), body.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            c.post_keyed(PATH, WEB, &body, "create-community-form-1").await
        })
    }))
    .await;
    let replies: Vec<Reply> = replies.into_iter().map(Result::unwrap).collect();
    for reply in &replies {
        assert_eq!((reply.status, &reply.body), (201, &replies[0].body), "identical answers, never a 409");
    }
    let replayed = replies.iter().filter(|r| r.header("idempotent-replayed") == Some("true")).count();
    assert_eq!(replayed, 4, "exactly one request executed");
    assert_eq!(c.position().await, position + 1, "one community");
    let created = replies[0].json();
    assert_eq!(created["slug"], "my-community");
    assert_eq!(read(c, "my-community").await.expect(200), created);
    read(c, "my-community-1").await.expect_problem(404, "not_found");
    server.stop().await;
}

/// The slug rules of API.md, the answer's shape, the refusals, and slugs
/// (and the next free suffix) kept across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slugs_are_transliterated_cut_and_suffixed_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let c = &server.client;

    let position = c.position().await;
    let cafe = create(c, "Café Crème").await.expect(201);
    assert!(uuid::Uuid::parse_str(cafe["community_id"].as_str().unwrap()).is_ok());
    assert_eq!(
        cafe,
        json!({
            "community_id": cafe["community_id"], "slug": "cafe-creme", "name": "Café Crème", "owner": "asha",
            "membership": {"user": "asha", "role": "admin"}, "subscription": {"plan": "pro"},
        })
    );
    assert_eq!(c.position().await, position + 1, "community, membership and subscription are one event");
    assert_eq!(read(c, "cafe-creme").await.expect(200), cafe);
    read(c, "Café Crème").await.expect_problem(404, "not_found");
    read(c, "no-such-community").await.expect_problem(404, "not_found");

    for (name, expected) in [
        ("  Ünïcödé -- Straße!! ", "unicode-strasse"),
        ("東京 Tokyo", "dong-jing-tokyo"),
        ("a_b.c", "a-b-c"),
        (&"x".repeat(70), &"x".repeat(60)),
        // Cut at 60 characters, then trimmed: no trailing dash.
        (&"word ".repeat(30), "word-".repeat(12).trim_end_matches('-')),
    ] {
        assert_eq!(slug(c, name).await, expected, "{name:?}");
    }
    // The cut base, taken, gets a suffix.
    assert_eq!(slug(c, &"x".repeat(70)).await, format!("{}-1", "x".repeat(60)));

    let position = c.position().await;
    for name in ["!!!", "— ¿? —", "---"] {
        c.post(PATH, WEB, &community(name)).await.expect_problem(422, "invalid_name");
    }
    for (body, named) in [
        (r#"{"name":"Book Club","owner":"asha","plan":"pro","private":true}"#, "private"),
        (r#"{"name":"Book Club","plan":"pro"}"#, "owner"),
        (r#"{"name":"","owner":"asha","plan":"pro"}"#, "name"),
        (r#"{"name":"Book Club","owner":"","plan":"pro"}"#, "owner"),
        (r#"{"name":7,"owner":"asha","plan":"pro"}"#, "name"),
        ("not json", "expected"),
    ] {
        let problem = c.post(PATH, WEB, body).await.expect_problem(400, "invalid_request");
        assert!(problem["detail"].as_str().unwrap().contains(named), "{body}: {problem}");
    }
    assert_eq!(c.position().await, position, "refusals append nothing");

    // "Room 2" takes room-2 under its own name; the smallest free suffix skips it.
    for (name, expected) in [("Room", "room"), ("Room 2", "room-2"), ("Room", "room-1")] {
        assert_eq!(slug(c, name).await, expected, "{name:?}");
    }
    server.stop().await;

    let server = Server::start(dir.path()).await;
    let c = &server.client;
    assert_eq!(read(c, "cafe-creme").await.expect(200), cafe);
    assert_eq!(slug(c, "Café Crème").await, "cafe-creme-1");
    assert_eq!(slug(c, "Room").await, "room-3");
    // Another tenant has its own slugs.
    let theirs = c.post("/v1/other/communities", OTHER, &community("Café Crème")).await.expect(201);
    assert_eq!(theirs["slug"], "cafe-creme");
    c.get("/v1/other/communities/room", OTHER).await.expect_problem(404, "not_found");
    server.stop().await;
}
