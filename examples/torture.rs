//! `make torture CYCLES=N`: the crash loop of issue 9. Starts the real release
//! server on one data directory, runs 16 concurrent clients (bookings,
//! cancellations, idempotent repeats, phone claims, calls, communities) for a
//! random 0.2-2 s, with holds (confirmed, or left to expire) and reschedules
//! mixed in, SIGKILLs it, restarts it, and checks after every cycle:
//!
//! - every command acknowledged in the cycle is there with the same answer
//!   (the booking and its token, the community and its slug, the claim and
//!   the number, the call), and so is a rotating sample of older ones;
//! - every acknowledged booking not cancelled holds its slot in the clinic's
//!   day (the one its last acknowledged reschedule gave it), with its token;
//!   no slot has two, no token was issued twice;
//! - no slot is shown held past its hold's `expires_at`;
//! - keyed commands cut off by the kill resolve when repeated (replayed if
//!   they were durable, executed once if not), and repeats of acknowledged
//!   keyed commands are byte-identical, with `Idempotent-Replayed: true`;
//! - `GET /audit` is clean.
//!
//! At the end every acknowledged command is checked once more, and `ledger
//! verify` and `ledger audit` must pass. Prints cycles, acknowledged, lost and
//! duplicated; exits 1 on any loss, duplicate or unexpected answer.
//!
//! An example, not a test, so that `cargo test` does not run it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// The `ledger` binary (the release build).
    #[arg(long, default_value = "target/release/ledger")]
    ledger: PathBuf,
    #[arg(long, default_value_t = 25)]
    cycles: u64,
    #[arg(long, default_value_t = 16)]
    clients: u64,
    /// The seed of the cycle lengths and the clients' choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The data directory (default: a new temporary one, deleted after a clean run).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Each client waits this long between requests: at full speed 16 clients
    /// acknowledge ~16,000 commands a second, and a thousand cycles would hold
    /// ~9 GB of Idempotency-Keys (retained 24 h) and restart ever slower.
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
}

