//! Core tests: explicit scenarios, then an exhaustive small world.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use super::calls::Call;
use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
}

fn command(action: Action) -> Command {
    Command { tenant: "kloqo".into(), actor: "web".into(), request_id: "req".into(), idempotency: None, action }
}

fn schedule(slots_per_day: u32) -> Action {
    Action::SetSchedule {
        clinic: "c".into(),
        doctor: "d".into(),
        schedule: Schedule { slots_per_day, first_slot_minute: Some(9 * 60), slot_minutes: Some(15) },
    }
}

fn book(id: u128, slot: u32, kind: BookingKind) -> BookingDetails {
    BookingDetails {
        booking_id: Uuid::from_u128(id),
        clinic: "c".into(),
        doctor: "d".into(),
        date: date(),
        slot,
        patient: format!("patient {id}").into(),
        kind,
        external: crate::core::External::boxed(None, None, None),
    }
}

/// Runs `command` through decide and apply, as the writer does.
fn run(state: &mut State, log: &mut Vec<Event>, action: Action, now: DateTime<Utc>) -> Result<Reply, Rejection> {
    let command = command(action);
    let context = Context { now, position_next: state.position + 1 };
    let events = decide(state, &command, &context)?;
    for event in &events {
        apply(state, event);
    }
    log.extend(events.iter().cloned());
    Ok(reply(state, &command, &events))
}

/// The state replayed from `log` and compacted, as a start-up recovers it:
/// compacting must not change what the state says.
fn recover_log(rules: Rules, log: &[Event]) -> State {
    let mut state = State::new(rules);
    for event in log {
        apply(&mut state, event);
    }
    state.compact();
    state
}

fn booked(reply: Result<Reply, Rejection>) -> Booking {
    match reply {
        Ok(Reply::Booking { booking, .. }) => (*booking).clone(),
        other => panic!("expected a booking, got {other:?}"),
    }
}

#[test]
fn a_taken_slot_names_its_holder_and_tokens_are_never_reused() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    let first = booked(run(&mut state, &mut log, Action::Book(book(1, 0, BookingKind::Advance)), t0()));
    assert_eq!((first.token(), first.position), ("A001".to_string(), 2));
    let taken = run(&mut state, &mut log, Action::Book(book(2, 0, BookingKind::Advance)), t0());
    assert_eq!(taken, Err(Rejection::SlotTaken { booking_id: Uuid::from_u128(1), token: "A001".into() }));
    assert_eq!(log.len(), 2, "a rejection appends nothing");

    let cancelled = booked(run(&mut state, &mut log, Action::Cancel { booking_id: Uuid::from_u128(1), reason: None }, t0()));
    assert_eq!((cancelled.status, cancelled.position), (BookingStatus::Cancelled, 3));
    let again = booked(run(&mut state, &mut log, Action::Cancel { booking_id: Uuid::from_u128(1), reason: None }, t0()));
    assert_eq!(again, cancelled);
    assert_eq!(log.len(), 3, "cancelling twice appends once");

    let rebooked = booked(run(&mut state, &mut log, Action::Book(book(3, 0, BookingKind::Advance)), t0()));
    assert_eq!(rebooked.token(), "A002", "A001 is never issued again");
    let walk_in = booked(run(&mut state, &mut log, Action::Book(book(4, 1, BookingKind::WalkIn)), t0()));
    assert_eq!(walk_in.token(), "W001");
    assert_eq!(recover_log(state.rules, &log), state);
}

#[test]
fn schedule_rules() {
    let (mut state, mut log) = (State::default(), Vec::new());
    let unknown = run(&mut state, &mut log, Action::Book(book(1, 0, BookingKind::Advance)), t0());
    assert_eq!(unknown, Err(Rejection::UnknownDoctor { clinic: "c".into(), doctor: "d".into() }));
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    let out_of_range = run(&mut state, &mut log, Action::Book(book(1, 3, BookingKind::Advance)), t0());
    assert_eq!(out_of_range, Err(Rejection::SlotOutOfRange { slot: 3, slots_per_day: 3 }));
    booked(run(&mut state, &mut log, Action::Book(book(1, 2, BookingKind::Advance)), t0()));
    let shrink = run(&mut state, &mut log, schedule(2), t0());
    assert_eq!(shrink, Err(Rejection::ScheduleConflict { booking_id: Uuid::from_u128(1), date: date(), slot: 2 }));
    let same = run(&mut state, &mut log, schedule(3), t0()).unwrap();
    assert!(matches!(same, Reply::Schedule { position: 1, .. }), "{same:?}");
    assert_eq!(log.len(), 2, "an unchanged schedule appends nothing");
    run(&mut state, &mut log, Action::Cancel { booking_id: Uuid::from_u128(1), reason: Some("moved".into()) }, t0()).unwrap();
    assert!(matches!(run(&mut state, &mut log, schedule(2), t0()), Ok(Reply::Schedule { position: 4, .. })));
}

fn set_schedule(clinic: &str, doctor: &str, slots_per_day: u32) -> Action {
    Action::SetSchedule {
        clinic: clinic.into(),
        doctor: doctor.into(),
        schedule: Schedule { slots_per_day, first_slot_minute: None, slot_minutes: None },
    }
}

#[test]
fn a_clinic_has_at_most_doctors_per_clinic_max_doctors() {
    let rules = Rules { doctors_per_clinic_max: 2, ..Rules::default() };
    let (mut state, mut log) = (State::new(rules), Vec::new());
    run(&mut state, &mut log, set_schedule("c", "d1", 3), t0()).unwrap();
    run(&mut state, &mut log, set_schedule("c", "d2", 3), t0()).unwrap();
    let third = run(&mut state, &mut log, set_schedule("c", "d3", 3), t0());
    assert_eq!(third, Err(Rejection::TooManyDoctors { clinic: "c".into(), limit: 2 }));
    assert_eq!(third.unwrap_err().to_string(), "clinic c already has 2 doctors, the most a clinic may have");
    assert_eq!(log.len(), 2, "a rejection appends nothing");
    // The doctors the clinic has keep changing their schedules.
    let changed = run(&mut state, &mut log, set_schedule("c", "d2", 5), t0());
    assert!(matches!(changed, Ok(Reply::Schedule { position: 3, .. })), "{changed:?}");
    // The bound is per clinic.
    assert!(run(&mut state, &mut log, set_schedule("other", "d3", 3), t0()).is_ok());
    assert_eq!(recover_log(rules, &log), state);
}

#[test]
fn external_refs_bind_once_and_stale_answers_are_refused() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(5), t0()).unwrap();
    let external = |id, slot, correlation: Option<&str>, created: DateTime<Utc>| {
        Action::Book(BookingDetails {
            external: crate::core::External::boxed(Some("cal-1".into()), correlation.map(Into::into), Some(created)),
            ..book(id, slot, BookingKind::Advance)
        })
    };
    let stale = run(&mut state, &mut log, external(1, 0, Some("call-1"), t0() - Duration::minutes(35)), t0());
    assert_eq!(stale, Err(Rejection::StaleExternalBooking { age_secs: 35 * 60, window_secs: 30 }));
    let timed = command(external(1, 0, Some("call-1"), t0() - Duration::minutes(35)));
    assert_eq!(refusal_on_sight(&state, &timed, t0()), None, "a refusal that needs the clock is the writer's");
    let first = run(&mut state, &mut log, external(1, 0, Some("call-1"), t0()), t0());
    assert!(matches!(first, Ok(Reply::Booking { created: true, .. })));
    // The same ref and correlation: the existing booking, even for another slot.
    let repeat = run(&mut state, &mut log, external(2, 1, Some("call-1"), t0()), t0());
    assert!(matches!(&repeat, Ok(Reply::Booking { created: false, booking, .. }) if booking.details.booking_id == Uuid::from_u128(1)));
    for other in [Some("call-2"), None] {
        let refused = run(&mut state, &mut log, external(3, 1, other, t0()), t0());
        assert_eq!(
            refused,
            Err(Rejection::ExternalRefBound {
                external_ref: "cal-1".into(),
                booking_id: Uuid::from_u128(1),
                correlation_id: Some("call-1".into())
            })
        );
    }
    // Bound forever: also after its booking is cancelled.
    run(&mut state, &mut log, Action::Cancel { booking_id: Uuid::from_u128(1), reason: None }, t0()).unwrap();
    assert!(matches!(run(&mut state, &mut log, external(4, 0, Some("call-3"), t0()), t0()), Err(Rejection::ExternalRefBound { .. })));
    assert_eq!(log.len(), 3);
}

