//! Core tests: explicit scenarios, then an exhaustive small world.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

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

fn book(id: u128, slot: u32, kind: BookingKind) -> BookRequest {
    BookRequest {
        booking_id: Uuid::from_u128(id),
        clinic: "c".into(),
        doctor: "d".into(),
        date: date(),
        slot,
        patient: format!("patient {id}").into(),
        kind,
        external_ref: None,
        correlation_id: None,
        external_created_at: None,
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

fn replay(rules: Rules, log: &[Event]) -> State {
    let mut state = State::new(rules);
    for event in log {
        apply(&mut state, event);
    }
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
    assert_eq!(replay(state.rules, &log), state);
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

#[test]
fn external_refs_bind_once_and_stale_answers_are_refused() {
    let (mut state, mut log) = (State::default(), Vec::new());
    run(&mut state, &mut log, schedule(5), t0()).unwrap();
    let external = |id, slot, correlation: Option<&str>, created: DateTime<Utc>| {
        Action::Book(BookRequest {
            external_ref: Some("cal-1".into()),
            correlation_id: correlation.map(Into::into),
            external_created_at: Some(created),
            ..book(id, slot, BookingKind::Advance)
        })
    };
    let stale = run(&mut state, &mut log, external(1, 0, Some("call-1"), t0() - Duration::minutes(35)), t0());
    assert_eq!(stale, Err(Rejection::StaleExternalBooking { age_secs: 35 * 60, window_secs: 30 }));
    let first = run(&mut state, &mut log, external(1, 0, Some("call-1"), t0()), t0());
    assert!(matches!(first, Ok(Reply::Booking { created: true, .. })));
    // The same ref and correlation: the existing booking, even for another slot.
    let repeat = run(&mut state, &mut log, external(2, 1, Some("call-1"), t0()), t0());
    assert!(matches!(&repeat, Ok(Reply::Booking { created: false, booking }) if booking.booking_id == Uuid::from_u128(1)));
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
            let numbers = tokens.entry((&booking.clinic, &booking.doctor, booking.date, booking.kind)).or_default();
            assert!(numbers.insert(booking.token_number), "{tenant_name}: token {} issued twice", booking.token());
            if booking.status == BookingStatus::Confirmed {
                let key = (&*booking.clinic, &*booking.doctor, booking.date, booking.slot);
                assert!(active.insert(key, booking.booking_id).is_none(), "two active bookings for {key:?}");
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
            assert_eq!(tenant.bookings[id].external_ref.as_ref(), Some(external_ref));
        }
        let with_refs = tenant.bookings.values().filter(|b| b.external_ref.is_some()).count();
        assert_eq!(with_refs, tenant.external_refs.len(), "each external ref bound once");
    }
}

/// Every ordering of up to four commands drawn (with repetition) from a pool
/// over two slots: the invariants hold after every step, rejections append
/// nothing, and replaying the log (also through the on-disk codec) gives the
/// state that incremental application built.
#[test]
fn exhaustive_small_world() {
    let pool: Vec<Box<dyn Fn(u128) -> Action>> = vec![
        Box::new(|_| schedule(2)),
        Box::new(|_| schedule(1)),
        Box::new(|id| Action::Book(book(id, 0, BookingKind::Advance))),
        Box::new(|id| Action::Book(book(id, 0, BookingKind::WalkIn))),
        Box::new(|id| Action::Book(book(id, 1, BookingKind::Advance))),
        Box::new(|id| {
            Action::Book(BookRequest {
                external_ref: Some("ext".into()),
                correlation_id: Some("corr".into()),
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
                match run(&mut state, &mut log, pool[c](next_id), now) {
                    Ok(Reply::Booking { created: true, .. }) => next_id += 1,
                    Ok(_) => {}
                    Err(_) => assert_eq!(log.len(), before, "{sequence:?}: a rejection appended"),
                }
                check_invariants(&state);
            }
            assert_eq!(replay(state.rules, &log), state, "{sequence:?}");
            let decoded: Vec<Event> =
                log.iter().map(|e| crate::log::codec::decode_event(&crate::log::codec::encode_event(e)).unwrap()).collect();
            assert_eq!(decoded, log, "{sequence:?}");
            runs += 1;
        }
    }
    assert_eq!(runs, 8 + 64 + 512 + 4096);
}