const TENANT: &str = "torture";
const DOCTORS: u64 = 8;
const SLOTS: u64 = 20;
/// Four days a month ahead of the run, open all along (a day closes two days after it).
fn dates() -> &'static [String; 4] {
    static DATES: std::sync::OnceLock<[String; 4]> = std::sync::OnceLock::new();
    DATES.get_or_init(|| std::array::from_fn(|i| (chrono::Utc::now().date_naive() + chrono::Days::new(30 + i as u64)).to_string()))
}
/// Older acknowledged commands re-checked after each cycle.
const SAMPLE_LEN: usize = 200;
/// Keyed requests each client keeps to repeat.
const KEYED_KEPT: usize = 64;
/// Area codes of valid US numbers, one per client: its calls and its businesses' numbers.
const AREAS: [u32; 16] = [212, 213, 312, 415, 424, 646, 718, 917, 202, 305, 404, 503, 617, 702, 713, 206];

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn digest(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// A booking's answer without what a cancellation or an attendance mark
/// changes (status, position, version).
fn booking_digest(body: &Value) -> u64 {
    let mut body = body.clone();
    let object = body.as_object_mut().expect("a booking is an object");
    object.remove("status");
    object.remove("position");
    object.remove("version");
    digest(&body.to_string())
}

/// A US number in E.164 no other call or business of the run gets: one area
/// code per client, one exchange and line per counter.
fn number(area: u32, n: u64) -> String {
    let mut exchange = 220 + (n / 10_000) % 700;
    if exchange % 100 == 11 || exchange == 555 {
        exchange += 1;
    }
    format!("+1{area}{exchange}{:04}", n % 10_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    No,
    /// A cancellation was sent and its answer never came.
    Maybe,
    Yes,
}

#[derive(Debug, Clone)]
struct Booking {
    /// `(doctor, date, slot)`.
    slot: (String, String, u64),
    token: String,
    digest: u64,
    cancel: Cancel,
    /// A reschedule was sent and its answer never came: where it is is unknown.
    moved_maybe: bool,
}

/// An acknowledged command with an effect to find again.
#[derive(Debug, Clone)]
enum Effect {
    Booking(String),
    Community {
        slug: String,
        digest: u64,
    },
    /// A completed claim: the business and the answer to `complete`.
    Number {
        business: String,
        digest: u64,
    },
    Call {
        call_id: String,
        digest: u64,
    },
    /// A claim: pending with this id, or completed since.
    Claim {
        business: String,
        claim_id: String,
    },
}

/// A keyed request whose answer came: repeating it must give the same bytes.
#[derive(Debug, Clone)]
struct Keyed {
    path: String,
    body: String,
    key: String,
    status: u16,
    answer: Vec<u8>,
}

/// What the clients were told, across every cycle.
#[derive(Default)]
struct Model {
    bookings: HashMap<String, Booking>,
    /// `(doctor, date, token)` -> booking id: a token issued twice shows here.
    tokens: HashMap<(String, String, String), String>,
    slugs: HashMap<String, String>,
    numbers: HashMap<String, String>,
    call_ids: HashSet<String>,
    /// Acknowledged bookings no client has tried to cancel yet.
    active: Vec<String>,
    /// Acknowledged holds: id and expiry (RFC 3339), for confirmations and the expiry check.
    holds: HashMap<String, String>,
    /// Every acknowledged effect, in order: the rotating sample reads it.
    effects: Vec<Effect>,
    /// Effects acknowledged in the current cycle.
    fresh: Vec<Effect>,
    /// Keyed requests cut off by a kill, to repeat after the restart.
    unknown: Vec<(String, String, String)>,
    sample_at: usize,
    counts: Counts,
}

#[derive(Default, Debug, Clone)]
struct Counts {
    acknowledged: u64,
    bookings: u64,
    cancels: u64,
    reschedules: u64,
    holds: u64,
    refusals: u64,
    repeats: u64,
    claims: u64,
    numbers: u64,
    calls: u64,
    communities: u64,
    /// Acknowledged commands found again after a restart (one command may be checked many times).
    checked: u64,
    unknown_replayed: u64,
    unknown_executed: u64,
    lost: u64,
    duplicated: u64,
    unexpected: u64,
}

impl Model {
    fn lost(&mut self, what: String) {
        eprintln!("LOST: {what}");
        self.counts.lost += 1;
    }

    fn duplicated(&mut self, what: String) {
        eprintln!("DUPLICATED: {what}");
        self.counts.duplicated += 1;
    }

    fn unexpected(&mut self, what: String) {
        eprintln!("UNEXPECTED: {what}");
        self.counts.unexpected += 1;
    }

    fn booked(&mut self, body: &Value) {
        let id = body["booking_id"].as_str().unwrap().to_owned();
        let slot = (body["doctor"].as_str().unwrap().to_owned(), body["date"].as_str().unwrap().to_owned(), body["slot"].as_u64().unwrap());
        let token = body["token"].as_str().unwrap().to_owned();
        let digest = booking_digest(body);
        if let Some(known) = self.bookings.get(&id) {
            if known.digest != digest {
                self.duplicated(format!("booking {id} acknowledged twice with different answers"));
            }
            return;
        }
        let token_key = (slot.0.clone(), slot.1.clone(), token.clone());
        if let Some(holder) = self.tokens.insert(token_key, id.clone()) {
            self.duplicated(format!("token {token} of {} {} issued to {holder} and {id}", slot.0, slot.1));
        }
        self.bookings.insert(id.clone(), Booking { slot, token, digest, cancel: Cancel::No, moved_maybe: false });
        self.active.push(id.clone());
        self.fresh.push(Effect::Booking(id));
        self.counts.bookings += 1;
    }

    /// A reschedule answered 200: the booking's new place, token and answer.
    fn moved(&mut self, body: &Value) {
        let id = body["booking_id"].as_str().unwrap().to_owned();
        let slot = (body["doctor"].as_str().unwrap().to_owned(), body["date"].as_str().unwrap().to_owned(), body["slot"].as_u64().unwrap());
        let token = body["token"].as_str().unwrap().to_owned();
        let Some(booking) = self.bookings.get(&id).cloned() else {
            return self.unexpected(format!("moved a booking never acknowledged: {id}"));
        };
        if token != booking.token {
            let token_key = (slot.0.clone(), slot.1.clone(), token.clone());
            if let Some(holder) = self.tokens.insert(token_key, id.clone()) {
                self.duplicated(format!("token {token} of {} {} issued to {holder} and {id}", slot.0, slot.1));
            }
        }
        self.bookings.insert(id.clone(), Booking { slot, token, digest: booking_digest(body), moved_maybe: false, ..booking });
        self.counts.reschedules += 1;
    }

    fn community(&mut self, body: &Value) {
        let slug = body["slug"].as_str().unwrap().to_owned();
        let id = body["community_id"].as_str().unwrap().to_owned();
        match self.slugs.get(&slug) {
            Some(known) if *known != id => self.duplicated(format!("slug {slug} given to {known} and {id}")),
            Some(_) => {}
            None => {
                self.slugs.insert(slug.clone(), id);
                self.fresh.push(Effect::Community { slug, digest: digest(&body.to_string()) });
                self.counts.communities += 1;
            }
        }
    }

    fn completed(&mut self, business: &str, body: &Value) {
        let number = body["phone_number"].as_str().unwrap_or_default().to_owned();
        if let Some(owner) = self.numbers.insert(number.clone(), business.to_owned())
            && owner != business
        {
            self.duplicated(format!("number {number} active for {owner} and {business}"));
        }
        self.fresh.push(Effect::Number { business: business.to_owned(), digest: digest(&body.to_string()) });
        self.counts.numbers += 1;
    }

    fn called(&mut self, body: &Value) {
        let call_id = body["call_id"].as_str().unwrap().to_owned();
        if !self.call_ids.insert(call_id.clone()) {
            self.duplicated(format!("call {call_id} started twice"));
            return;
        }
        let mut started = body.clone();
        started.as_object_mut().unwrap().remove("state");
        self.fresh.push(Effect::Call { call_id, digest: digest(&started.to_string()) });
        self.counts.calls += 1;
    }
}

/// The running server.
struct Server {
    child: Child,
    base: String,
    token: String,
}

impl Server {
    fn start(ledger: &Path, data: &Path, log: &Path) -> Server {
        let mut child = Command::new(ledger)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", ledger.display()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let addr = loop {
            let line = lines.next().expect("the server exited before listening").unwrap();
            writeln!(log, "{line}").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
            }
        });
        let token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
        Server { child, base: format!("http://{addr}"), token }
    }

    fn kill(self) {
        drop(self); // SIGKILL
    }
}

