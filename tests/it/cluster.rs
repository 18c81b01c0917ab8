//! Cluster mode against real NATS servers (JetStream, R3, `sync_interval:
//! always`) and real `ledger serve` processes: forwarding, failover by SIGKILL,
//! fencing by SIGSTOP, idempotency across failover, a corrupt message, a NATS
//! server killed. The NATS binary is `make nats`'s (`.venv/bin/nats-server`)
//! or `$NATS_SERVER`; without it these tests say so and pass, except where
//! `LEDGER_REQUIRE_NATS` is set (CI), where a missing server is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use booking_ledger::cluster::partition_of;

use crate::cluster_harness::{CLUSTER_WAIT_MAX, Cluster, DATE};
use crate::eventually::eventually;
use crate::support::{Client, Reply, booking};

/// The acknowledged bookings of a run: booking id -> (slot, token).
type Acknowledged = BTreeMap<String, (u64, String)>;

/// Books `slots` distinct slots (several clients per slot) through every node in turn.
async fn book_through_all(cluster: &Cluster, tenant: &str, doctor: &str, slots: std::ops::Range<u32>, acknowledged: &mut Acknowledged) {
    let clients: Vec<Client> = cluster.live().map(|(_, n)| n.client.clone()).collect();
    let secret = Arc::new(cluster.secret.clone());
    let mut tasks = Vec::new();
    for slot in slots {
        for attempt in 0..2 {
            let client = clients[(slot as usize + attempt) % clients.len()].clone();
            let (secret, tenant, doctor) = (secret.clone(), tenant.to_owned(), doctor.to_owned());
            tasks.push(tokio::spawn(async move {
                let body = booking("kochi", &doctor, DATE, slot, &format!("p{slot}-{attempt}"));
                client.post(&format!("/v1/{tenant}/bookings"), &secret, &body).await
            }));
        }
    }
    for task in tasks {
        let reply: Reply = task.await.unwrap();
        match reply.status {
            201 => {
                let json = reply.json();
                let id = json["booking_id"].as_str().unwrap().to_owned();
                acknowledged.insert(id, (json["slot"].as_u64().unwrap(), json["token"].as_str().unwrap().to_owned()));
            }
            // Refused (the slot is taken), or caught in a failover: neither is acknowledged.
            409 | 503 => {}
            status => panic!("unexpected {status}: {}", String::from_utf8_lossy(&reply.body)),
        }
    }
}

/// A read, retried while the partition fails over (503).
async fn settled_get(cluster: &Cluster, client: &Client, path: &str) -> Reply {
    settled(cluster, client, "GET", path, None, None).await
}

