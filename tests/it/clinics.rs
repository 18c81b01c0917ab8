//! Every status and code of API.md's "Clinics and bookings", over real HTTP.

use serde_json::{Value, json};

use crate::support::{ADMIN, OTHER, Server, WEB, booking, config};

const DATE: &str = "2026-03-02";

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.client.schedule("kloqo", "c1", "d1", 4).await;
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_is_set_validated_and_guards_booked_slots() {
    let (server, _dir) = server().await;
    let c = &server.client;
    let path = "/v1/kloqo/clinics/c1/doctors/d2/schedule";
    let set = c.put(path, WEB, r#"{"slots_per_day":3,"first_slot":"08:30","slot_minutes":20}"#).await.expect(200);
    assert_eq!(
        set,
        json!({"clinic":"c1","doctor":"d2","slots_per_day":3,"first_slot":"08:30","slot_minutes":20,"position":set["position"]})
    );
    for (body, field) in [
        (r#"{"slots_per_day":0}"#, "slots_per_day"),
        (r#"{"slots_per_day":1001}"#, "slots_per_day"),
        (r#"{"slots_per_day":3,"slot_minutes":0}"#, "slot_minutes"),
        (r#"{"slots_per_day":3,"slot_minutes":481}"#, "slot_minutes"),
        (r#"{"slots_per_day":3,"first_slot":"9am"}"#, "first_slot"),
        (r#"{"slots_per_day":3,"first_slot":"24:00"}"#, "first_slot"),
        (r#"{"slots_per_day":"3"}"#, "slots_per_day"),
        (r#"{"slots_per_day":3,"color":"red"}"#, "color"),
        (r#"{"first_slot":"09:00"}"#, "slots_per_day"),
    ] {
        let problem = c.put(path, WEB, body).await.expect_problem(400, "invalid_request");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{body}: {problem}");
    }
    // Slot 60 of a day from 09:00 every 15 minutes would start at midnight.
    let past_midnight = c.put(path, WEB, r#"{"slots_per_day":61,"first_slot":"09:00","slot_minutes":15}"#).await;
    assert_eq!(past_midnight.expect_problem(422, "slot_out_of_range")["slot"], 60);

    let held = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d2", DATE, 2, "Asha")).await.expect(201);
    let conflict = c.put(path, WEB, r#"{"slots_per_day":2}"#).await.expect_problem(409, "schedule_conflict");
    assert_eq!(conflict["booking_id"], held["booking_id"]);
    assert_eq!((conflict["slot"].clone(), conflict["date"].clone()), (json!(2), json!(DATE)));
    // Growing is always fine, and an unchanged schedule appends nothing.
    let position = c.position().await;
    c.put(path, WEB, r#"{"slots_per_day":3,"first_slot":"08:30","slot_minutes":20}"#).await.expect(200);
    assert_eq!(c.position().await, position);
    c.put(path, WEB, r#"{"slots_per_day":5}"#).await.expect(200);
    assert_eq!(c.position().await, position + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_has_at_most_doctors_per_clinic_max_doctors() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.rules.doctors_per_clinic_max = 2;
    let server = Server::start_with(config).await;
    let c = &server.client;
    c.schedule("kloqo", "c1", "d1", 4).await;
    c.schedule("kloqo", "c1", "d2", 4).await;
    let position = c.position().await;
    let third = c.put("/v1/kloqo/clinics/c1/doctors/d3/schedule", WEB, r#"{"slots_per_day":4}"#).await;
    let third = third.expect_problem(422, "too_many_doctors");
    assert_eq!(third["limit"], 2);
    assert_eq!(third["detail"], "clinic c1 already has 2 doctors, the most a clinic may have");
    assert_eq!(c.position().await, position, "a refusal appends nothing");
    let events = c.get("/v1/kloqo/events?from=1", ADMIN).await.expect(200);
    let types: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["schedule_set", "schedule_set"]);

    // The doctors the clinic has keep changing their schedules; another clinic has its own bound.
    let changed = c.put("/v1/kloqo/clinics/c1/doctors/d2/schedule", WEB, r#"{"slots_per_day":6}"#).await.expect(200);
    assert_eq!((changed["slots_per_day"].as_u64(), changed["position"].as_u64()), (Some(6), Some(position + 1)));
    c.put("/v1/kloqo/clinics/c2/doctors/d3/schedule", WEB, r#"{"slots_per_day":4}"#).await.expect(200);
    let slots = c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02", WEB).await.expect(200);
    let doctors: Vec<&str> = slots["doctors"].as_array().unwrap().iter().map(|d| d["doctor"].as_str().unwrap()).collect();
    assert_eq!(doctors, ["d1", "d2"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_answers_and_tokens() {
    let (server, _dir) = server().await;
    let c = &server.client;
    let created = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await;
    let first = created.expect(201);
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert!(uuid::Uuid::parse_str(first["booking_id"].as_str().unwrap()).is_ok());
    chrono::DateTime::parse_from_rfc3339(first["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({
            "booking_id": first["booking_id"], "token": "A001", "status": "confirmed", "clinic": "c1", "doctor": "d1",
            "date": DATE, "slot": 1, "time": "09:15", "starts_at": "2026-03-02T09:15:00Z", "ends_at": "2026-03-02T09:30:00Z",
            "patient": "Asha", "patient_id": null, "kind": "advance", "version": 1, "position": 2, "created_at": first["created_at"],
        })
    );
    let walk_in = r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":2,"patient":"Ben","kind":"walk_in"}"#;
    let walk_in = c.post("/v1/kloqo/bookings", WEB, walk_in).await.expect(201);
    assert_eq!((walk_in["token"].as_str(), walk_in["kind"].as_str()), (Some("W001"), Some("walk_in")));
    let second = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 0, "Chen")).await.expect(201);
    assert_eq!(second["token"], "A002");
    // Tokens are per (clinic, doctor, date, kind).
    let other_day = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "2026-03-03", 1, "Dev")).await.expect(201);
    assert_eq!(other_day["token"], "A001");

    let taken = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Eve")).await.expect_problem(409, "slot_taken");
    assert_eq!(taken["booking_id"], first["booking_id"]);
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "nobody", DATE, 1, "Eve")).await.expect_problem(404, "unknown_doctor");
    c.post("/v1/kloqo/bookings", WEB, &booking("c2", "d1", DATE, 1, "Eve")).await.expect_problem(404, "unknown_doctor");
    let range = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 4, "Eve")).await.expect_problem(422, "slot_out_of_range");
    assert_eq!(range["slots_per_day"], 4);

    let fetched = c.get(&format!("/v1/kloqo/bookings/{}", first["booking_id"].as_str().unwrap()), WEB).await.expect(200);
    assert_eq!(fetched, first);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_naming_the_field() {
    let (server, _dir) = server().await;
    let c = &server.client;
    let position = c.position().await;
    let long = "x".repeat(201);
    for (body, named) in [
        ("{\"clinic\":\"c1\",", "EOF"),
        ("not json", "expected"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":1}"#, "patient"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":"1","patient":"A"}"#, "slot"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":-1,"patient":"A"}"#, "slot"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":1,"patient":"A","vip":true}"#, "vip"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-02-30","slot":1,"patient":"A"}"#, "date"),
        (r#"{"clinic":"c1","doctor":"d1","date":"02/03/2026","slot":1,"patient":"A"}"#, "date"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":1,"patient":""}"#, "patient"),
        (&format!(r#"{{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":1,"patient":"{long}"}}"#), "patient"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":1,"patient":"A","kind":"urgent"}"#, "kind"),
        (
            r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":1,"patient":"A","external_created_at":"yesterday"}"#,
            "external_created_at",
        ),
        (r#"{"clinic":"","doctor":"d1","date":"2026-03-02","slot":1,"patient":"A"}"#, "clinic"),
        (r#"{"clinic":"c1","doctor":"d1","date":"2026-03-02","slot":1,"patient":"A"} {}"#, "trailing"),
    ] {
        let problem = c.post("/v1/kloqo/bookings", WEB, body).await.expect_problem(400, "invalid_request");
        assert!(problem["detail"].as_str().unwrap().contains(named), "{body}: {problem}");
    }
    // A patient of exactly 200 characters (not bytes) is fine.
    let name = "é".repeat(200);
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 3, &name)).await.expect(201);
    assert_eq!(c.position().await, position + 1, "only the valid booking appended");

    // Exactly 64 KiB is accepted (and then refused for its patient's length, a 400); one byte more is 413.
    let body_of = |len: usize| {
        let shell = booking("c1", "d1", DATE, 1, "");
        let padding = "x".repeat(len - shell.len());
        shell.replace("\"patient\":\"\"", &format!("\"patient\":\"{padding}\""))
    };
    assert_eq!(body_of(64 * 1024).len(), 64 * 1024);
    c.post("/v1/kloqo/bookings", WEB, &body_of(64 * 1024)).await.expect_problem(400, "invalid_request");
    c.post("/v1/kloqo/bookings", WEB, &body_of(64 * 1024 + 1)).await.expect_problem(413, "payload_too_large");
    c.get("/v1/kloqo/bookings/not-a-uuid", WEB).await.expect_problem(400, "invalid_request");
    c.get("/v1/kloqo/clinics/c1/slots", WEB).await.expect_problem(400, "invalid_request");
    c.get("/v1/kloqo/clinics/c1/slots?date=tomorrow", WEB).await.expect_problem(400, "invalid_request");
    c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02&colour=red", WEB).await.expect_problem(400, "invalid_request");
    c.get("/v1/Not_A_Tenant/clinics/c1/slots?date=2026-03-02", ADMIN).await.expect_problem(400, "invalid_request");
    c.get("/v1/kloqo/nowhere", WEB).await.expect_problem(404, "not_found");
    c.send("DELETE", "/v1/kloqo/bookings", Some(WEB), None, None).await.expect_problem(405, "method_not_allowed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_tenant_grants() {
    let (server, _dir) = server().await;
    let c = &server.client;
    let body = booking("c1", "d1", DATE, 1, "Asha");
    c.send("POST", "/v1/kloqo/bookings", None, Some(&body), None).await.expect_problem(401, "unauthenticated");
    c.send("POST", "/v1/kloqo/bookings", Some("not-a-token-at-all"), Some(&body), None).await.expect_problem(401, "unauthenticated");
    c.post("/v1/kloqo/bookings", OTHER, &body).await.expect_problem(403, "forbidden");
    c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02", OTHER).await.expect_problem(403, "forbidden");
    // Authentication comes before the body is looked at.
    c.send("POST", "/v1/kloqo/bookings", None, Some("not json"), None).await.expect_problem(401, "unauthenticated");
    // Tenants are isolated: the same clinic name in another tenant is another clinic.
    c.post("/v1/other/bookings", OTHER, &body).await.expect_problem(404, "unknown_doctor");
    let mine = c.post("/v1/kloqo/bookings", WEB, &body).await.expect(201);
    let id = mine["booking_id"].as_str().unwrap();
    c.get(&format!("/v1/other/bookings/{id}"), OTHER).await.expect_problem(404, "not_found");
    c.get(&format!("/v1/kloqo/bookings/{id}"), ADMIN).await.expect(200);
    server.stop().await;
}

/// The Authorization header is exactly one `Bearer <secret>`: no doubled
/// space, no second header; a refusal names nothing the caller did not send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_header_is_one_bearer_and_one_space() {
    let (server, _dir) = server().await;
    let c = &server.client;
    let path = "/v1/kloqo/clinics/c1/slots?date=2026-03-02";
    let bearer = format!("Bearer {WEB}");
    c.send_with_headers("GET", path, &[("authorization", &bearer)], None).await.expect(200);
    c.send_with_headers("GET", path, &[("authorization", &format!("bearer {WEB}"))], None).await.expect(200);
    let doubled = format!("Bearer  {WEB}");
    c.send_with_headers("GET", path, &[("authorization", &doubled)], None).await.expect_problem(401, "unauthenticated");
    let twice = [("authorization", bearer.as_str()), ("authorization", bearer.as_str())];
    c.send_with_headers("GET", path, &twice, None).await.expect_problem(401, "unauthenticated");
    let forbidden = c.get(path.replace("kloqo", "other").as_str(), WEB).await.expect_problem(403, "forbidden");
    assert!(!forbidden.to_string().contains("kloqo-web"), "the 403 names no token: {forbidden}");
    server.stop().await;
}

/// A date is four digits of year (0001 to 9999), then month and day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_with_year_zero_or_a_sign_are_invalid() {
    let (server, _dir) = server().await;
    let c = &server.client;
    c.put("/v1/kloqo/clinics/c1/doctors/d1/schedule", ADMIN, r#"{"slots_per_day": 4}"#).await.expect(200);
    let before = c.position().await;
    for date in ["0000-01-01", "-001-01-01", "+001-01-01", "2026-02-30", "2026-3-02"] {
        c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", date, 1, "Asha")).await.expect_problem(400, "invalid_request");
        c.get(&format!("/v1/kloqo/clinics/c1/slots?date={date}"), WEB).await.expect_problem(400, "invalid_request");
    }
    // Valid dates: the first, long closed, and the last.
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "0001-01-01", 1, "Asha")).await.expect_problem(409, "day_closed");
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", "9999-12-31", 1, "Asha")).await.expect(201);
    assert_eq!(c.position().await, before + 1, "nothing but the one valid booking was appended");
    server.stop().await;
}

/// A name must read as what it is: not empty to the eye, not reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_or_reordering_names_are_invalid() {
    let (server, _dir) = server().await;
    let c = &server.client;
    c.put("/v1/kloqo/clinics/c1/doctors/d1/schedule", ADMIN, r#"{"slots_per_day": 4}"#).await.expect(200);
    let before = c.position().await;
    for patient in ["\u{200B}", " \u{200B} \u{FEFF}", "Asha\u{202E}gnp.exe", "\u{2067}Ben", "   "] {
        let body = serde_json::json!({ "clinic": "c1", "doctor": "d1", "date": DATE, "slot": 1, "patient": patient }).to_string();
        let problem = c.post("/v1/kloqo/bookings", WEB, &body).await.expect_problem(400, "invalid_request");
        assert_eq!(problem["field"], "patient", "{patient:?}: {problem}");
    }
    assert_eq!(c.position().await, before, "nothing appended");
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Ásha ✓ \u{200D}")).await.expect(201);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_frees_the_slot_but_never_the_token() {
    let (server, _dir) = server().await;
    let c = &server.client;
    let first = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect(201);
    let id = first["booking_id"].as_str().unwrap();
    let cancel = format!("/v1/kloqo/bookings/{id}/cancel");
    let cancelled = c.post(&cancel, WEB, r#"{"reason":"feeling better"}"#).await.expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["token"], "A001");
    let position = c.position().await;
    assert_eq!(cancelled["position"], position);
    let again = c.post(&cancel, WEB, "{}").await.expect(200);
    assert_eq!(again, cancelled);
    assert_eq!(c.position().await, position, "cancelling twice appends nothing");
    c.post(&cancel, WEB, "").await.expect(200); // an empty body reads as {}

    let rebooked = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Ben")).await.expect(201);
    assert_eq!(rebooked["token"], "A002");
    assert_eq!(c.get(&format!("/v1/kloqo/bookings/{id}"), WEB).await.expect(200)["status"], "cancelled");
    let unknown = uuid::Uuid::new_v4();
    c.post(&format!("/v1/kloqo/bookings/{unknown}/cancel"), WEB, "{}").await.expect_problem(404, "not_found");
    c.get(&format!("/v1/kloqo/bookings/{unknown}"), WEB).await.expect_problem(404, "not_found");
    c.post("/v1/kloqo/bookings/123/cancel", WEB, "{}").await.expect_problem(400, "invalid_request");
    c.post(&cancel, WEB, r#"{"why":"x"}"#).await.expect_problem(400, "invalid_request");
    server.stop().await;
}

fn slot(view: &Value, doctor: usize, slot: usize) -> &Value {
    &view["doctors"][doctor]["slots"][slot]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_projection_now_and_as_of_earlier_positions() {
    let (server, _dir) = server().await;
    let c = &server.client;
    c.put("/v1/kloqo/clinics/c1/doctors/d0/schedule", WEB, r#"{"slots_per_day":2}"#).await.expect(200);
    let asha = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect(201);
    let after_asha = asha["position"].as_u64().unwrap();
    let id = asha["booking_id"].as_str().unwrap();
    c.post(&format!("/v1/kloqo/bookings/{id}/cancel"), WEB, "{}").await.expect(200);
    let ben = c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 3, "Ben")).await.expect(201);

    let now = c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02", WEB).await.expect(200);
    assert_eq!((now["clinic"].as_str(), now["date"].as_str()), (Some("c1"), Some(DATE)));
    assert_eq!(now["as_of"], c.position().await);
    let doctors: Vec<&str> = now["doctors"].as_array().unwrap().iter().map(|d| d["doctor"].as_str().unwrap()).collect();
    assert_eq!(doctors, ["d0", "d1"]);
    assert_eq!(slot(&now, 0, 0), &json!({"slot": 0, "state": "free"}), "no times without first_slot and slot_minutes");
    let at = |hh_mm: &str| format!("{DATE}T{hh_mm}:00Z");
    let times = |slot: u32, from: &str, to: &str| json!({"slot": slot, "time": from, "starts_at": at(from), "ends_at": at(to)});
    let free = |slot, from, to| {
        let mut view = times(slot, from, to);
        view["state"] = json!("free");
        view
    };
    assert_eq!(slot(&now, 1, 0), &free(0, "09:00", "09:15"));
    assert_eq!(slot(&now, 1, 1), &free(1, "09:15", "09:30"));
    let mut booked = times(3, "09:45", "10:00");
    for (key, value) in
        [("state", json!("booked")), ("booking_id", ben["booking_id"].clone()), ("token", json!("A002")), ("patient", json!("Ben"))]
    {
        booked[key] = value;
    }
    assert_eq!(slot(&now, 1, 3), &booked);
    assert_eq!(now["doctors"][1]["slots"].as_array().unwrap().len(), 4);

    let only = c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02&doctor=d1", WEB).await.expect(200);
    assert_eq!(only["doctors"].as_array().unwrap().len(), 1);
    let empty = c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-09", WEB).await.expect(200);
    assert!(empty["doctors"][1]["slots"].as_array().unwrap().iter().all(|s| s["state"] == "free"));

    let then = c.get(&format!("/v1/kloqo/clinics/c1/slots?date=2026-03-02&as_of={after_asha}"), WEB).await.expect(200);
    assert_eq!(then["as_of"], after_asha);
    assert_eq!(slot(&then, 1, 1)["booking_id"], asha["booking_id"]);
    assert_eq!(slot(&then, 1, 3)["state"], "free");
    let before_d0 = c.get("/v1/kloqo/clinics/c1/slots?date=2026-03-02&as_of=1", WEB).await.expect(200);
    assert_eq!(before_d0["doctors"].as_array().unwrap().len(), 1, "d0 had no schedule at position 1");
    let beyond = c.position().await + 1;
    c.get(&format!("/v1/kloqo/clinics/c1/slots?date=2026-03-02&as_of={beyond}"), WEB).await.expect_problem(400, "invalid_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_refs_bind_once_and_stale_answers_are_refused() {
    let (server, _dir) = server().await;
    let c = &server.client;
    let now = chrono::Utc::now();
    let external = |slot: u32, correlation: Option<&str>, created: chrono::DateTime<chrono::Utc>| {
        let mut body = json!({"clinic":"c1","doctor":"d1","date":DATE,"slot":slot,"patient":"Asha","external_ref":"cal-77",
            "external_created_at": created.to_rfc3339()});
        if let Some(correlation) = correlation {
            body["correlation_id"] = json!(correlation);
        }
        body.to_string()
    };
    let stale = c.post("/v1/kloqo/bookings", WEB, &external(0, Some("call-1"), now - chrono::Duration::minutes(35))).await;
    let stale = stale.expect_problem(422, "stale_external_booking");
    assert!((35 * 60..35 * 60 + 60).contains(&stale["age_secs"].as_i64().unwrap()), "{stale}");
    // A timestamp from the future would pass the freshness check forever.
    let position = c.position().await;
    for ahead in [chrono::Duration::days(365), chrono::Duration::minutes(35)] {
        let future = c.post("/v1/kloqo/bookings", WEB, &external(0, Some("call-f"), now + ahead)).await;
        let future = future.expect_problem(422, "external_created_in_future");
        assert!(future["ahead_secs"].as_i64().unwrap() >= ahead.num_seconds() - 60, "{future}");
    }
    let year_9999 = json!({"clinic":"c1","doctor":"d1","date":DATE,"slot":0,"patient":"Asha","external_ref":"cal-77",
        "correlation_id":"call-f","external_created_at":"9999-12-31T23:59:59Z"});
    c.post("/v1/kloqo/bookings", WEB, &year_9999.to_string()).await.expect_problem(422, "external_created_in_future");
    assert_eq!(c.position().await, position, "nothing appended");

    let bound = c.post("/v1/kloqo/bookings", WEB, &external(0, Some("call-1"), now)).await.expect(201);
    assert_eq!((bound["external_ref"].as_str(), bound["correlation_id"].as_str()), (Some("cal-77"), Some("call-1")));
    let position = c.position().await;
    let repeat = c.post("/v1/kloqo/bookings", WEB, &external(2, Some("call-1"), now)).await.expect(200);
    assert_eq!(repeat, bound);
    assert_eq!(c.position().await, position, "a repeat appends nothing");
    for other in [Some("call-2"), None] {
        let refused = c.post("/v1/kloqo/bookings", WEB, &external(2, other, now)).await.expect_problem(409, "external_ref_bound");
        assert_eq!((refused["booking_id"].clone(), refused["correlation_id"].clone()), (bound["booking_id"].clone(), json!("call-1")));
    }
    // The order of checks: schedule and range come before the external ref.
    let unknown = json!({"clinic":"c1","doctor":"zz","date":DATE,"slot":0,"patient":"A","external_ref":"cal-77"}).to_string();
    c.post("/v1/kloqo/bookings", WEB, &unknown).await.expect_problem(404, "unknown_doctor");
    // ...and the external ref before freshness and the slot.
    let old_and_bound = external(0, Some("call-9"), now - chrono::Duration::minutes(35));
    c.post("/v1/kloqo/bookings", WEB, &old_and_bound).await.expect_problem(409, "external_ref_bound");
    // The range before the external ref.
    c.post("/v1/kloqo/bookings", WEB, &external(9, Some("call-9"), now)).await.expect_problem(422, "slot_out_of_range");
    // Freshness before the slot: slot 0 is taken, but a stale answer is refused as stale.
    let stale_on_taken = json!({"clinic":"c1","doctor":"d1","date":DATE,"slot":0,"patient":"B","external_ref":"cal-78",
        "external_created_at": (now - chrono::Duration::minutes(35)).to_rfc3339()});
    c.post("/v1/kloqo/bookings", WEB, &stale_on_taken.to_string()).await.expect_problem(422, "stale_external_booking");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_routes() {
    let (server, _dir) = server().await;
    let c = &server.client;
    assert_eq!(c.send("GET", "/healthz", None, None, None).await.expect(200)["status"], "ok");
    assert_eq!(c.send("GET", "/readyz", None, None, None).await.expect(200)["status"], "ready");
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect(201);
    c.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Ben")).await.expect_problem(409, "slot_taken");
    let metrics = c.send("GET", "/metrics", None, None, None).await;
    let text = String::from_utf8(metrics.body).unwrap();
    for line in [
        "ledger_commands_total{outcome=\"accepted\"} 2",
        "ledger_commands_total{outcome=\"slot_taken\"} 1",
        "ledger_events_appended_total 2",
        "ledger_batch_commands_count",
        "ledger_fsync_seconds_count",
        "ledger_queue_depth",
        "ledger_rejections_dropped_total 0",
    ] {
        assert!(text.contains(line), "/metrics lacks {line}:\n{text}");
    }
    // The request id is echoed, or made up when absent.
    let reply = c.send("GET", "/healthz", None, None, None).await;
    assert!(uuid::Uuid::parse_str(reply.header("x-request-id").unwrap()).is_ok());
    server.stop().await;
}

/// Before the projections are rebuilt the server listens but is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_writer_is_set() {
    use booking_ledger::http::{AppState, app, auth::Auth};
    let tokens = crate::support::config(std::path::Path::new("unused")).tokens;
    let clock = std::sync::Arc::new(booking_ledger::writer::SystemClock);
    let state = std::sync::Arc::new(AppState::new(Auth::new(tokens), Default::default(), None, clock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = crate::support::Client::new(listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(state)).await });
    client.send("GET", "/healthz", None, None, None).await.expect(200);
    let readyz = client.send("GET", "/readyz", None, None, None).await;
    readyz.expect_problem(503, "not_ready");
    assert_eq!(readyz.header("retry-after"), Some("1"));
    client.post("/v1/kloqo/bookings", WEB, &booking("c1", "d1", DATE, 1, "Asha")).await.expect_problem(503, "not_ready");
}