impl Drop for Server {
    /// However the run ends (a panic too), the server does not outlive it.
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// A client of one server: raw status, headers and bytes.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

struct Reply {
    status: u16,
    replayed: bool,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    fn new(server: &Server) -> Client {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(64).build().unwrap();
        Client { http, base: server.base.clone(), token: server.token.clone() }
    }

    /// `None` when the server did not answer (killed mid-request).
    async fn send(&self, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> Option<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}/v1/{TENANT}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        let body = response.bytes().await.ok()?.to_vec();
        Some(Reply { status, replayed, body })
    }

    async fn get(&self, path: &str) -> Reply {
        for _ in 0..600 {
            if let Some(reply) = self.send("GET", path, None, None).await {
                if reply.status == 503 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("GET {path}: no answer");
    }

    async fn wait_ready(&self) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(600) {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.base)).send().await
                && response.status() == 200
            {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not become ready in 10 minutes");
    }
}

/// One client's load until the server stops answering.
struct Load {
    who: u64,
    cycle: u64,
    seed: u64,
    pause: Duration,
    model: Arc<Mutex<Model>>,
    keyed: Arc<Mutex<Vec<Keyed>>>,
    counter: Arc<Mutex<u64>>,
}

async fn load(client: Client, load: Load) {
    let Load { who, cycle, seed, pause, model, keyed, counter } = load;
    let mut rng = Rng(seed);
    for n in 0u64.. {
        tokio::time::sleep(pause).await;
        let key = (rng.below(2) == 0).then(|| format!("c{cycle}-w{who}-n{n}"));
        let (path, body): (String, String) = match rng.below(100) {
            0..30 => {
                let doctor = format!("d{}", rng.below(DOCTORS));
                let date = &dates()[rng.below(4) as usize];
                let kind = if rng.below(5) == 0 { "walk_in" } else { "advance" };
                let body = json!({"clinic": "c1", "doctor": doctor, "date": date, "slot": rng.below(SLOTS), "patient": format!("p{who}-{n}"), "kind": kind});
                ("/bookings".into(), body.to_string())
            }
            30..35 => {
                // A hold of 30 s (the shortest): most expire across a restart; some are confirmed.
                let doctor = format!("d{}", rng.below(DOCTORS));
                let date = &dates()[rng.below(4) as usize];
                let body = json!({"clinic": "c1", "doctor": doctor, "date": date, "slot": rng.below(SLOTS), "ttl_secs": 30, "patient": format!("h{who}-{n}")});
                ("/holds".into(), body.to_string())
            }
            35..38 => {
                let picked = {
                    let model = model.lock();
                    let ids: Vec<&String> = model.holds.keys().collect();
                    (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize].clone())
                };
                let Some(hold_id) = picked else { continue };
                (format!("/holds/{hold_id}/confirm"), "{}".into())
            }
            38..43 => {
                // Any acknowledged booking, moved to a random slot of its own doctor and
                // day; out of `active` while in flight, so that no two moves of it race
                // in the model (the answers of two could be recorded out of order).
                let picked = {
                    let mut model = model.lock();
                    let len = model.active.len() as u64;
                    (len > 0).then(|| model.active.swap_remove(rng.below(len) as usize))
                };
                let Some(id) = picked else { continue };
                (format!("/bookings/{id}/reschedule"), json!({"slot": rng.below(SLOTS)}).to_string())
            }
            43..55 => {
                // Any acknowledged booking not cancelled yet, of any client and cycle.
                let picked = {
                    let mut model = model.lock();
                    let len = model.active.len() as u64;
                    (len > 0).then(|| model.active.swap_remove(rng.below(len) as usize))
                };
                let Some(id) = picked else { continue };
                (format!("/bookings/{id}/cancel"), json!({"reason": "torture"}).to_string())
            }
            55..70 => {
                let repeat = {
                    let keyed = keyed.lock();
                    (!keyed.is_empty()).then(|| keyed[rng.below(keyed.len() as u64) as usize].clone())
                };
                let Some(repeat) = repeat else { continue };
                let Some(reply) = client.send("POST", &repeat.path, Some(&repeat.body), Some(&repeat.key)).await else { return };
                let mut model = model.lock();
                model.counts.repeats += 1;
                if (reply.status, &reply.body) != (repeat.status, &repeat.answer) || !reply.replayed {
                    model.duplicated(format!(
                        "repeat of {} {} answered {} (replayed: {}) {}, first {} {}",
                        repeat.key,
                        repeat.path,
                        reply.status,
                        reply.replayed,
                        reply.text(),
                        repeat.status,
                        String::from_utf8_lossy(&repeat.answer)
                    ));
                }
                continue;
            }
            70..78 => {
                let business = format!("biz-c{cycle}-w{who}-n{n}");
                let Some(claim) = client.send("POST", &format!("/businesses/{business}/phone-number/claim"), Some("{}"), None).await else {
                    return;
                };
                if claim.status != 201 {
                    model.lock().unexpected(format!("claim of {business}: {} {}", claim.status, claim.text()));
                    continue;
                }
                {
                    let mut model = model.lock();
                    model.counts.claims += 1;
                    model.counts.acknowledged += 1;
                    let claim_id = claim.json()["claim_id"].as_str().unwrap_or_default().to_owned();
                    model.fresh.push(Effect::Claim { business: business.clone(), claim_id });
                }
                let number = {
                    let mut counter = counter.lock();
                    *counter += 1;
                    number(AREAS[who as usize], 2 * *counter + 1)
                };
                let complete = json!({"claim_id": claim.json()["claim_id"], "phone_number": number, "provider_sid": "PN"});
                (format!("/businesses/{business}/phone-number/complete"), complete.to_string())
            }
            78..89 => {
                let to = {
                    let mut counter = counter.lock();
                    *counter += 1;
                    number(AREAS[who as usize], 2 * *counter)
                };
                ("/calls".into(), json!({"campaign": format!("camp-{who}"), "to": to}).to_string())
            }
            _ => {
                let name = format!("Club {}", rng.below(5));
                ("/communities".into(), json!({"name": name, "owner": format!("o{who}"), "plan": "pro"}).to_string())
            }
        };
        let Some(reply) = client.send("POST", &path, Some(&body), key.as_deref()).await else {
            let mut model = model.lock();
            if let Some(key) = key {
                model.unknown.push((path, body, key));
            } else if let Some(id) = path.strip_prefix("/bookings/").and_then(|p| p.strip_suffix("/cancel"))
                && let Some(booking) = model.bookings.get_mut(id)
                && booking.cancel == Cancel::No
            {
                booking.cancel = Cancel::Maybe;
            } else if let Some(id) = path.strip_prefix("/bookings/").and_then(|p| p.strip_suffix("/reschedule"))
                && let Some(booking) = model.bookings.get_mut(id)
            {
                booking.moved_maybe = true;
                model.active.push(id.to_owned());
            }
            return;
        };
        let mut model = model.lock();
        if let Some(key) = &key
            && reply.status < 500
        {
            let mut keyed = keyed.lock();
            if keyed.len() >= KEYED_KEPT {
                let at = rng.below(KEYED_KEPT as u64) as usize;
                keyed.swap_remove(at);
            }
            keyed.push(Keyed {
                path: path.clone(),
                body: body.clone(),
                key: key.clone(),
                status: reply.status,
                answer: reply.body.clone(),
            });
        }
        record(&mut model, &path, &reply);
        if let Some(id) = path.strip_prefix("/bookings/").and_then(|p| p.strip_suffix("/reschedule")) {
            model.active.push(id.to_owned());
        }
    }
}