/// The invariants, re-derived from the bookings themselves (not from the slot index).
fn check_invariants(state: &State) {
    for (tenant_name, tenant) in &state.tenants {
        let mut active: BTreeMap<(&str, &str, NaiveDate, u32), Uuid> = BTreeMap::new();
        let mut tokens: BTreeMap<(&str, &str, NaiveDate, BookingKind), BTreeSet<u32>> = BTreeMap::new();
        for booking in tenant.bookings.values() {
            let details = &booking.details;
            let numbers = tokens.entry((&details.clinic, &details.doctor, details.date, details.kind)).or_default();
            assert!(numbers.insert(booking.token_number), "{tenant_name}: token {} issued twice", booking.token());
            if booking.status == BookingStatus::Confirmed {
                let key = (&*details.clinic, &*details.doctor, details.date, details.slot);
                assert!(active.insert(key, details.booking_id).is_none(), "two active bookings for {key:?}");
            }
        }
        for ((clinic, doctor, date, kind), numbers) in &tokens {
            let day = &tenant.clinics[*clinic].doctors[*doctor].days[date];
            assert_eq!(numbers.iter().copied().collect::<Vec<_>>(), (1..=numbers.len() as u32).collect::<Vec<_>>());
            assert_eq!(day.tokens_issued(*kind), numbers.len() as u32);
        }
        let mut indexed = BTreeMap::new();
        for (clinic_name, clinic) in &tenant.clinics {
            for (doctor_name, doctor) in &clinic.doctors {
                for (date, day) in &doctor.days {
                    for (&slot, &id) in &day.slots {
                        assert!(slot < doctor.schedule.slots_per_day, "active booking beyond the schedule");
                        indexed.insert((&**clinic_name, &**doctor_name, *date, slot), id);
                    }
                }
            }
        }
        assert_eq!(indexed, active, "the slot index agrees with the bookings");
        for (external_ref, id) in &tenant.external_refs {
            assert_eq!(tenant.bookings[id].details.external_ref(), Some(external_ref));
        }
        let with_refs = tenant.bookings.values().filter(|b| b.details.external_ref().is_some()).count();
        assert_eq!(with_refs, tenant.external_refs.len(), "each external ref bound once");
    }
}

/// Every ordering of up to four commands drawn (with repetition) from a pool
/// over two slots: the invariants hold after every step, rejections append
/// nothing, and recovering from the log (also through the on-disk codec) gives the
/// state that incremental application built. Before every step, a refusal on
/// sight is exactly `decide`'s rejection, for a booking with or without an
/// Idempotency-Key, at any time; and a keyed command is never refused on sight.
#[test]
fn exhaustive_small_world() {
    let pool: Vec<Box<dyn Fn(u128) -> Action>> = vec![
        Box::new(|_| schedule(2)),
        Box::new(|_| schedule(1)),
        Box::new(|id| Action::Book(book(id, 0, BookingKind::Advance))),
        Box::new(|id| Action::Book(book(id, 0, BookingKind::WalkIn))),
        Box::new(|id| Action::Book(book(id, 1, BookingKind::Advance))),
        Box::new(|id| {
            Action::Book(BookingDetails {
                external: crate::core::External::boxed(Some("ext".into()), Some("corr".into()), None),
                ..book(id, 1, BookingKind::WalkIn)
            })
        }),
        Box::new(|_| Action::Cancel { booking_id: Uuid::from_u128(1), reason: None }),
        Box::new(|_| Action::Cancel { booking_id: Uuid::from_u128(2), reason: Some("ill".into()) }),
    ];
    let mut runs = 0;
    let mut sequences: Vec<Vec<usize>> = vec![vec![]];
    for _ in 0..4 {
        sequences = sequences
            .into_iter()
            .flat_map(|s| {
                (0..pool.len()).map(move |c| {
                    let mut next = s.clone();
                    next.push(c);
                    next
                })
            })
            .collect();
        for sequence in &sequences {
            let (mut state, mut log) = (State::default(), Vec::new());
            let mut next_id = 1;
            for (step, &c) in sequence.iter().enumerate() {
                let before = log.len();
                let now = t0() + Duration::seconds(step as i64);
                let action = pool[c](next_id);
                let on_sight = refusal_on_sight(&state, &command(action.clone()), now);
                let mut keyed = command(action.clone());
                keyed.idempotency = Some(IdempotencyKey { key: "k".into(), fingerprint: [0; 32] });
                assert_eq!(refusal_on_sight(&state, &keyed, now), None, "{sequence:?}: a keyed command's answer is stored by the writer");
                // The last moment its day is open: 2026-03-02 closes on 03-05.
                let last_open = Utc.with_ymd_and_hms(2026, 3, 4, 23, 59, 59).unwrap();
                let much_later = Context { now: last_open, position_next: state.position + 1 };
                let later = decide(&state, &command(action.clone()), &much_later).err();
                let result = run(&mut state, &mut log, action.clone(), now);
                let refused = result.as_ref().err().cloned();
                if let Action::Book(_) = action {
                    assert_eq!(on_sight, refused, "{sequence:?}: refused on sight exactly when the writer refuses");
                    assert_eq!(
                        later, refused,
                        "{sequence:?}: a booking without an external timestamp is decided without the clock while its day is open"
                    );
                } else {
                    assert_eq!(on_sight, None, "{sequence:?}: only bookings are refused on sight");
                }
                match result {
                    Ok(Reply::Booking { created: true, .. }) => next_id += 1,
                    Ok(_) => {}
                    Err(_) => assert_eq!(log.len(), before, "{sequence:?}: a rejection appended"),
                }
                check_invariants(&state);
            }
            assert_eq!(recover_log(state.rules, &log), state, "{sequence:?}");
            let decoded: Vec<Event> =
                log.iter().map(|e| crate::log::codec::decode_event(&crate::log::codec::encode_event(e)).unwrap()).collect();
            assert_eq!(decoded, log, "{sequence:?}");
            runs += 1;
        }
    }
    assert_eq!(runs, 8 + 64 + 512 + 4096);
}

/// Builds a command's action from the state so far and a fresh id.
type MakeAction = dyn Fn(&State, u128) -> Action;

/// Runs every sequence of up to `depth` commands drawn from `pool` (each
/// command built from the state so far and a fresh id), `step` apart in time,
/// through decide, decide_refusal and apply. After every step `check` holds;
/// at the end, recovering from the log (also through the codec) gives the same state.
fn exhaustive(rules: Rules, pool: &[&MakeAction], depth: usize, step: Duration, check: &dyn Fn(&State)) -> usize {
    let mut runs = 0;
    let mut sequences: Vec<Vec<usize>> = vec![vec![]];
    for _ in 0..depth {
        sequences = sequences.into_iter().flat_map(|s| (0..pool.len()).map(move |c| [s.clone(), vec![c]].concat())).collect();
        for sequence in &sequences {
            let (mut state, mut log) = (State::new(rules), Vec::new());
            for (i, &c) in sequence.iter().enumerate() {
                let command = command(pool[c](&state, 1000 + i as u128));
                let context = Context { now: t0() + step * i as i32, position_next: state.position + 1 };
                let events = match decide(&state, &command, &context) {
                    Ok(events) => events,
                    Err(rejection) => decide_refusal(&state, &command, &rejection, &context),
                };
                for event in &events {
                    apply(&mut state, event);
                }
                log.extend(events);
                check(&state);
            }
            assert_eq!(recover_log(state.rules, &log), state, "{sequence:?}");
            let decoded: Vec<Event> =
                log.iter().map(|e| crate::log::codec::decode_event(&crate::log::codec::encode_event(e)).unwrap()).collect();
            assert_eq!(decoded, log, "{sequence:?}");
            runs += 1;
        }
    }
    runs
}

fn pending_claim(state: &State, business: &str) -> Option<Uuid> {
    match state.tenant("kloqo")?.businesses.get(business)?.phone.as_ref()? {
        PhoneState::Pending { claim_id, .. } => Some(*claim_id),
        PhoneState::Active { .. } => None,
    }
}

/// Three doctors for a clinic that may have two, schedules set and changed in
/// every order: never more doctors than the limit.
#[test]
fn exhaustive_doctors_per_clinic() {
    let set = |doctor: &'static str, slots_per_day| move |_: &State, _| set_schedule("c", doctor, slots_per_day);
    let (d1, d2, d3, d1_changed, d3_changed) = (set("d1", 2), set("d2", 2), set("d3", 2), set("d1", 1), set("d3", 1));
    let pool: [&MakeAction; 5] = [&d1, &d2, &d3, &d1_changed, &d3_changed];
    let rules = Rules { doctors_per_clinic_max: 2, ..Rules::default() };
    let runs = exhaustive(rules, &pool, 4, Duration::seconds(1), &|state| {
        let Some(clinic) = state.tenant("kloqo").and_then(|t| t.clinics.get("c")) else { return };
        assert!(clinic.doctors.len() <= 2, "{:?}", clinic.doctors.keys());
    });
    assert_eq!(runs, 5 + 25 + 125 + 625);
}

