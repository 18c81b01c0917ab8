//! booking-ledger: an event-sourced booking ledger that makes duplicate side
//! effects impossible.
//!
//! Every command goes to one writer ([`writer`]), which checks it against the
//! in-memory projection with the pure core ([`core`]), appends the resulting
//! events to the checksummed, hash-chained log ([`log`]), makes them durable
//! with one fdatasync per batch, and only then answers. At start the
//! projection is recovered from the newest snapshot and the log after it.
//!
//! - [`core`]: commands, events, rejections, `decide` and `apply`. No I/O, no clock.
//! - [`log`]: the segmented append-only file format and its in-memory twin.
//! - [`writer`]: the single-writer actor, the only code that calls both.
//! - [`validate`]: the rules a command's values must meet, and their limits;
//!   the handlers, the fuzz targets and the offline commands all check with it.
//! - [`http`]: the HTTP API of `shared/API.md`.
//! - [`forensics`]: the read side for investigators (audit, clinic index, JSON, timeline).
//! - [`snapshots`]: the state written beside the ledger every so many events, so
//!   that start-up applies only the events after the newest snapshot.
//! - [`cli`]: configuration, start-up, shutdown, and the offline commands.
//! - `cluster`: cluster mode on NATS JetStream, behind the cargo feature
//!   `cluster` (on by default); without it a `[cluster]` section is refused.
//! - [`metrics`]: Prometheus counters and histograms.
//!
//! `ARCHITECTURE.md` has the codemap and the invariants.

#![forbid(unsafe_code)]

pub mod cli;
pub mod closed;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod core;
pub mod forensics;
pub mod http;
pub mod log;
pub mod metrics;
pub mod node;
pub mod rejections;
pub mod replay;
pub mod snapshots;
pub mod validate;
pub mod writer;