/// Records one answer in the model.
fn record(model: &mut Model, path: &str, reply: &Reply) {
    let body = reply.json();
    match (path, reply.status) {
        ("/bookings", 201) => {
            model.counts.acknowledged += 1;
            model.booked(&body);
            return;
        }
        ("/bookings", 409) if body["code"] == "slot_taken" || body["code"] == "slot_held" => model.counts.refusals += 1,
        ("/holds", 201) => {
            model.holds.insert(body["hold_id"].as_str().unwrap().to_owned(), body["expires_at"].as_str().unwrap().to_owned());
            model.counts.holds += 1;
        }
        ("/holds", 409) if body["code"] == "slot_taken" || body["code"] == "slot_held" => model.counts.refusals += 1,
        (path, 201) if path.ends_with("/confirm") => {
            model.counts.acknowledged += 1;
            model.booked(&body);
            return;
        }
        // Confirmed before (a repeat), or expired, or its slot out of a shrunk schedule.
        (path, 200 | 409) if path.ends_with("/confirm") => model.counts.refusals += 1,
        (path, 200) if path.ends_with("/reschedule") => model.moved(&body),
        (path, 409 | 422) if path.ends_with("/reschedule") => model.counts.refusals += 1,
        (path, 200) if path.ends_with("/cancel") => {
            let id = body["booking_id"].as_str().unwrap().to_owned();
            if body["status"] != "cancelled" {
                model.unexpected(format!("cancel of {id} answered {body}"));
            }
            match model.bookings.get_mut(&id) {
                Some(booking) => booking.cancel = Cancel::Yes,
                None => model.unexpected(format!("cancelled a booking never acknowledged: {id}")),
            }
            model.counts.cancels += 1;
        }
        (path, 200) if path.ends_with("/complete") => {
            let business = path.trim_start_matches("/businesses/").split('/').next().unwrap().to_owned();
            model.completed(&business, &body);
        }
        ("/calls", 201) => model.called(&body),
        ("/communities", 201) => model.community(&body),
        (path, status) => {
            model.unexpected(format!("POST {path}: {status} {}", reply.text()));
            return;
        }
    }
    model.counts.acknowledged += 1;
}