/// Two businesses, two numbers, claims 6 minutes apart (leases are 10): at
/// most one claim or number per business, at most one business per number,
/// and only the current claim ever completes.
#[test]
fn exhaustive_phone_numbers() {
    let claim =
        |business: &'static str| move |_: &State, id: u128| Action::ClaimPhone { business: business.into(), claim_id: Uuid::from_u128(id) };
    let complete = |business: &'static str, number: &'static str| {
        move |state: &State, id: u128| Action::CompletePhone {
            business: business.into(),
            // The current claim if there is one, else a claim that never existed.
            claim_id: pending_claim(state, business).unwrap_or(Uuid::from_u128(id)),
            phone_number: number.into(),
            provider_sid: format!("PN{number}").into(),
        }
    };
    let fail = |state: &State, id: u128| Action::FailPhone {
        business: "b1".into(),
        claim_id: pending_claim(state, "b1").unwrap_or(Uuid::from_u128(id)),
        reason: "carrier down".into(),
    };
    let release = |_: &State, _| Action::ReleasePhone { business: "b1".into(), reason: None };
    let (c1, c2, b1n1, b1n2, b2n1) = (claim("b1"), claim("b2"), complete("b1", "+1"), complete("b1", "+2"), complete("b2", "+1"));
    let pool: [&MakeAction; 7] = [&c1, &c2, &b1n1, &b1n2, &b2n1, &fail, &release];
    let runs = exhaustive(Rules::default(), &pool, 4, Duration::minutes(6), &|state| {
        let Some(tenant) = state.tenant("kloqo") else { return };
        let mut owners = BTreeMap::new();
        for (business, record) in &tenant.businesses {
            if let Some(PhoneState::Active { phone_number, .. }) = &record.phone {
                assert!(owners.insert(phone_number.clone(), business.clone()).is_none(), "{phone_number} active for two businesses");
            }
        }
        assert_eq!(owners, tenant.phone_owners, "the owner index agrees with the businesses");
    });
    assert_eq!(runs, 7 + 49 + 343 + 2401);
}

#[test]
fn an_expired_lease_is_taken_over_and_the_old_claim_fenced() {
    let (mut state, mut log) = (State::default(), Vec::new());
    let claim = |id| Action::ClaimPhone { business: "garage".into(), claim_id: Uuid::from_u128(id) };
    assert!(matches!(run(&mut state, &mut log, claim(1), t0()), Ok(Reply::Phone { reply: PhoneReply::Claimed, .. })));
    let busy = run(&mut state, &mut log, claim(2), t0() + Duration::minutes(9));
    assert_eq!(busy, Err(Rejection::PurchaseInProgress { claim_id: Uuid::from_u128(1), lease_expires_at: t0() + Duration::minutes(10) }));
    assert!(matches!(
        run(&mut state, &mut log, claim(3), t0() + Duration::minutes(10)),
        Ok(Reply::Phone { reply: PhoneReply::Claimed, .. })
    ));
    let complete = |id| Action::CompletePhone {
        business: "garage".into(),
        claim_id: Uuid::from_u128(id),
        phone_number: "+18285768205".into(),
        provider_sid: "PN8e".into(),
    };
    let late = t0() + Duration::minutes(11);
    assert_eq!(run(&mut state, &mut log, complete(1), late), Err(Rejection::ClaimSuperseded { claim_id: Uuid::from_u128(1) }));
    assert!(matches!(run(&mut state, &mut log, complete(3), late), Ok(Reply::Phone { reply: PhoneReply::Current, .. })));
    let positions = log.len();
    assert!(run(&mut state, &mut log, complete(3), late).is_ok(), "the same completion again");
    assert!(matches!(run(&mut state, &mut log, claim(4), late), Ok(Reply::Phone { reply: PhoneReply::AlreadyComplete, .. })));
    assert_eq!(log.len(), positions, "repeats append nothing");
}

fn start_call(campaign: &'static str, to: &'static str) -> impl Fn(&State, u128) -> Action {
    move |_, id| Action::StartCall { call_id: Uuid::from_u128(id), campaign: campaign.into(), to: to.into() }
}

fn last_call(state: &State, to: &str) -> Uuid {
    state.tenant("kloqo").and_then(|t| t.numbers.get(to)).and_then(|n| n.last_call).map_or(Uuid::nil(), |(id, _)| id)
}

/// Two campaigns, two numbers, attempts 7 hours apart (cooldown 24 h): never
/// two calls to a number within the cooldown, never a call to a blocked number
/// or from a halted campaign, and the kill switch trips as configured.
#[test]
fn exhaustive_outbound_calls() {
    let (a1, a2, b1) = (start_call("a", "+1"), start_call("a", "+2"), start_call("b", "+1"));
    let outcome = |outcome: CallState| move |state: &State, _| Action::RecordOutcome { call_id: last_call(state, "+1"), outcome };
    let (failed, bad, done) = (outcome(CallState::Failed), outcome(CallState::BadNumber), outcome(CallState::Completed));
    let resume = |_: &State, _| Action::ResumeCampaign { campaign: "a".into(), reason: "checked".into() };
    let pool: [&MakeAction; 7] = [&a1, &a2, &b1, &failed, &bad, &done, &resume];
    exhaustive(Rules::default(), &pool, 4, Duration::hours(7), &|state| {
        let Some(tenant) = state.tenant("kloqo") else { return };
        let mut by_number: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
        for call in tenant.calls.values() {
            by_number.entry(&call.to).or_default().push(call);
        }
        for (number, calls) in &mut by_number {
            calls.sort_by_key(|c| c.started_at);
            for pair in calls.windows(2) {
                assert!(pair[1].started_at - pair[0].started_at >= state.rules.call_cooldown, "{number} called twice within the cooldown");
                assert_ne!(pair[0].state, CallState::Calling, "{number}: a second call while one is in progress");
            }
            if let Some(bad) = calls.iter().position(|c| c.state == CallState::BadNumber) {
                assert_eq!(bad, calls.len() - 1, "{number} called after bad_number");
                assert!(tenant.numbers[*number].blocked.is_some(), "bad_number blocks the number");
            }
        }
        let calling: BTreeSet<_> =
            tenant.calls.values().filter(|c| c.state == CallState::Calling).map(|c| (c.started_at, c.call_id)).collect();
        assert_eq!(calling, tenant.calling, "the in-progress index agrees with the calls");
    });
}

/// Incident 02 in the core: a scheduler asks every 2 minutes for 2 hours for a
/// number whose webhook never came. One call, two refusals, one halt.
#[test]
fn the_49_calls_become_one() {
    let (mut state, mut log) = (State::default(), Vec::new());
    let mut answers = BTreeMap::new();
    for minute in (0..120).step_by(2) {
        let command = command(start_call("outreach", "+14243242113")(&state, minute as u128 + 1));
        let context = Context { now: t0() + Duration::minutes(minute), position_next: state.position + 1 };
        let events = match decide(&state, &command, &context) {
            Ok(events) => {
                *answers.entry("called").or_insert(0) += 1;
                events
            }
            Err(rejection) => {
                *answers.entry(rejection.code()).or_insert(0) += 1;
                decide_refusal(&state, &command, &rejection, &context)
            }
        };
        for event in &events {
            apply(&mut state, event);
        }
        log.extend(events);
    }
    assert_eq!(answers, BTreeMap::from([("called", 1), ("call_in_progress", 2), ("campaign_halted", 57)]));
    let kinds: Vec<_> = log.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["call_started", "call_refused", "call_refused", "campaign_halted"]);
}

/// Two names that collide, in every order: slugs unique, the smallest free
/// suffix, each slug derived from its community's name.
#[test]
fn exhaustive_communities() {
    let create = |name: &'static str| {
        move |_: &State, id: u128| Action::CreateCommunity {
            community_id: Uuid::from_u128(id),
            name: name.into(),
            owner: "asha".into(),
            plan: "pro".into(),
        }
    };
    let (a, b, c, empty) = (create("My Community"), create("my community!"), create("My Community 1"), create("— !?"));
    let pool: [&MakeAction; 4] = [&a, &b, &c, &empty];
    exhaustive(Rules::default(), &pool, 4, Duration::seconds(1), &|state| {
        let Some(tenant) = state.tenant("kloqo") else { return };
        for (slug, community) in &tenant.communities {
            let base = community::base_slug(&community.name);
            let suffix = slug.strip_prefix(base.as_str()).expect("a slug starts with its base");
            assert!(suffix.is_empty() || suffix.strip_prefix('-').is_some_and(|n| n.parse::<u32>().is_ok()), "{slug}");
            if let Some(n) = suffix.strip_prefix('-').and_then(|n| n.parse::<u32>().ok()) {
                assert!(tenant.communities.contains_key(base.as_str()), "{slug} without its base taken");
                for smaller in 1..n {
                    assert!(tenant.communities.contains_key(format!("{base}-{smaller}").as_str()), "{slug} skipped a free suffix");
                }
            }
        }
    });
}

