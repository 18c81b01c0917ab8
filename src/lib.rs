//! booking-ledger: an event-sourced booking ledger that makes duplicate side
//! effects impossible.
//!
//! Every command goes to one writer ([`writer`]), which checks it against the
//! in-memory projection with the pure core ([`core`]), appends the resulting
//! events to the checksummed, hash-chained log ([`log`]), makes them durable
//! with one fdatasync per batch, and only then answers. At start the
//! projection is recovered from the log.
//!
//! - [`core`]: commands, events, rejections, `decide` and `apply`. No I/O, no clock.
//! - [`log`]: the segmented append-only file format and its in-memory twin.
//! - [`writer`]: the single-writer actor, the only code that calls both.
//! - [`http`]: the HTTP API of `shared/API.md`.
//! - [`forensics`]: the read side for investigators (audit, clinic index, JSON, timeline).
//! - [`cli`]: configuration, start-up, shutdown, and the offline commands.
//! - [`metrics`]: Prometheus counters and histograms.
//!
//! `ARCHITECTURE.md` has the codemap and the invariants.

#![forbid(unsafe_code)]

pub mod cli;
pub mod core;
pub mod forensics;
pub mod http;
pub mod log;
pub mod metrics;
pub mod rejections;
pub mod writer;
