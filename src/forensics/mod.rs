//! The read side for investigators: the audit of the raw events, the events as
//! JSON and as a timeline, the clinic index for time travel. It reads the log;
//! it never writes and never touches the writer's state.

pub mod audit;
pub mod clinics;
pub mod json;
pub mod timeline;
