//! Pages and live feeds of the ledger's events and of the rejection journal,
//! and the one filter that `GET /events`, `ledger replay` and `ledger export`
//! share. The HTTP layer only authenticates, parses queries and renders.
//!
//! Every read is bounded: a page returns at most `limit` items and scans at
//! most [`PAGE_SCAN_MAX`] records; a feed holds at most its channel's buffer.
//! A record that cannot be read ends the page or the feed with an error that
//! names it; nothing is skipped.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::core::{Event, RejectionRecord, Text};
use crate::log::events::{EventReader, Fault, ReadError};
use crate::log::{Durable, Position, Tail, codec};

/// Records read per page, at most, however few belong to the tenant: `next`
/// then says where to go on.
pub const PAGE_SCAN_MAX: u64 = 100_000;
/// Records read per disk visit while following.
const FEED_CHUNK_LEN: usize = 256;

/// Which events a reader wants: every filter given must pass.
#[derive(Debug, Default)]
pub struct EventFilter {
    /// Only this tenant's events.
    pub tenant: Option<Text>,
    /// Only events about this clinic: its schedules, bookings and their cancellations.
    pub clinic: Option<Text>,
    /// Only events about this campaign: its calls (started, refused, their
    /// outcomes), its halts and resumptions.
    pub campaign: Option<Text>,
    /// Only events about this phone number (E.164): calls to it (and their
    /// outcomes), its blocking, its purchase and release by a business.
    pub number: Option<Text>,
    /// Only events about this business's phone number: claims, purchase, failure, release.
    pub business: Option<Text>,
    /// Only events caused by this token name.
    pub actor: Option<Text>,
    /// The bookings of `clinic` seen so far, to recognize their cancellations.
    clinic_bookings: BTreeSet<Uuid>,
    /// The calls of `campaign` and to `number` seen so far, to recognize their outcomes.
    campaign_calls: BTreeSet<Uuid>,
    number_calls: BTreeSet<Uuid>,
}

impl EventFilter {
    pub fn tenant(tenant: &str) -> EventFilter {
        EventFilter::new(Some(tenant), None)
    }

    pub fn new(tenant: Option<&str>, clinic: Option<&str>) -> EventFilter {
        EventFilter { tenant: tenant.map(Text::from), clinic: clinic.map(Text::from), ..EventFilter::default() }
    }

    /// Whether `event` passes; events must come in log order.
    pub fn keep(&mut self, event: &Event) -> bool {
        if self.tenant.as_ref().is_some_and(|t| *t != event.tenant) {
            return false;
        }
        // Every subject filter is asked, so each one learns the bookings and
        // calls it follows even from events another filter leaves out.
        let subjects = event.kind.subjects();
        let clinic = follows(&self.clinic, subjects.clinic, subjects.booking, &mut self.clinic_bookings);
        let campaign = follows(&self.campaign, subjects.campaign, subjects.call, &mut self.campaign_calls);
        let number = follows(&self.number, subjects.number, subjects.call, &mut self.number_calls);
        let business = self.business.as_ref().is_none_or(|business| subjects.business == Some(business));
        let actor = self.actor.as_ref().is_none_or(|actor| *actor == event.actor);
        clinic && campaign && number && business && actor
    }
}

/// Whether an event passes a filter on `wanted` (none: every event does): it
/// names `wanted` itself (and then its `child`, a booking or call it creates,
/// is remembered as `wanted`'s), or it names only a child remembered before.
fn follows(wanted: &Option<Text>, named: Option<&Text>, child: Option<Uuid>, children: &mut BTreeSet<Uuid>) -> bool {
    let Some(wanted) = wanted else { return true };
    match named {
        Some(named) if named == wanted => {
            children.extend(child);
            true
        }
        Some(_) => false,
        None => child.is_some_and(|child| children.contains(&child)),
    }
}

/// One page: the items and the `from` of the next page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Position,
}

/// The events `filter` keeps from `from` through `last` (durable), at most `limit`.
pub fn events_page(dir: &Path, filter: &mut EventFilter, from: Position, last: Position, limit: usize) -> Result<Page<Event>, ReadError> {
    let mut reader = EventReader::new(dir, from);
    let mut items = Vec::new();
    while items.len() < limit && reader.next_position() <= last && reader.next_position() - from < PAGE_SCAN_MAX {
        let budget = (PAGE_SCAN_MAX - (reader.next_position() - from)) as usize;
        reader.read(last, budget.min(1024), &mut |event, _| {
            if filter.keep(&event) {
                items.push(event);
            }
            if items.len() >= limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })?;
    }
    Ok(Page { items, next: reader.next_position() })
}

/// The refused commands of `tenant` in the rejection journal in `dir`, from
/// sequence `from` (or the oldest kept) through `last`, at most `limit`.
pub fn rejections_page(dir: &Path, tenant: &str, from: u64, last: u64, limit: usize) -> Result<Page<(u64, RejectionRecord)>, ReadError> {
    let mut tail = Tail::rotated(dir, from);
    let mut items = Vec::new();
    let mut failure = None;
    let start = from;
    while failure.is_none()
        && items.len() < limit
        && tail.next_position() <= last
        && tail.next_position().saturating_sub(start) < PAGE_SCAN_MAX
    {
        tail.read(last, 1024, &mut |seq, location, payload| {
            match codec::decode_rejection(payload) {
                Ok(rejected) if *rejected.tenant == *tenant => items.push((seq, rejected)),
                Ok(_) => {}
                Err(error) => {
                    failure = Some(ReadError::Event {
                        path: crate::log::location_path(dir, location),
                        position: seq,
                        fault: Fault::Undecodable(error),
                    });
                    return ControlFlow::Break(());
                }
            }
            if items.len() >= limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })?;
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(Page { items, next: tail.next_position().max(from) }),
    }
}

/// Follows `tenant`'s events from `from`: catching up, then live as `durable`
/// moves, until `stopping` turns true, the receiver is dropped, or a record
/// cannot be read (the last item is then that error). At most `buffer` events
/// wait for a slow receiver; the reader waits for it, and only it.
pub fn follow_events(
    dir: PathBuf,
    tenant: Text,
    from: Position,
    mut durable: Durable,
    mut stopping: watch::Receiver<bool>,
    buffer: usize,
) -> mpsc::Receiver<Result<Event, ReadError>> {
    let (sender, receiver) = mpsc::channel(buffer);
    tokio::spawn(async move {
        let mut reader = Some(EventReader::new(&dir, from));
        let mut filter = EventFilter::tenant(&tenant);
        loop {
            let last = *durable.borrow_and_update();
            let mut follower = reader.take().expect("the reader is put back after every read");
            if follower.next_position() <= last {
                let read = tokio::task::spawn_blocking(move || {
                    let mut events = Vec::new();
                    let result = follower.read(last, FEED_CHUNK_LEN, &mut |event, _| {
                        events.push(event);
                        ControlFlow::Continue(())
                    });
                    (follower, events, result)
                })
                .await;
                let Ok((follower, events, result)) = read else { return };
                for event in events {
                    // A slow client makes this wait, and only this task.
                    if filter.keep(&event) && sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if let Err(error) = result {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                reader = Some(follower);
                continue;
            }
            reader = Some(follower);
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = stopping.changed() => return,
                () = sender.closed() => return,
            }
        }
    });
    receiver
}
