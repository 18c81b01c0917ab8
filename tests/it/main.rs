//! The integration tests: one binary, one module per area (matklad's
//! "Delete Cargo Integration Tests").

mod audit;
mod backup;
mod calls;
mod clinics;
#[cfg(feature = "cluster")]
mod cluster;
#[cfg(feature = "cluster")]
mod cluster_harness;
mod communities;
mod concurrency;
mod crash;
mod dashboard;
mod days;
mod durability;
mod eventually;
mod forensics;
mod format;
mod frontends;
mod holds;
mod hostile;
mod idempotency;
mod isolation;
mod limits;
mod offline;
mod openapi;
mod operating;
mod phones;
mod read_limits;
mod readers;
mod reschedule;
mod snapshots;
mod storage;
mod support;
mod tokens;
mod verify;
mod waitlist;
mod zones;