/// A request retried on 503 (a lease not confirmed in time on a loaded
/// machine, a partition failing over), as a client honouring `Retry-After`
/// would. A write carries an `Idempotency-Key` (`key`, or a fresh one), so a
/// retry of a command whose outcome was unknown executes it at most once.
async fn settled(cluster: &Cluster, client: &Client, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> Reply {
    let fresh = uuid::Uuid::new_v4().to_string();
    let key = if method == "GET" { None } else { Some(key.unwrap_or(&fresh)) };
    eventually(cluster.with_logs(format!("{method} {path} is answered, not 503")), CLUSTER_WAIT_MAX, async || {
        let reply = client.send(method, path, Some(&cluster.secret), body, key).await;
        if reply.status != 503 { Ok(reply) } else { Err(reply) }
    })
    .await
}

/// Every acknowledged booking is there with its token, exactly one active booking per slot, tokens unique.
async fn check(cluster: &Cluster, tenant: &str, doctor: &str, acknowledged: &Acknowledged) {
    let (_, node) = cluster.live().next().unwrap();
    for (id, (slot, token)) in acknowledged {
        let reply = settled_get(cluster, &node.client, &format!("/v1/{tenant}/bookings/{id}")).await;
        if reply.status != 200 {
            panic!("acknowledged booking {id}: {} {}{}", reply.status, String::from_utf8_lossy(&reply.body), cluster.logs());
        }
        let json = reply.json();
        assert_eq!((json["slot"].as_u64().unwrap(), json["token"].as_str().unwrap()), (*slot, token.as_str()), "booking {id}");
    }
    let slots = settled_get(cluster, &node.client, &format!("/v1/{tenant}/clinics/kochi/slots?date={DATE}&doctor={doctor}")).await;
    assert_eq!(slots.status, 200, "{}", String::from_utf8_lossy(&slots.body));
    let slots = slots.json();
    let mut held = BTreeSet::new();
    let mut tokens = BTreeSet::new();
    for doctor_view in slots["doctors"].as_array().unwrap() {
        for slot in doctor_view["slots"].as_array().unwrap() {
            if slot["state"] == "booked" {
                assert!(held.insert(slot["slot"].as_u64().unwrap()), "slot held twice: {slot}");
                assert!(tokens.insert(slot["token"].as_str().unwrap().to_owned()), "token repeated: {slot}");
            }
        }
    }
    let acknowledged_slots: BTreeSet<u64> = acknowledged.values().map(|(slot, _)| *slot).collect();
    assert_eq!(acknowledged_slots.len(), acknowledged.len(), "two acknowledged bookings of one slot");
    assert!(acknowledged_slots.is_subset(&held), "an acknowledged booking's slot is free");
}

/// The first message of a Server-Sent Events stream (up to its blank line).
/// A 503 (a lease not confirmed in time on a loaded machine, a leader moving)
/// is retried as a client following `Retry-After` would.
async fn first_message(client: &Client, path: &str, token: &str) -> String {
    let mut response = eventually(format!("GET {path} opens a stream"), CLUSTER_WAIT_MAX, async || {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", client.base))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        assert!(status == 503, "{status} {body}");
        Err(body)
    })
    .await;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.expect("a message within 10 s").unwrap();
        text += &String::from_utf8_lossy(&chunk.expect("the stream stays open"));
    }
    text
}