/// Found by schemathesis: a command accepted with no events as a tenant's very
/// first (releasing a number never claimed, resuming a campaign never halted)
/// panicked the writer, which then refused every command of every tenant.
#[test]
fn a_tenants_first_command_may_be_accepted_with_no_events() {
    for action in
        [Action::ReleasePhone { business: "b".into(), reason: None }, Action::ResumeCampaign { campaign: "c".into(), reason: "r".into() }]
    {
        let (mut state, mut log) = (State::default(), Vec::new());
        match run(&mut state, &mut log, action, t0()) {
            Ok(Reply::Phone { phone: None, reply: PhoneReply::Current, .. }) => {}
            Ok(Reply::Campaign { state, .. }) => assert!(state.halt_reason.is_none()),
            other => panic!("{other:?}"),
        }
        assert!(log.is_empty());
    }
}

/// A day's slot map behaves as the ordered map it replaced, over every
/// insertion and removal order of a few slots.
#[test]
fn a_days_slot_map_is_an_ordered_map() {
    use super::SlotMap;
    let slots = [3u32, 0, 7, 1, 999];
    let mut map = SlotMap::default();
    let mut model = BTreeMap::new();
    // Each step inserts or removes one slot, chosen by a small deterministic sequence.
    let mut x = 1u64;
    for step in 0..2_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let slot = slots[(x >> 33) as usize % slots.len()];
        if (x >> 40).is_multiple_of(3) {
            assert_eq!(map.remove(&slot), model.remove(&slot), "step {step}");
        } else {
            let id = Uuid::from_u128(u128::from(step));
            assert_eq!(map.insert(slot, id), model.insert(slot, id), "step {step}");
        }
        assert_eq!(map.iter().collect::<Vec<_>>(), model.iter().collect::<Vec<_>>(), "step {step}");
        assert_eq!(map.len(), model.len());
        for probe in [0, 2, 3, 8, 999, 1000] {
            assert_eq!(map.get(&probe), model.get(&probe));
            assert_eq!(map.first_from(probe), model.range(probe..).next(), "first from {probe}");
        }
    }
    let entries = vec![(5, Uuid::from_u128(5)), (1, Uuid::from_u128(1))];
    let built = SlotMap::from_entries(entries).unwrap();
    assert_eq!(built.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 5]);
    assert!(SlotMap::from_entries(vec![(1, Uuid::nil()), (1, Uuid::max())]).is_none(), "a slot given twice");
}
/// The projection's booking record stays compact: with its 16-byte `Arc`
/// header it is one 160-byte allocation (the memory bench's per-booking
/// figure rests on it). A field added to it must earn its bytes, or go in a box.
#[test]
fn a_booking_record_stays_compact() {
    assert!(std::mem::size_of::<super::Booking>() <= 144, "Booking is {} bytes", std::mem::size_of::<super::Booking>());
    assert!(std::mem::size_of::<super::BookingDetails>() <= 96, "BookingDetails is {} bytes", std::mem::size_of::<super::BookingDetails>());
}

fn hold(id: u128, slot: u32, patient: Option<&str>) -> Action {
    Action::Hold {
        hold: HoldDetails {
            hold_id: Uuid::from_u128(id),
            clinic: "c".into(),
            doctor: "d".into(),
            date: date(),
            slot,
            patient: patient.map(Into::into),
            patient_id: None,
            entry_id: None,
        },
        ttl_secs: 300,
    }
}

fn confirm(hold_id: u128, booking_id: u128, patient: Option<&str>) -> Action {
    Action::ConfirmHold {
        hold_id: Uuid::from_u128(hold_id),
        booking_id: Uuid::from_u128(booking_id),
        patient: patient.map(Into::into),
        patient_id: None,
        kind: None,
    }
}

fn held(reply: Result<Reply, Rejection>) -> Hold {
    match reply {
        Ok(Reply::Hold { hold, .. }) => (*hold).clone(),
        other => panic!("expected a hold, got {other:?}"),
    }
}

#[test]
fn a_hold_blocks_its_slot_until_it_expires_by_the_clock_handed_to_decide() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    let h = held(run(&mut state, &mut log, hold(10, 1, Some("Asha")), t0()));
    assert_eq!((h.status, h.expires_at), (HoldStatus::Held, t0() + Duration::seconds(300)));
    let blocked = Rejection::SlotHeld { hold_id: Uuid::from_u128(10), expires_at: h.expires_at };
    let just_before = h.expires_at - Duration::microseconds(1);
    assert_eq!(run(&mut state, &mut log, Action::Book(book(1, 1, BookingKind::Advance)), just_before), Err(blocked.clone()));
    assert_eq!(run(&mut state, &mut log, hold(11, 1, None), just_before), Err(blocked));
    // A booked slot cannot be held.
    let first = booked(run(&mut state, &mut log, Action::Book(book(2, 0, BookingKind::Advance)), t0()));
    let taken = run(&mut state, &mut log, hold(12, 0, None), t0());
    assert_eq!(taken, Err(Rejection::SlotTaken { booking_id: first.details.booking_id, token: "A001".into() }));
    // At its expiry, before any hold_expired is written, the slot books, and
    // the command writes the expiry first.
    let at_expiry = h.expires_at;
    let before = log.len();
    let second = booked(run(&mut state, &mut log, Action::Book(book(3, 1, BookingKind::Advance)), at_expiry));
    assert_eq!(second.token(), "A002");
    let kinds: Vec<&str> = log[before..].iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["hold_expired", "booking_created"]);
    assert_eq!(state.tenant("kloqo").unwrap().holds[&Uuid::from_u128(10)].status, HoldStatus::Expired);
    assert_eq!(recover_log(state.rules, &log), state);
}

#[test]
fn a_confirmed_hold_is_one_booking_however_often_it_is_confirmed() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    run(&mut state, &mut log, hold(10, 2, Some("Asha")), t0()).unwrap();
    run(&mut state, &mut log, hold(11, 1, None), t0()).unwrap();
    let mismatch = run(&mut state, &mut log, confirm(10, 1, Some("Ravi")), t0());
    assert_eq!(mismatch, Err(Rejection::HoldPatientMismatch { field: "patient" }));
    assert_eq!(run(&mut state, &mut log, confirm(11, 1, None), t0()), Err(Rejection::PatientRequired));
    let booking = booked(run(&mut state, &mut log, confirm(10, 1, None), t0()));
    assert_eq!((booking.details.patient.as_str(), booking.details.slot, booking.token()), ("Asha", 2, "A001".into()));
    assert_eq!(booking.details.hold_id(), Some(Uuid::from_u128(10)));
    let events = log.len();
    let again = run(&mut state, &mut log, confirm(10, 2, Some("Asha")), t0());
    let Ok(Reply::Booking { booking: same, created: false, .. }) = again else { panic!("{again:?}") };
    assert_eq!(*same, booking);
    assert_eq!(log.len(), events, "a repeated confirmation appends nothing");
    let release = run(&mut state, &mut log, Action::ReleaseHold { hold_id: Uuid::from_u128(10) }, t0());
    assert_eq!(release, Err(Rejection::HoldConfirmed { hold_id: Uuid::from_u128(10), booking_id: Uuid::from_u128(1) }));
    // The confirmed slot is booked, no longer held.
    let taken = run(&mut state, &mut log, Action::Book(book(5, 2, BookingKind::Advance)), t0());
    assert!(matches!(taken, Err(Rejection::SlotTaken { .. })), "{taken:?}");
    assert_eq!(recover_log(state.rules, &log), state);
}

#[test]
fn a_released_or_expired_hold_frees_its_slot_and_cannot_be_confirmed() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    run(&mut state, &mut log, hold(10, 0, Some("Asha")), t0()).unwrap();
    let release = || Action::ReleaseHold { hold_id: Uuid::from_u128(10) };
    assert_eq!(held(run(&mut state, &mut log, release(), t0())).status, HoldStatus::Released);
    let events = log.len();
    assert_eq!(held(run(&mut state, &mut log, release(), t0())).status, HoldStatus::Released, "again: the same answer");
    assert_eq!(log.len(), events, "a repeated release appends nothing");
    assert_eq!(run(&mut state, &mut log, confirm(10, 1, None), t0()), Err(Rejection::HoldReleased { hold_id: Uuid::from_u128(10) }));
    booked(run(&mut state, &mut log, Action::Book(book(1, 0, BookingKind::Advance)), t0()));

    let h = held(run(&mut state, &mut log, hold(11, 1, Some("Ravi")), t0()));
    let expired = Rejection::HoldExpired { hold_id: Uuid::from_u128(11), expires_at: h.expires_at };
    assert_eq!(run(&mut state, &mut log, confirm(11, 2, None), h.expires_at), Err(expired.clone()));
    let release = Action::ReleaseHold { hold_id: Uuid::from_u128(11) };
    assert_eq!(run(&mut state, &mut log, release, h.expires_at), Err(expired));
    assert_eq!(run(&mut state, &mut log, hold(12, 9, None), t0()), Err(Rejection::SlotOutOfRange { slot: 9, slots_per_day: 3 }));
    let unknown = run(&mut state, &mut log, confirm(99, 3, None), t0());
    assert_eq!(unknown, Err(Rejection::HoldNotFound { hold_id: Uuid::from_u128(99) }));
}

