//! The accept loop: at most `max_connections` connections open at once, a
//! deadline for each request's headers, backoff on accept errors, and graceful
//! shutdown. It serves `app`'s router over HTTP/1.1 and decides nothing about
//! the requests itself.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// File descriptors kept for the logs, journals, listener and the runtime on
/// top of one per connection, when checking `max_connections` against the
/// process's open-files limit.
const FILES_RESERVED: u64 = 256;

/// After an accept error that is not one connection's fault (EMFILE, ENFILE,
/// ENOBUFS), the loop waits before trying again, doubling from the first bound
/// to the second: retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// API.md's connection limits, the `[limits]` keys `max_connections` and
/// `header_timeout_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, at most; more wait in the kernel's backlog,
    /// unaccepted, until one closes.
    pub connections_max: usize,
    /// A request's headers must all arrive within this of the connection
    /// becoming ready for it (accepted, or its previous response sent), or the
    /// connection is closed. It is also how long a kept-alive connection may idle.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { connections_max: 10_000, header_timeout: Duration::from_secs(10) }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the open connections: requests in flight finish,
/// idle connections close. The `io::Result` matches `axum::serve`; accept
/// errors are waited out, not returned, so today it always ends `Ok`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    warn_if_files_run_out(limits.connections_max);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut accept_errors: u64 = 0;
    loop {
        // The permit is taken before accepting: at the limit, new connections
        // stay in the kernel's backlog and cost this process nothing.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if accept_errors > 0 {
                    tracing::info!(accept_errors, "accepting connections again after {accept_errors} failed accepts");
                    accept_errors = 0;
                }
                backoff = ACCEPT_BACKOFF_MIN;
                stream
            }
            // That one connection is gone before it was accepted; the next is fine.
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                metrics.accept_errors.inc();
                if accept_errors == 0 {
                    tracing::warn!(%error, "accepting a connection failed; backing off (is max_connections above the open-files limit?)");
                }
                accept_errors += 1;
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |request: Request<Incoming>| router.clone().oneshot(request.map(Body::new))
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let open = Open::new(permit, metrics.clone());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that vanished between the kernel's accept queue
/// and us (as `axum::serve` has them): not a reason to wait.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}

/// One open connection: holds its permit, and counts in the gauge, until the
/// connection's task ends however it ends.
struct Open {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Open {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Open {
        metrics.connections_open.inc();
        Open { _permit: permit, metrics }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

/// The process's soft limit on open files (Linux's `/proc/self/limits`); None
/// where that cannot be read or there is no limit.
pub fn open_files_max() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Says at start-up, rather than in accept errors under load, that the
/// connections allowed exceed the files the process may open.
fn warn_if_files_run_out(connections_max: usize) {
    if let Some(files_max) = open_files_max()
        && connections_max as u64 + FILES_RESERVED > files_max
    {
        tracing::warn!(
            connections_max,
            files_max,
            "limits.max_connections ({connections_max}) and {FILES_RESERVED} files for the ledger exceed the open-files limit \
             ({files_max}, ulimit -n): accepts will fail before the connection limit is reached"
        );
    }
}
