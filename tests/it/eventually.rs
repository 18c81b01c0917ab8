//! The tests' one way to wait for something that must happen: `eventually`
//! checks until the check passes, and fails the test, saying what it waited
//! for and what it last saw, once a timeout has passed. The timeout bounds a
//! hang; no test asserts on how long anything took.
//!
//! Plain std and tokio, so the writer's unit tests (`src/writer/tests.rs`)
//! and the cluster bench include this file as it is.

use std::fmt::{Debug, Display};
use std::time::Duration;

use tokio::time::Instant;

/// How long a test waits for something that must happen: far beyond what it
/// takes on a loaded machine, so reaching it means the thing is not coming.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// The pause after the first check that did not pass; each next pause is
/// twice the last, up to [`PAUSE_MAX`]. What comes in a millisecond is seen
/// within about one, and what takes seconds (a failover) is not checked
/// hundreds of times a second on the two cores it shares.
const PAUSE_MIN: Duration = Duration::from_millis(1);
const PAUSE_MAX: Duration = Duration::from_millis(100);

/// Runs `check` until it returns `Ok`, and returns what it returned. An `Err`
/// holds what the check saw instead (a status, a count, a log line). Once
/// `timeout` has passed, a check still running then included, the test fails
/// with `what` and the last `Err`; `what` is formatted only then, so it may
/// gather something costly (a cluster's logs).
pub async fn eventually<T, E: Debug>(what: impl Display, timeout: Duration, mut check: impl AsyncFnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = PAUSE_MIN;
    loop {
        let seen = match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => seen,
            Err(_) => panic!("not within {timeout:?}: {what} (a check was still running)"),
        };
        tokio::time::sleep(pause).await;
        if Instant::now() >= deadline {
            panic!("not within {timeout:?}: {what} (the last check saw {seen:#?})");
        }
        pause = PAUSE_MAX.min(pause * 2);
    }
}

/// (No `use`: the cluster bench includes this file and is checked with
/// `cfg(test)` but without its tests, where an import would be unused.)
#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn it_returns_what_the_first_passing_check_returned() {
        let mut checks = 0;
        let value = super::eventually("the third check passes", super::WAIT_MAX, async || {
            checks += 1;
            if checks == 3 { Ok(checks * 10) } else { Err(checks) }
        })
        .await;
        assert_eq!((value, checks), (30, 3));
    }

    #[tokio::test]
    #[should_panic(expected = "not within 20ms: a check passes (the last check saw \"no\")")]
    async fn it_fails_naming_what_it_waited_for_and_what_it_last_saw() {
        super::eventually("a check passes", super::Duration::from_millis(20), async || Err::<(), _>("no")).await;
    }

    #[tokio::test]
    #[should_panic(expected = "not within 20ms: a check passes (a check was still running)")]
    async fn a_check_that_never_returns_is_bounded_too() {
        super::eventually("a check passes", super::Duration::from_millis(20), async || std::future::pending::<Result<(), ()>>().await)
            .await;
    }
}