#[test]
fn the_writer_expires_what_is_due_in_order_and_only_that() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(5), t0()).unwrap();
    for (id, slot, at) in [(10, 0, 2), (11, 1, 0), (12, 2, 1), (13, 3, 9)] {
        run(&mut state, &mut log, hold(id, slot, None), t0() + Duration::seconds(at)).unwrap();
    }
    assert_eq!(holds::next_expiry(&state), Some(t0() + Duration::seconds(300)));
    let now = t0() + Duration::seconds(302);
    let due = holds::expiries_due(&state, &Context { now, position_next: state.position + 1 });
    let expired: Vec<_> = due.iter().map(|e| (e.position, e.kind.clone(), e.actor.to_string())).collect();
    let expected: Vec<_> = [11, 12, 10]
        .into_iter()
        .enumerate()
        .map(|(i, id)| (state.position + 1 + i as u64, EventKind::HoldExpired { hold_id: Uuid::from_u128(id) }, "ledger".to_string()))
        .collect();
    assert_eq!(expired, expected);
    for event in &due {
        apply(&mut state, event);
    }
    assert_eq!(holds::next_expiry(&state), Some(t0() + Duration::seconds(309)));
    assert!(holds::expiries_due(&state, &Context { now, position_next: state.position + 1 }).is_empty());
    booked(run(&mut state, &mut log, Action::Book(book(1, 2, BookingKind::Advance)), now));
}

#[test]
fn active_holds_are_limited_per_tenant_and_expired_ones_do_not_count() {
    let mut state = State::new(Rules { holds_max: 2, ..Rules::default() });
    let mut log = Vec::new();
    run(&mut state, &mut log, schedule(5), t0()).unwrap();
    run(&mut state, &mut log, hold(10, 0, None), t0()).unwrap();
    run(&mut state, &mut log, hold(11, 1, None), t0() + Duration::seconds(100)).unwrap();
    let refused = run(&mut state, &mut log, hold(12, 2, None), t0() + Duration::seconds(200));
    assert_eq!(refused, Err(Rejection::TooManyHolds { limit: 2, retry_after_secs: 101 }));
    // Past the first one's expiry it no longer counts, event or not.
    run(&mut state, &mut log, hold(12, 2, None), t0() + Duration::seconds(300)).unwrap();
}

#[test]
fn a_refusal_on_sight_never_says_a_slot_is_held() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    run(&mut state, &mut log, hold(10, 1, None), t0()).unwrap();
    // Only the writer reads the clock that ends a hold.
    assert_eq!(refusal_on_sight(&state, &command(Action::Book(book(1, 1, BookingKind::Advance))), t0()), None);
    run(&mut state, &mut log, Action::Book(book(2, 0, BookingKind::Advance)), t0()).unwrap();
    let taken = refusal_on_sight(&state, &command(Action::Book(book(3, 0, BookingKind::Advance))), t0());
    assert!(matches!(taken, Some(Rejection::SlotTaken { .. })), "{taken:?}");
    // A closed day is the writer's to say, by its clock.
    let closed = Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap();
    assert_eq!(refusal_on_sight(&state, &command(Action::Book(book(3, 0, BookingKind::Advance))), closed), None);
}

fn move_to(booking_id: u128, doctor: Option<&str>, slot: u32, expected_version: Option<u32>) -> Action {
    Action::Reschedule {
        booking_id: Uuid::from_u128(booking_id),
        to: Move { doctor: doctor.map(Into::into), date: None, slot, expected_version },
    }
}

#[test]
fn a_reschedule_moves_a_booking_in_one_event_with_a_new_token_and_once_per_version() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(4), t0()).unwrap();
    run(
        &mut state,
        &mut log,
        Action::SetSchedule {
            clinic: "c".into(),
            doctor: "e".into(),
            schedule: Schedule { slots_per_day: 2, first_slot_minute: None, slot_minutes: None },
        },
        t0(),
    )
    .unwrap();
    let first = booked(run(&mut state, &mut log, Action::Book(book(1, 0, BookingKind::Advance)), t0()));
    assert_eq!(first.version, 1);
    let other = booked(run(&mut state, &mut log, Action::Book(book(2, 1, BookingKind::Advance)), t0()));
    let events = log.len();
    let moved = booked(run(&mut state, &mut log, move_to(1, None, 3, Some(1)), t0()));
    assert_eq!(log.len(), events + 1, "one event moves it");
    assert_eq!((moved.details.slot, moved.token(), moved.version), (3, "A003".into(), 2));
    let from = moved.rescheduled_from.as_deref().unwrap();
    assert_eq!((from.slot, from.token()), (0, "A001".into()));
    // The link used again: the version moved on.
    let again = run(&mut state, &mut log, move_to(1, None, 2, Some(1)), t0());
    assert_eq!(again, Err(Rejection::VersionConflict { booking_id: Uuid::from_u128(1), version: 2 }));
    // Its own slot: nothing appended.
    let events = log.len();
    assert_eq!(booked(run(&mut state, &mut log, move_to(1, None, 3, None), t0())), moved);
    assert_eq!(log.len(), events);
    // The old slot is free, and its token is never issued again.
    let third = booked(run(&mut state, &mut log, Action::Book(book(3, 0, BookingKind::Advance)), t0()));
    assert_eq!(third.token(), "A004");
    let taken = run(&mut state, &mut log, move_to(1, None, 1, None), t0());
    assert_eq!(taken, Err(Rejection::SlotTaken { booking_id: other.details.booking_id, token: other.token() }));
    assert_eq!(run(&mut state, &mut log, move_to(1, None, 9, None), t0()), Err(Rejection::SlotOutOfRange { slot: 9, slots_per_day: 4 }));
    let unknown = run(&mut state, &mut log, move_to(1, Some("x"), 0, None), t0());
    assert_eq!(unknown, Err(Rejection::UnknownDoctor { clinic: "c".into(), doctor: "x".into() }));
    // To another doctor: that doctor's sequence.
    let elsewhere = booked(run(&mut state, &mut log, move_to(1, Some("e"), 1, None), t0()));
    assert_eq!((elsewhere.details.doctor.as_ref(), elsewhere.token(), elsewhere.version), ("e", "A001".into(), 3));
    // A held slot is refused; cancelled bookings stay put.
    run(&mut state, &mut log, hold(10, 2, None), t0()).unwrap();
    assert!(matches!(run(&mut state, &mut log, move_to(1, Some("d"), 2, None), t0()), Err(Rejection::SlotHeld { .. })));
    run(&mut state, &mut log, Action::Cancel { booking_id: Uuid::from_u128(2), reason: None }, t0()).unwrap();
    assert_eq!(state.tenant("kloqo").unwrap().bookings[&Uuid::from_u128(2)].version, 2);
    let cancelled = run(&mut state, &mut log, move_to(2, None, 2, None), t0());
    assert_eq!(cancelled, Err(Rejection::BookingCancelled { booking_id: Uuid::from_u128(2) }));
    assert_eq!(recover_log(state.rules, &log), state);
}

fn mark(booking_id: u128, attendance: Attendance, correct: bool) -> Action {
    Action::MarkAttendance { booking_id: Uuid::from_u128(booking_id), attendance, correct }
}

#[test]
fn attendance_is_marked_from_the_booking_day_once_and_corrected_only_when_asked() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    booked(run(&mut state, &mut log, Action::Book(book(1, 0, BookingKind::Advance)), t0()));
    // t0 is the day before the booking's date.
    let early = run(&mut state, &mut log, mark(1, Attendance::Arrived, false), t0());
    assert_eq!(early, Err(Rejection::TooEarly { booking_id: Uuid::from_u128(1), date: date() }));
    let on_the_day = t0() + Duration::days(1);
    let arrived = booked(run(&mut state, &mut log, mark(1, Attendance::Arrived, false), on_the_day));
    assert_eq!((arrived.attendance, arrived.version), (Some(Attendance::Arrived), 2));
    let events = log.len();
    assert_eq!(booked(run(&mut state, &mut log, mark(1, Attendance::Arrived, true), on_the_day)), arrived, "the same mark: a repeat");
    assert_eq!(log.len(), events);
    let other = run(&mut state, &mut log, mark(1, Attendance::NoShow, false), on_the_day);
    assert_eq!(other, Err(Rejection::AttendanceRecorded { booking_id: Uuid::from_u128(1), attendance: Attendance::Arrived }));
    let corrected = booked(run(&mut state, &mut log, mark(1, Attendance::NoShow, true), on_the_day));
    assert_eq!((corrected.attendance, corrected.version), (Some(Attendance::NoShow), 3));
    let moved = run(&mut state, &mut log, move_to(1, None, 2, None), on_the_day);
    assert_eq!(moved, Err(Rejection::AttendanceRecorded { booking_id: Uuid::from_u128(1), attendance: Attendance::NoShow }));
    assert_eq!(recover_log(state.rules, &log), state);
}

