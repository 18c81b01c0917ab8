//! The read side: everything that reads the ledger beside the writer (pages
//! and live feeds of events and refusals, the audit, the clinic index for time
//! travel, the follower that keeps those indexes up to date, the JSON and text
//! renderings). It reads the log's files through `log::events`, up to the
//! durable position the writer publishes; it never writes, never calls the
//! core's `decide` or `apply`, and never touches the writer.

pub mod audit;
pub mod clinics;
pub mod disk;
pub mod feed;
pub mod follower;
pub mod json;
pub mod timeline;

pub use crate::log::events::READ_CHUNK_LEN;