async fn schedule(cluster: &Cluster, tenant: &str, doctor: &str) {
    let body = r#"{"slots_per_day": 400, "first_slot": "09:00", "slot_minutes": 1}"#;
    let path = format!("/v1/{tenant}/clinics/kochi/doctors/{doctor}/schedule");
    settled(cluster, cluster.client(0), "PUT", &path, Some(body), None).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_answers_with_the_leaders_decision_and_a_sigkilled_leader_loses_nothing() {
    let Some(mut cluster) = Cluster::start(3).await else { return };
    let tenant = "kloqo";
    let (leader, _) = cluster.wait_leader(tenant, None).await;
    schedule(&cluster, tenant, "rao").await;

    // Forwarding: every node answers with the leader's decision, naming it.
    for i in 0..3 {
        let reply = settled_get(&cluster, cluster.client(i), &format!("/v1/{tenant}/clinics/kochi/slots?date={DATE}")).await;
        assert_eq!(reply.status, 200, "node {i}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.header("ledger-node"), Some(leader.as_str()), "node {i}");
    }
    // The dashboard is served by every node; its calls are served or forwarded like any other.
    for i in 0..3 {
        let page = cluster.client(i).send("GET", "/ui/", None, None, None).await;
        assert_eq!(page.status, 200, "node {i}");
    }
    // A live slots stream through a node that does not lead the partition: forwarded, and it carries the day.
    let follower = (0..3).find(|i| cluster.node_index(&leader) != *i).unwrap();
    let stream =
        first_message(cluster.client(follower), &format!("/v1/{tenant}/clinics/kochi/slots/stream?date={DATE}"), &cluster.secret).await;
    assert!(stream.contains("event: day"), "{stream}");

    // Every node alive in the view once each has seen the others' heartbeats.
    eventually("the view has every node alive", CLUSTER_WAIT_MAX, async || {
        let view = cluster.view().await;
        assert_eq!(view["partitions"].as_array().unwrap().len(), cluster.partitions as usize);
        let alive = view["nodes"].as_array().unwrap().iter().filter(|n| n["alive"] == true).count();
        if alive == 3 { Ok(()) } else { Err(view) }
    })
    .await;

    let mut acknowledged = Acknowledged::new();
    let mut failovers = Vec::new();
    let mut next_slot = 1;
    for round in 0..3 {
        let (leader, _) = cluster.wait_leader(tenant, None).await;
        // 40 bookings acknowledged before the kill, however many a loaded machine
        // answers 503 (a lease not confirmed in time): fresh slots until then.
        let target = acknowledged.len() + 40;
        eventually(cluster.with_logs(format!("round {round}: 40 bookings acknowledged")), CLUSTER_WAIT_MAX, async || {
            assert!(next_slot < 390, "the day ran out of slots: {} acknowledged", acknowledged.len());
            let slots = next_slot..next_slot + 10;
            next_slot += 10;
            book_through_all(&cluster, tenant, "rao", slots, &mut acknowledged).await;
            if acknowledged.len() >= target { Ok(()) } else { Err(acknowledged.len()) }
        })
        .await;
        let i = cluster.node_index(&leader);
        cluster.kill(i);
        // Booking while the partition fails over: answers are 201, 409 or 503, never lost.
        let slots = next_slot..next_slot + 20;
        next_slot += 20;
        book_through_all(&cluster, tenant, "rao", slots, &mut acknowledged).await;
        let (new_leader, took) = cluster.wait_leader(tenant, Some(&leader)).await;
        failovers.push(took);
        assert_ne!(new_leader, leader, "round {round}");
        check(&cluster, tenant, "rao", &acknowledged).await;
        cluster.restart(i).await;
    }
    eprintln!("failover times: {failovers:?}; acknowledged bookings: {}", acknowledged.len());
    assert!(acknowledged.len() >= 100, "too few bookings acknowledged to mean anything: {}", acknowledged.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_is_fenced_and_never_acknowledges_what_it_decided_on_stale_state() {
    let Some(cluster) = Cluster::start(3).await else { return };
    let tenant = "fence";
    let (leader, _) = cluster.wait_leader(tenant, None).await;
    schedule(&cluster, tenant, "rao").await;
    let old = cluster.node_index(&leader);
    let path = format!("/v1/{tenant}/bookings");
    let first =
        settled(&cluster, cluster.client(old), "POST", &path, Some(&booking("kochi", "rao", DATE, 1, "first")), None).await.expect(201);

    cluster.pause(old);
    // Sent to the paused leader: it sits in the socket until the leader runs again,
    // and then meets a writer whose state is stale.
    let pending = {
        let (client, secret, path) = (Client::new(cluster.client(old).addr()), cluster.secret.clone(), path.clone());
        tokio::spawn(async move { client.try_send("POST", &path, &secret, &booking("kochi", "rao", DATE, 2, "stale")).await })
    };
    let (new_leader, _) = cluster.wait_leader(tenant, Some(&leader)).await;
    let new = cluster.node_index(&new_leader);
    let fresh =
        settled(&cluster, cluster.client(new), "POST", &path, Some(&booking("kochi", "rao", DATE, 2, "fresh")), None).await.expect(201);
    cluster.resume(old);

    let stale = match pending.await.unwrap() {
        Ok(reply) => reply,
        Err(error) => panic!("the paused leader did not answer: {error}{}", cluster.logs()),
    };
    eprintln!(
        "the paused leader's request: {} from {:?}: {}",
        stale.status,
        stale.header("ledger-node"),
        String::from_utf8_lossy(&stale.body)
    );
    assert_ne!(
        stale.status,
        201,
        "the paused leader acknowledged a booking of a slot its successor gave: {}",
        String::from_utf8_lossy(&stale.body)
    );
    if stale.header("ledger-node") == Some(leader.as_str()) {
        // Either it knew its lease was no longer confirmed (503 no_leader), or its
        // append was refused by the fence (503, outcome unknown: it was not stored).
        // Never a decision.
        match stale.code().as_str() {
            "no_leader" => {}
            _ => assert_eq!(stale.expect_problem(503, "storage_unavailable")["outcome"], "unknown"),
        }
    }
    // The old leader stops writing the partition: it forwards to the new one.
    eventually(cluster.with_logs("the old leader forwards the partition to the new one"), CLUSTER_WAIT_MAX, async || {
        let reply = cluster.client(old).get(&format!("/v1/{tenant}/clinics/kochi/slots?date={DATE}"), &cluster.secret).await;
        if reply.status == 200 && reply.header("ledger-node") == Some(new_leader.as_str()) { Ok(()) } else { Err(reply) }
    })
    .await;
    let mut acknowledged = Acknowledged::new();
    for reply in [&first, &fresh] {
        let id = reply["booking_id"].as_str().unwrap().to_owned();
        acknowledged.insert(id, (reply["slot"].as_u64().unwrap(), reply["token"].as_str().unwrap().to_owned()));
    }
    check(&cluster, tenant, "rao", &acknowledged).await;
    let slots = settled_get(&cluster, cluster.client(old), &format!("/v1/{tenant}/clinics/kochi/slots?date={DATE}")).await.expect(200);
    let slot2 = &slots["doctors"][0]["slots"][2];
    assert_eq!(slot2["booking_id"], fresh["booking_id"], "slot 2 belongs to the successor's booking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_answer_from_the_old_leader_is_repeated_byte_for_byte_by_the_new_one() {
    let Some(mut cluster) = Cluster::start(3).await else { return };
    let tenant = "keys";
    let (leader, _) = cluster.wait_leader(tenant, None).await;
    schedule(&cluster, tenant, "rao").await;
    let old = cluster.node_index(&leader);
    let path = format!("/v1/{tenant}/bookings");
    let (body, taken) = (booking("kochi", "rao", DATE, 7, "Asha"), booking("kochi", "rao", DATE, 7, "Ben"));
    let booked = settled(&cluster, cluster.client(old), "POST", &path, Some(&body), Some("asha-1")).await;
    booked.expect(201);
    // A keyed refusal appends no event: its answer travels on the answers subject.
    let refused = settled(&cluster, cluster.client(old), "POST", &path, Some(&taken), Some("ben-1")).await;
    refused.expect_problem(409, "slot_taken");

    cluster.kill(old);
    let (new_leader, _) = cluster.wait_leader(tenant, Some(&leader)).await;
    let other = (0..3).find(|i| *i != old).unwrap();
    for (reply, request, key) in [(&booked, &body, "asha-1"), (&refused, &taken, "ben-1")] {
        let again = settled(&cluster, cluster.client(other), "POST", &path, Some(request), Some(key)).await;
        assert_eq!((again.status, &again.body), (reply.status, &reply.body), "{key}: not the stored answer");
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{key}");
        assert_eq!(again.header("ledger-node"), Some(new_leader.as_str()), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_message_on_the_stream_is_reported_with_its_sequence_never_served() {
    let Some(cluster) = Cluster::start(2).await else { return };
    let tenant = "rot";
    cluster.wait_leader(tenant, None).await;
    schedule(&cluster, tenant, "rao").await;
    let path = format!("/v1/{tenant}/bookings");
    settled(&cluster, cluster.client(0), "POST", &path, Some(&booking("kochi", "rao", DATE, 1, "Asha")), None).await.expect(201);

    // Published past the ledger: a record whose CRC does not match.
    let partition = partition_of(tenant, cluster.partitions);
    let client = async_nats::connect(cluster.nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut record = Vec::new();
    booking_ledger::log::frame::encode_record(&mut record, 3, &[7; 32], b"forged");
    record[20] ^= 1;
    let ack = js.publish(format!("ledger.p{partition}.events"), record.into()).await.unwrap().await.unwrap();
    let sequence = ack.sequence;

    // The leader's next append is refused (the stream moved), it reloads, and
    // meets the bad record: every node reports it with its sequence.
    let refused = cluster.client(1).post(&path, &cluster.secret, &booking("kochi", "rao", DATE, 2, "Ben")).await;
    assert_ne!(refused.status, 201, "a booking acknowledged on top of a corrupt stream");
    // (Until it reloads, the old writer's published state, all of it
    // acknowledged, may still answer reads.)
    for i in 0..2 {
        eventually(format!("node {i} reports the corrupt message"), CLUSTER_WAIT_MAX, async || {
            let reply = cluster.client(i).get(&format!("/v1/{tenant}/clinics/kochi/slots?date={DATE}"), &cluster.secret).await;
            if reply.status == 503 && reply.code() == "unavailable" {
                let detail = reply.json()["detail"].as_str().unwrap().to_owned();
                assert!(detail.contains(&format!("sequence {sequence}")), "{detail}");
                return Ok(());
            }
            Err(reply)
        })
        .await;
    }

    // `ledger verify` against the cluster's streams names it too.
    let output = Command::new(env!("CARGO_BIN_EXE_ledger")).args(["verify", "--config"]).arg(cluster.config(0)).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("sequence {sequence}")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_on_when_the_nats_server_leading_the_stream_is_killed() {
    let Some(mut cluster) = Cluster::start(3).await else { return };
    let tenant = "natskill";
    cluster.wait_leader(tenant, None).await;
    schedule(&cluster, tenant, "rao").await;
    let mut acknowledged = Acknowledged::new();
    book_through_all(&cluster, tenant, "rao", 1..41, &mut acknowledged).await;

    let client = async_nats::connect(cluster.nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream_name = booking_ledger::cluster::stream::stream_name(partition_of(tenant, cluster.partitions));
    let info = js.get_stream(&stream_name).await.unwrap().get_info().await.unwrap();
    let stream_leader = info.cluster.and_then(|c| c.leader).expect("a replicated stream has a leader");
    drop(js);
    cluster.kill_nats(&stream_leader);

    let started = Instant::now();
    let mut next = 41;
    let before = acknowledged.len();
    eventually(
        cluster.with_logs(format!("40 more bookings are acknowledged after killing {stream_leader}")),
        CLUSTER_WAIT_MAX,
        async || {
            let had = acknowledged.len();
            book_through_all(&cluster, tenant, "rao", next..next + 10, &mut acknowledged).await;
            // The same slots again until they are taken (a refused or unknown outcome takes none for sure).
            if acknowledged.len() > had {
                next += 10;
            }
            if acknowledged.len() >= before + 40 { Ok(()) } else { Err(acknowledged.len() - before) }
        },
    )
    .await;
    eprintln!("writes resumed {:?} after killing {stream_leader}", started.elapsed());
    check(&cluster, tenant, "rao", &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_whose_partition_was_loaded_by_another_has_its_append_refused() {
    use booking_ledger::cluster::{ClusterConfig, connect, stream};
    use booking_ledger::log::{FileLogOptions, Log, LogError};
    let Some(cluster) = Cluster::start_with(0, 1, 2).await else { return };
    let config = ClusterConfig {
        nats: vec![cluster.nats_url()],
        node: "test".into(),
        advertise: "http://127.0.0.1:1".into(),
        partitions: 1,
        replicas: 3,
        lease_secs: 2,
    };
    let (_client, js) = connect(&config).await.unwrap();
    eventually("JetStream creates the stream", CLUSTER_WAIT_MAX, async || stream::ensure_stream(&js, 0, 3).await).await;
    let load = |name: &'static str| {
        let (js, dirs) = (js.clone(), stream::PartitionDirs::new(&cluster.path().join(name), 0));
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Handle::current().block_on(stream::load(&js, 0, &dirs, FileLogOptions::default(), name))
        })
    };
    let mut first = load("first").await.unwrap().unwrap();
    // The writer's thread calls sync; a blocking thread stands in for it.
    let mut first = tokio::task::spawn_blocking(move || {
        first.events.append(b"first's record").unwrap();
        first.events.sync().unwrap();
        first
    })
    .await
    .unwrap();
    // A successor loads the partition (fetching first's record) and fences it.
    let mut second = load("second").await.unwrap().unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        first.events.append(b"a stale record").unwrap();
        first.events.sync()
    })
    .await
    .unwrap();
    assert!(matches!(refused, Err(LogError::Fenced(_))), "{refused:?}");
    tokio::task::spawn_blocking(move || {
        second.events.append(b"second's record").unwrap();
        second.events.sync().unwrap();
        assert_eq!(second.events.position_next(), 3, "the successor's record follows first's");
    })
    .await
    .unwrap();
}