#[test]
fn a_clinics_zone_makes_a_skipped_time_unbookable_and_sets_its_today() {
    let (mut state, mut log) = (State::default(), Vec::new());
    let night = Schedule { slots_per_day: 4, first_slot_minute: Some(90), slot_minutes: Some(30) }; // 01:30, 02:00, 02:30, 03:00
    run(&mut state, &mut log, Action::SetSchedule { clinic: "c".into(), doctor: "d".into(), schedule: night }, t0()).unwrap();
    let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(); // Berlin skips 02:00 to 03:00
    let at = |id, slot| Action::Book(BookingDetails { date: spring, ..book(id, slot, BookingKind::Advance) });
    // Booked while the clinic is in UTC, where 02:30 exists.
    booked(run(&mut state, &mut log, at(1, 2), t0()));
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let zone = || Action::SetClinicZone { clinic: "c".into(), zone: berlin };
    run(&mut state, &mut log, zone(), t0()).unwrap();
    let events = log.len();
    assert!(matches!(run(&mut state, &mut log, zone(), t0()), Ok(Reply::Clinic { .. })));
    assert_eq!(log.len(), events, "the same zone again appends nothing");
    let unavailable = run(&mut state, &mut log, at(2, 1), t0());
    assert_eq!(unavailable, Err(Rejection::SlotUnavailable { slot: 1, time: "02:00".into() }));
    let hold = Action::Hold {
        hold: HoldDetails {
            date: spring,
            ..match hold(10, 1, None) {
                Action::Hold { hold, .. } => hold,
                _ => unreachable!(),
            }
        },
        ttl_secs: 60,
    };
    assert!(matches!(run(&mut state, &mut log, hold, t0()), Err(Rejection::SlotUnavailable { .. })));
    // The booked one stays booked, its instant moved forward by the gap.
    let tenant = state.tenant("kloqo").unwrap();
    let SlotTime::At { starts_at, .. } = tenant.booking_time(&tenant.bookings[&Uuid::from_u128(1)]) else { panic!() };
    assert_eq!(starts_at.to_rfc3339(), "2026-03-29T03:30:00+02:00");
    booked(run(&mut state, &mut log, at(3, 3), t0()));
    // At 23:30 UTC on the 28th it is already the 29th in Berlin.
    let late = Utc.with_ymd_and_hms(2026, 3, 28, 23, 30, 0).unwrap();
    let marked = booked(run(&mut state, &mut log, mark(3, Attendance::Arrived, false), late));
    assert_eq!(marked.attendance, Some(Attendance::Arrived));
    assert_eq!(recover_log(state.rules, &log), state);
}

fn join(entry: u128, doctor: Option<&str>, patient: &str) -> Action {
    Action::JoinWaitlist(EntryDetails {
        entry_id: Uuid::from_u128(entry),
        clinic: "c".into(),
        date: date(),
        doctor: doctor.map(Into::into),
        patient: patient.into(),
        patient_id: None,
    })
}

fn entry_status(state: &State, entry: u128) -> EntryStatus {
    state.tenant("kloqo").unwrap().waitlist[&Uuid::from_u128(entry)].status
}

#[test]
fn a_freed_slot_is_offered_to_the_first_waiting_entry_in_the_same_command() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(2), t0()).unwrap();
    booked(run(&mut state, &mut log, Action::Book(book(1, 0, BookingKind::Advance)), t0()));
    booked(run(&mut state, &mut log, Action::Book(book(2, 1, BookingKind::Advance)), t0()));
    for (entry, doctor, patient) in [(20, Some("elsewhere"), "Zed"), (21, None, "Asha"), (22, Some("d"), "Ravi"), (23, None, "Chen")] {
        let joined = run(&mut state, &mut log, join(entry, doctor, patient), t0());
        if doctor == Some("elsewhere") {
            assert_eq!(joined, Err(Rejection::UnknownDoctor { clinic: "c".into(), doctor: "elsewhere".into() }));
        } else {
            assert!(matches!(joined, Ok(Reply::Entry { created: true, .. })), "{joined:?}");
        }
    }
    assert_eq!(entry_status(&state, 21), EntryStatus::Waiting, "no slot is free");
    // A cancellation frees slot 0: offered to Asha, who joined first, in the same command.
    let before = log.len();
    run(&mut state, &mut log, Action::Cancel { booking_id: Uuid::from_u128(1), reason: None }, t0()).unwrap();
    assert_eq!(log[before..].iter().map(|e| e.kind.name()).collect::<Vec<_>>(), ["booking_cancelled", "hold_placed"]);
    let EventKind::HoldPlaced { details: offer, expires_at } = log[before + 1].kind.clone() else { unreachable!() };
    assert_eq!((offer.entry_id, offer.slot, offer.patient.as_deref()), (Some(Uuid::from_u128(21)), 0, Some("Asha")));
    assert_eq!(expires_at, t0() + Duration::seconds(900));
    assert_eq!(entry_status(&state, 21), EntryStatus::Offered(offer.hold_id));
    // Nobody else books it meanwhile.
    assert!(matches!(run(&mut state, &mut log, Action::Book(book(3, 0, BookingKind::Advance)), t0()), Err(Rejection::SlotHeld { .. })));
    // The offer expires by the clock: Asha's entry expires and Ravi is offered the slot in the same batch.
    let later = expires_at;
    let due = holds::expiries_due(&state, &Context { now: later, position_next: state.position + 1 });
    assert_eq!(due.iter().map(|e| e.kind.name()).collect::<Vec<_>>(), ["hold_expired", "hold_placed"]);
    for event in &due {
        apply(&mut state, event);
    }
    log.extend(due);
    assert_eq!(entry_status(&state, 21), EntryStatus::Expired);
    let EntryStatus::Offered(ravis) = entry_status(&state, 22) else { panic!("{:?}", entry_status(&state, 22)) };
    // Ravi confirms: booked.
    let confirmed = booked(run(&mut state, &mut log, confirm(0, 9, None).with_hold(ravis), later));
    assert_eq!((confirmed.details.patient.as_str(), confirmed.token()), ("Ravi", "A003".to_string()));
    assert_eq!(entry_status(&state, 22), EntryStatus::Booked(Uuid::from_u128(9)));
    assert_eq!(
        run(&mut state, &mut log, Action::WithdrawEntry { entry_id: Uuid::from_u128(22) }, later),
        Err(Rejection::EntryBooked { entry_id: Uuid::from_u128(22), booking_id: Uuid::from_u128(9) })
    );
    // Chen, waiting: a release of slot 1's booking offers it; withdrawing the offer releases it.
    run(&mut state, &mut log, Action::Cancel { booking_id: Uuid::from_u128(2), reason: None }, later).unwrap();
    let EntryStatus::Offered(_) = entry_status(&state, 23) else { panic!() };
    let before = log.len();
    run(&mut state, &mut log, Action::WithdrawEntry { entry_id: Uuid::from_u128(23) }, later).unwrap();
    assert_eq!(log[before..].iter().map(|e| e.kind.name()).collect::<Vec<_>>(), ["hold_released"]);
    assert_eq!(entry_status(&state, 23), EntryStatus::Withdrawn);
    let again = log.len();
    run(&mut state, &mut log, Action::WithdrawEntry { entry_id: Uuid::from_u128(23) }, later).unwrap();
    assert_eq!(log.len(), again, "withdrawn again: nothing appended");
    // Joining while a slot is free offers it at once.
    run(&mut state, &mut log, join(24, Some("d"), "Dev"), later).unwrap();
    let EntryStatus::Offered(_) = entry_status(&state, 24) else { panic!("{:?}", entry_status(&state, 24)) };
    assert_eq!(recover_log(state.rules, &log), state);
}

trait WithHold {
    fn with_hold(self, hold_id: Uuid) -> Action;
}

impl WithHold for Action {
    fn with_hold(self, hold_id: Uuid) -> Action {
        match self {
            Action::ConfirmHold { booking_id, patient, patient_id, kind, .. } => {
                Action::ConfirmHold { hold_id, booking_id, patient, patient_id, kind }
            }
            other => other,
        }
    }
}

/// The slots' invariants read from the bookings, holds and entries alone, and
/// checked against the day indexes: a slot is booked or held by one party at
/// most, an offered entry's hold is active, the waiting lines hold exactly
/// the waiting entries.
fn check_slot_parties(state: &State) {
    let Some(tenant) = state.tenant("kloqo") else { return };
    let mut parties = BTreeMap::new();
    for booking in tenant.bookings.values().filter(|b| b.status == BookingStatus::Confirmed) {
        let d = &booking.details;
        let previous = parties.insert((d.doctor.clone(), d.date, d.slot), booking.details.booking_id);
        assert_eq!(previous, None, "two active bookings of one slot");
    }
    for hold in tenant.holds.values().filter(|h| h.status == HoldStatus::Held) {
        let d = &hold.details;
        let previous = parties.insert((d.doctor.clone(), d.date, d.slot), d.hold_id);
        assert_eq!(previous, None, "a slot held and booked, or held twice");
    }
    let mut indexed = BTreeMap::new();
    for clinic in tenant.clinics.values() {
        for (name, doctor) in &clinic.doctors {
            for (date, day) in &doctor.days {
                for (slot, id) in day.slots.iter().chain(day.held.iter()) {
                    assert_eq!(indexed.insert((name.clone(), *date, *slot), *id), None, "a day lists a slot twice");
                }
            }
        }
    }
    assert_eq!(indexed, parties, "the days' indexes agree with the bookings and holds");
    for entry in tenant.waitlist.values() {
        let waiting = tenant
            .waiting
            .get(&(entry.details.clinic.clone(), entry.details.date))
            .is_some_and(|line| line.values().any(|id| *id == entry.details.entry_id));
        assert_eq!(waiting, entry.status == EntryStatus::Waiting, "the line holds the waiting entries");
        if let EntryStatus::Offered(hold_id) = entry.status {
            let hold = &tenant.holds[&hold_id];
            assert_eq!((hold.status, hold.details.entry_id), (HoldStatus::Held, Some(entry.details.entry_id)), "an offer's hold is active");
        }
    }
}