/// Checks that an acknowledged effect is there, with the same answer.
async fn check_effect(client: &Client, model: &Arc<Mutex<Model>>, effect: &Effect) {
    model.lock().counts.checked += 1;
    match effect {
        Effect::Booking(id) => {
            let Some(booking) = model.lock().bookings.get(id).cloned() else { return };
            let reply = client.get(&format!("/bookings/{id}")).await;
            if reply.status != 200 {
                return model.lock().lost(format!("booking {id}: GET answered {} {}", reply.status, reply.text()));
            }
            let body = reply.json();
            let status = body["status"].as_str().unwrap_or_default();
            let status_ok = match booking.cancel {
                Cancel::No => status == "confirmed",
                Cancel::Yes => status == "cancelled",
                Cancel::Maybe => true,
            };
            if (booking_digest(&body) != booking.digest && !booking.moved_maybe) || !status_ok {
                model.lock().lost(format!("booking {id} changed (cancel {:?}): {body}", booking.cancel));
            }
        }
        Effect::Community { slug, digest: expected } => {
            let reply = client.get(&format!("/communities/{slug}")).await;
            if reply.status != 200 || digest(&reply.json().to_string()) != *expected {
                model.lock().lost(format!("community {slug}: {} {}", reply.status, reply.text()));
            }
        }
        Effect::Number { business, digest: expected } => {
            let reply = client.get(&format!("/businesses/{business}/phone-number")).await;
            if reply.status != 200 || digest(&reply.json().to_string()) != *expected {
                model.lock().lost(format!("the number of {business}: {} {}", reply.status, reply.text()));
            }
        }
        Effect::Claim { business, claim_id } => {
            let reply = client.get(&format!("/businesses/{business}/phone-number")).await;
            let body = reply.json();
            let held = match body["state"].as_str() {
                Some("pending") => body["claim_id"].as_str() == Some(claim_id),
                Some("active") => true,
                _ => false,
            };
            if reply.status != 200 || !held {
                model.lock().lost(format!("claim {claim_id} of {business}: {} {}", reply.status, reply.text()));
            }
        }
        Effect::Call { call_id, digest: expected } => {
            // Calls are read back through their outcome: the same outcome again
            // appends nothing and answers the call; an unknown call is 404.
            let path = format!("/calls/{call_id}/outcome");
            let mut tries = 0;
            let reply = loop {
                // A 503 is no answer (storage down, overloaded): the check waits, as `get` does.
                match client.send("POST", &path, Some(r#"{"outcome":"completed"}"#), None).await {
                    Some(reply) if reply.status != 503 || tries == 600 => break reply,
                    _ => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let mut started = reply.json();
            if let Some(object) = started.as_object_mut() {
                object.remove("state");
            }
            if reply.status != 200 || digest(&started.to_string()) != *expected {
                model.lock().lost(format!("call {call_id}: {} {}", reply.status, reply.text()));
            }
        }
    }
}

/// Checks `effects` with a few requests in flight at once.
async fn check_effects(client: &Client, model: &Arc<Mutex<Model>>, effects: Vec<Effect>) {
    let chunks: Vec<Vec<Effect>> = effects.chunks(effects.len().div_ceil(16).max(1)).map(<[Effect]>::to_vec).collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (client, model) = (client.clone(), model.clone());
            tokio::spawn(async move {
                for effect in &chunk {
                    check_effect(&client, &model, effect).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// The checks after a restart (see the module docs).
async fn check(client: &Client, model: &Arc<Mutex<Model>>) {
    // Keyed commands the kill cut off: replayed if durable, executed once if not.
    let unknown = std::mem::take(&mut model.lock().unknown);
    for (path, body, key) in unknown {
        let reply = loop {
            if let Some(reply) = client.send("POST", &path, Some(&body), Some(&key)).await {
                break reply;
            }
        };
        let mut model = model.lock();
        if reply.replayed {
            model.counts.unknown_replayed += 1;
        } else {
            model.counts.unknown_executed += 1;
        }
        record(&mut model, &path, &reply);
    }
    // This cycle's acknowledged commands, and a rotating sample of older ones.
    let effects = {
        let mut model = model.lock();
        let fresh = std::mem::take(&mut model.fresh);
        let old_len = model.effects.len();
        let mut effects = fresh.clone();
        for _ in 0..SAMPLE_LEN.min(old_len) {
            model.sample_at = (model.sample_at + 1) % old_len;
            effects.push(model.effects[model.sample_at].clone());
        }
        model.effects.extend(fresh);
        effects
    };
    check_effects(client, model, effects).await;
    // Every acknowledged booking not cancelled holds its slot, with its token.
    let mut holders = BTreeMap::new();
    for date in dates() {
        let day = client.get(&format!("/clinics/c1/slots?date={date}")).await.json();
        for doctor in day["doctors"].as_array().into_iter().flatten() {
            let name = doctor["doctor"].as_str().unwrap().to_owned();
            let mut tokens = BTreeSet::new();
            for slot in doctor["slots"].as_array().into_iter().flatten() {
                // (A hold the kill cut off before its answer may still hold a slot: it
                // may have been durable. Only its expiry is checked.)
                if slot["state"] == "held" {
                    let expires_at = slot["expires_at"].as_str().and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
                    if expires_at.is_none_or(|at| at <= chrono::Utc::now()) {
                        model.lock().unexpected(format!("slot {slot} of {name} {date} shown held past its expiry"));
                    }
                }
                if let Some(id) = slot["booking_id"].as_str() {
                    let token = slot["token"].as_str().unwrap().to_owned();
                    if !tokens.insert(token.clone()) {
                        model.lock().duplicated(format!("token {token} held by two slots of {name} {date}"));
                    }
                    holders.insert((name.clone(), date.to_owned(), slot["slot"].as_u64().unwrap()), (id.to_owned(), token));
                }
            }
        }
    }
    let mut model = model.lock();
    let missing: Vec<String> = model
        .bookings
        .iter()
        .filter(|(_, b)| b.cancel == Cancel::No && !b.moved_maybe)
        .filter(|(id, b)| holders.get(&b.slot) != Some(&((*id).clone(), b.token.clone())))
        .map(|(id, b)| format!("booking {id} ({} {}) does not hold slot {:?}: {:?}", b.token, b.slot.1, b.slot, holders.get(&b.slot)))
        .collect();
    for what in missing {
        model.lost(what);
    }
}

async fn audit_clean(client: &Client) -> Result<u64, String> {
    let report = client.get("/audit").await;
    let body = report.json();
    if report.status != 200 || body["violations"].as_array().is_none_or(|v| !v.is_empty()) {
        return Err(format!("GET /audit: {} {}", report.status, report.text()));
    }
    Ok(body["checked_events"].as_u64().unwrap_or(0))
}

fn offline(ledger: &Path, command: &str, data: &Path) -> Result<(), String> {
    let output = Command::new(ledger).arg(command).arg("--data").arg(data).output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ledger {command}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    let temp = tempfile::Builder::new().prefix("torture-").tempdir().unwrap();
    let data = args.data.clone().unwrap_or_else(|| temp.path().join("data"));
    let log = temp.path().join("server.log");
    println!(
        "torture: {} cycles of {} clients, seed {seed}, data {}, server log {}",
        args.cycles,
        args.clients,
        data.display(),
        log.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let failed = runtime.block_on(run(&args, seed, &data, &log));
    match failed {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            println!("torture FAILED: {reason}");
            println!("the data directory and the server's log are kept in {}", temp.keep().display());
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, seed: u64, data: &Path, log: &Path) -> Result<(), String> {
    if args.clients as usize > AREAS.len() {
        return Err(format!("at most {} clients", AREAS.len()));
    }
    let model = Arc::new(Mutex::new(Model::default()));
    let keyed: Vec<Arc<Mutex<Vec<Keyed>>>> = (0..args.clients).map(|_| Arc::default()).collect();
    let counters: Vec<Arc<Mutex<u64>>> = (0..args.clients).map(|_| Arc::default()).collect();
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut server = Server::start(&args.ledger, data, log);
    let mut client = Client::new(&server);
    let mut startup = client.wait_ready().await;
    for d in 0..DOCTORS {
        let body = json!({"slots_per_day": SLOTS}).to_string();
        let reply = client.send("PUT", &format!("/clinics/c1/doctors/d{d}/schedule"), Some(&body), None).await.ok_or("no answer")?;
        if reply.status != 200 {
            return Err(format!("schedule: {} {}", reply.status, reply.text()));
        }
    }
    let mut startup_max = Duration::ZERO;
    for cycle in 1..=args.cycles {
        let length = Duration::from_millis(200 + rng.below(1801));
        let clients: Vec<_> = (0..args.clients)
            .map(|who| {
                let task = Load {
                    who,
                    cycle,
                    seed: rng.next(),
                    pause: Duration::from_millis(args.pause_ms),
                    model: model.clone(),
                    keyed: keyed[who as usize].clone(),
                    counter: counters[who as usize].clone(),
                };
                tokio::spawn(load(client.clone(), task))
            })
            .collect();
        tokio::time::sleep(length).await;
        server.kill();
        for task in clients {
            task.await.map_err(|e| format!("a client panicked: {e}"))?;
        }
        server = Server::start(&args.ledger, data, log);
        client = Client::new(&server);
        startup = client.wait_ready().await.max(startup);
        startup_max = startup_max.max(startup);
        check(&client, &model).await;
        let events = audit_clean(&client).await.map_err(|e| format!("cycle {cycle}: {e}"))?;
        let counts = model.lock().counts.clone();
        println!(
            "cycle {cycle}/{}: {:.1} s of load; {} acknowledged, {} lost, {} duplicated, {} unexpected; {events} events; \
             restart {:.2} s; {:.0} s elapsed",
            args.cycles,
            length.as_secs_f64(),
            counts.acknowledged,
            counts.lost,
            counts.duplicated,
            counts.unexpected,
            startup.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        startup = Duration::ZERO;
        if counts.lost + counts.duplicated + counts.unexpected > 0 {
            break;
        }
    }
    // Every acknowledged command, once more.
    let all = model.lock().effects.clone();
    check_effects(&client, &model, all).await;
    server.kill();
    let verified = offline(&args.ledger, "verify", data);
    let audited = offline(&args.ledger, "audit", data);
    let counts = model.lock().counts.clone();
    println!(
        "torture: cycles {}, acknowledged {} (bookings {}, cancellations {}, reschedules {}, holds {}, refused {}, numbers {} of {} \
         claims, calls {}, communities {}), idempotent repeats {} byte-identical, cut off by a kill and resolved by repeating {} (replayed {}, \
         executed once {}), {} checks of acknowledged commands after restarts, lost {}, duplicated {}, unexpected {}; \
         slowest restart {:.2} s; {:.0} s",
        args.cycles,
        counts.acknowledged,
        counts.bookings,
        counts.cancels,
        counts.reschedules,
        counts.holds,
        counts.refusals,
        counts.numbers,
        counts.claims,
        counts.calls,
        counts.communities,
        counts.repeats - counts.duplicated.min(counts.repeats),
        counts.unknown_replayed + counts.unknown_executed,
        counts.unknown_replayed,
        counts.unknown_executed,
        counts.checked,
        counts.lost,
        counts.duplicated,
        counts.unexpected,
        startup_max.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    verified?;
    audited?;
    println!("ledger verify: clean; ledger audit: clean");
    if counts.lost + counts.duplicated + counts.unexpected > 0 {
        return Err(format!("{} lost, {} duplicated, {} unexpected", counts.lost, counts.duplicated, counts.unexpected));
    }
    Ok(())
}