/// Every sequence of up to four commands over a two-slot day (holds placed,
/// confirmed, released and left to expire, bookings moved and cancelled,
/// patients joining and leaving the waitlist), 20 s apart so that a 30 s hold
/// outlives one step and not two, each batch preceded by the writer's expiry
/// sweep: one party per slot, tokens never issued twice, and the log replays
/// (also through the codec) to the state built step by step.
#[test]
fn exhaustive_holds_reschedules_and_the_waitlist() {
    let first_booking = |state: &State| {
        state
            .tenant("kloqo")
            .and_then(|t| t.bookings.values().find(|b| b.status == BookingStatus::Confirmed))
            .map(|b| (b.details.booking_id, b.details.slot))
    };
    let first_hold = |state: &State| {
        state.tenant("kloqo").and_then(|t| t.holds.values().find(|h| h.status == HoldStatus::Held)).map(|h| h.details.hold_id)
    };
    let first_entry = |state: &State| state.tenant("kloqo").and_then(|t| t.waitlist.keys().next().copied());
    let held = |slot| {
        move |_: &State, id: u128| match hold(id, slot, Some("p")) {
            Action::Hold { hold, .. } => Action::Hold { hold, ttl_secs: 30 },
            _ => unreachable!(),
        }
    };
    let (hold_0, hold_1) = (held(0), held(1));
    let booked = |_: &State, id| Action::Book(book(id, 0, BookingKind::Advance));
    let confirmed = move |state: &State, id| confirm(0, id, None).with_hold(first_hold(state).unwrap_or_default());
    let released = move |state: &State, _| Action::ReleaseHold { hold_id: first_hold(state).unwrap_or_default() };
    let cancelled = move |state: &State, _| Action::Cancel { booking_id: first_booking(state).map_or(Uuid::nil(), |b| b.0), reason: None };
    let moved = move |state: &State, _| {
        let (booking_id, slot) = first_booking(state).unwrap_or_default();
        Action::Reschedule { booking_id, to: Move { doctor: None, date: None, slot: 1 - slot.min(1), expected_version: None } }
    };
    let joined = |_: &State, id| join(id, None, "w");
    let withdrawn = move |state: &State, _| Action::WithdrawEntry { entry_id: first_entry(state).unwrap_or_default() };
    let pool: [&MakeAction; 9] = [&hold_0, &hold_1, &booked, &confirmed, &released, &cancelled, &moved, &joined, &withdrawn];
    let mut runs = 0;
    let mut sequences: Vec<Vec<usize>> = vec![vec![]];
    for _ in 0..4 {
        sequences = sequences.into_iter().flat_map(|s| (0..pool.len()).map(move |c| [s.clone(), vec![c]].concat())).collect();
        for sequence in &sequences {
            let (mut state, mut log) = (State::default(), Vec::new());
            run(&mut state, &mut log, schedule(2), t0()).unwrap();
            for (i, &c) in sequence.iter().enumerate() {
                let now = t0() + Duration::seconds(20 * (i as i64 + 1));
                let swept = holds::expiries_due(&state, &Context { now, position_next: state.position + 1 });
                for event in &swept {
                    apply(&mut state, event);
                }
                log.extend(swept);
                let command = command(pool[c](&state, 1000 + i as u128));
                let context = Context { now, position_next: state.position + 1 };
                if let Ok(events) = decide(&state, &command, &context) {
                    for event in &events {
                        apply(&mut state, event);
                    }
                    log.extend(events);
                }
                check_slot_parties(&state);
            }
            let mut tokens = BTreeSet::new();
            for event in &log {
                let issued = match &event.kind {
                    EventKind::BookingCreated(c) => Some((c.details.doctor.clone(), c.details.date, c.details.kind, c.token_number)),
                    EventKind::BookingRescheduled { doctor, date, kind, token_number, .. } => {
                        Some((doctor.clone(), *date, *kind, *token_number))
                    }
                    _ => None,
                };
                assert!(issued.is_none_or(|token| tokens.insert(token)), "{sequence:?}: a token issued twice");
            }
            assert_eq!(recover_log(state.rules, &log), state, "{sequence:?}");
            let decoded: Vec<Event> =
                log.iter().map(|e| crate::log::codec::decode_event(&crate::log::codec::encode_event(e)).unwrap()).collect();
            assert_eq!(decoded, log, "{sequence:?}");
            runs += 1;
        }
    }
    assert_eq!(runs, 9 + 81 + 729 + 6561);
}

#[test]
fn a_timed_schedule_ends_before_midnight() {
    let (mut state, mut log) = (State::default(), Vec::new());
    let set = |slots_per_day, first, minutes| Action::SetSchedule {
        clinic: "c".into(),
        doctor: "d".into(),
        schedule: Schedule { slots_per_day, first_slot_minute: Some(first), slot_minutes: Some(minutes) },
    };
    // From 09:00 every 15 minutes, slot 60 would start at 24:00.
    assert!(run(&mut state, &mut log, set(60, 9 * 60, 15), t0()).is_ok(), "the last slot at 23:45");
    assert_eq!(run(&mut state, &mut log, set(61, 9 * 60, 15), t0()), Err(Rejection::SlotOutOfRange { slot: 60, slots_per_day: 61 }));
    assert_eq!(run(&mut state, &mut log, set(3, 23 * 60 + 50, 5), t0()), Err(Rejection::SlotOutOfRange { slot: 2, slots_per_day: 3 }));
    // Untimed schedules have no clock to run past.
    let untimed = Action::SetSchedule {
        clinic: "c".into(),
        doctor: "e".into(),
        schedule: Schedule { slots_per_day: 1000, first_slot_minute: None, slot_minutes: None },
    };
    assert!(run(&mut state, &mut log, untimed, t0()).is_ok());
}

#[test]
fn a_schedule_that_grows_offers_its_new_slots_and_a_skipped_time_is_never_offered() {
    let (mut state, mut log) = (State::default(), Vec::new());
    // 01:30 and 02:00 (Berlin skips 02:00 to 03:00 on the 29th), then 02:30, 03:00 when it grows.
    let night = |slots_per_day| Action::SetSchedule {
        clinic: "c".into(),
        doctor: "d".into(),
        schedule: Schedule { slots_per_day, first_slot_minute: Some(90), slot_minutes: Some(30) },
    };
    let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
    run(&mut state, &mut log, night(2), t0()).unwrap();
    run(&mut state, &mut log, Action::SetClinicZone { clinic: "c".into(), zone: "Europe/Berlin".parse().unwrap() }, t0()).unwrap();
    booked(run(&mut state, &mut log, Action::Book(BookingDetails { date: spring, ..book(1, 0, BookingKind::Advance) }), t0()));
    let joined = |entry| {
        Action::JoinWaitlist(EntryDetails {
            date: spring,
            ..match join(entry, None, "w") {
                Action::JoinWaitlist(e) => e,
                _ => unreachable!(),
            }
        })
    };
    // Slot 1 (02:00) does not exist that day: nothing is offered, the entry waits.
    run(&mut state, &mut log, joined(20), t0()).unwrap();
    assert_eq!(entry_status(&state, 20), EntryStatus::Waiting);
    // Growing to four slots frees 02:30 (skipped too) and 03:00: the entry is offered 03:00, in the same command.
    let before = log.len();
    run(&mut state, &mut log, night(4), t0()).unwrap();
    assert_eq!(log[before..].iter().map(|e| e.kind.name()).collect::<Vec<_>>(), ["schedule_set", "hold_placed"]);
    let EventKind::HoldPlaced { details, .. } = &log[before + 1].kind else { unreachable!() };
    assert_eq!((details.slot, details.entry_id), (3, Some(Uuid::from_u128(20))));
    assert_eq!(recover_log(state.rules, &log), state);
}

/// Days closing between commands (API.md "Open and closed days"): random
/// sequences of every command that touches a clinic day, on three days, the
/// clock moving up to a day and a half between commands and the ledger's own
/// events (expiries, then closings) applied before each, as the writer does:
/// what a `days_closed` takes out of memory (`days::closing`) goes to a store,
/// and the records a command names are read back from it into the cache.
/// A command on a closed day appends nothing (a repeat answers, from the
/// records read back); once closed, a day's records are out of memory, were
/// stored once, and none of its holds was active nor any entry waiting; the
/// log replays to the same state.
#[test]
fn a_closed_day_never_changes_and_commands_on_it_append_nothing() {
    let days = [date(), date() + Duration::days(1), date() + Duration::days(2)];
    let rules = Rules { open_days_past: 0, ..Rules::default() };
    let mut seed: u64 = 7;
    let mut random = move |below: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };
    let (mut refused_closed, mut repeats_closed, mut closings, mut expired_waiting) = (0, 0, 0, 0);
    for _ in 0..400 {
        let (mut state, mut log) = (State::new(rules), Vec::new());
        // One slot a day, so that entries wait.
        run(&mut state, &mut log, schedule(1), t0()).unwrap();
        let mut now = t0();
        // The closed-day store, and every id handed out.
        let mut store = TenantState::default();
        let (mut bookings, mut holds_known, mut entries) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..14u128 {
            now += Duration::minutes(random(36 * 60) as i64);
            for due in [holds::expiries_due, days::closings_due] {
                let events = due(&state, &Context { now, position_next: state.position + 1 });
                for event in &events {
                    if let EventKind::DaysClosed { clinic, through } = &event.kind {
                        closings += 1;
                        let tenant = state.tenant("kloqo").unwrap();
                        let waiting = tenant.waiting.range((clinic.clone(), NaiveDate::MIN)..=(clinic.clone(), *through));
                        expired_waiting += waiting.map(|(_, line)| line.len()).sum::<usize>();
                        let closed = days::closing(tenant, clinic, *through, event.position);
                        for (id, booking) in closed.records.bookings {
                            assert!(store.bookings.insert(id, booking).is_none(), "a booking stored twice");
                        }
                        for (id, hold) in closed.records.holds {
                            assert_eq!(hold.status_at(now), hold.status, "an active hold on a closed day: {hold:?}");
                            assert!(hold.status != HoldStatus::Held, "an active hold on a closed day");
                            assert!(store.holds.insert(id, hold).is_none(), "a hold stored twice");
                        }
                        for (id, entry) in closed.records.waitlist {
                            assert!(
                                !matches!(entry.status, EntryStatus::Waiting | EntryStatus::Offered(_)),
                                "an entry waits for a closed day"
                            );
                            assert!(store.waitlist.insert(id, entry).is_none(), "an entry stored twice");
                        }
                        store.external_refs.extend(closed.records.external_refs);
                    }
                    apply(&mut state, event);
                }
                log.extend(events);
            }
            // The writer's prefetch, made simple: every stored record read back.
            let tenant = state.tenants.get_mut("kloqo").unwrap();
            tenant.closed = ClosedCache {
                bookings: store.bookings.clone(),
                holds: store.holds.clone(),
                entries: store.waitlist.clone(),
                external_refs: store.external_refs.clone(),
                zones: BTreeMap::new(),
            };
            let tenant = state.tenant("kloqo").unwrap();
            let pick = |ids: &Vec<Uuid>, r: u64| ids.get(r as usize % ids.len().max(1)).copied().unwrap_or(Uuid::from_u128(999));
            let day = days[random(3) as usize];
            let slot = random(2) as u32;
            let id = 100 + n;
            let action = match random(9) {
                0 | 1 => Action::Book(BookingDetails { date: day, ..book(id, slot, BookingKind::Advance) }),
                2 => Action::Cancel { booking_id: pick(&bookings, random(64)), reason: None },
                3 => match hold(id, slot, Some("p")) {
                    Action::Hold { hold, ttl_secs } => Action::Hold { hold: HoldDetails { date: day, ..hold }, ttl_secs },
                    _ => unreachable!(),
                },
                4 => Action::ConfirmHold {
                    hold_id: pick(&holds_known, random(64)),
                    booking_id: Uuid::from_u128(id),
                    patient: None,
                    patient_id: None,
                    kind: None,
                },
                5 => Action::Reschedule {
                    booking_id: pick(&bookings, random(64)),
                    to: Move { doctor: None, date: Some(day), slot, expected_version: None },
                },
                6 => Action::MarkAttendance { booking_id: pick(&bookings, random(64)), attendance: Attendance::Arrived, correct: false },
                7 => match join(id, None, "w") {
                    Action::JoinWaitlist(entry) => Action::JoinWaitlist(EntryDetails { date: day, ..entry }),
                    _ => unreachable!(),
                },
                _ => Action::WithdrawEntry { entry_id: pick(&entries, random(64)) },
            };
            let touched = touched_days(tenant, &action);
            let closed = touched.iter().any(|d| days::is_closed(Some(tenant), "c", *d, &rules, now));
            let context = Context { now, position_next: state.position + 1 };
            let command = command(action.clone());
            match decide(&state, &command, &context) {
                Ok(events) => {
                    assert!(!closed || events.is_empty(), "{action:?} at {now} on a closed day appended {events:?}");
                    for event in &events {
                        apply(&mut state, event);
                    }
                    if closed {
                        // A repeat answers from the records read back.
                        reply(&state, &command, &events);
                        repeats_closed += 1;
                    }
                    match &action {
                        Action::Book(b) if !events.is_empty() => bookings.push(b.booking_id),
                        Action::ConfirmHold { booking_id, .. } if !events.is_empty() => bookings.push(*booking_id),
                        Action::Hold { hold, .. } if !events.is_empty() => holds_known.push(hold.hold_id),
                        Action::JoinWaitlist(e) if !events.is_empty() => entries.push(e.entry_id),
                        _ => {}
                    }
                    log.extend(events);
                }
                Err(Rejection::DayClosed { date, closed_since }) => {
                    assert!(closed && touched.contains(&date), "{action:?} refused as closed at {now}");
                    assert_eq!(closed_since, days::closes_on(date, &rules));
                    refused_closed += 1;
                }
                Err(_) => {}
            }
            // Nothing of a closed day is left in memory.
            let tenant = state.tenant("kloqo").unwrap();
            if let Some(through) = tenant.clinics["c"].closed_through {
                assert!(tenant.bookings.values().all(|b| b.details.date > through), "a closed day's booking in memory");
                assert!(tenant.holds.values().all(|h| h.details.date > through), "a closed day's hold in memory");
                assert!(tenant.waitlist.values().all(|e| e.details.date > through), "a closed day's entry in memory");
                assert!(tenant.clinics["c"].doctors["d"].days.keys().all(|d| *d > through), "a closed day in memory");
            }
        }
        assert_eq!(recover_log(rules, &log), {
            let mut s = state.clone();
            s.compact();
            s
        });
    }
    assert!(
        refused_closed > 100 && repeats_closed > 20 && closings > 100 && expired_waiting > 3,
        "the worlds reach closed days: {refused_closed} refused, {repeats_closed} repeats, {closings} closings, {expired_waiting} waiting entries expired"
    );
}

/// The clinic days `action` would change, as the test sees them (read from
/// the state for commands that name a booking or hold).
fn touched_days(tenant: &TenantState, action: &Action) -> Vec<NaiveDate> {
    match action {
        Action::Book(b) => vec![b.date],
        Action::Hold { hold, .. } => vec![hold.date],
        Action::JoinWaitlist(e) => vec![e.date],
        Action::ConfirmHold { hold_id, .. } => tenant.find_hold(hold_id).map(|h| h.details.date).into_iter().collect(),
        Action::Cancel { booking_id, .. } | Action::MarkAttendance { booking_id, .. } => {
            tenant.find_booking(booking_id).map(|b| b.details.date).into_iter().collect()
        }
        Action::Reschedule { booking_id, to } => {
            tenant.find_booking(booking_id).map(|b| vec![b.details.date, to.date.unwrap_or(b.details.date)]).unwrap_or_default()
        }
        _ => vec![],
    }
}

/// A closed day keeps the schedule in force when it closed: a schedule that
/// no longer fits a closed day's booking is no conflict, while one that does
/// not fit an open day's is.
#[test]
fn a_new_schedule_must_fit_the_open_days_only() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(3), t0()).unwrap();
    booked(run(&mut state, &mut log, Action::Book(book(1, 2, BookingKind::Advance)), t0()));
    let conflict = run(&mut state, &mut log, schedule(2), t0());
    assert_eq!(conflict, Err(Rejection::ScheduleConflict { booking_id: Uuid::from_u128(1), date: date(), slot: 2 }));
    let later = t0() + Duration::days(4);
    for event in days::closings_due(&state, &Context { now: later, position_next: state.position + 1 }) {
        apply(&mut state, &event);
        log.push(event);
    }
    assert!(state.tenant("kloqo").unwrap().bookings.is_empty(), "the day closed");
    assert!(matches!(run(&mut state, &mut log, schedule(2), later), Ok(Reply::Schedule { .. })));
}
