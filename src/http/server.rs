//! The accept loop: at most `max_connections` connections open at once, a
//! deadline for each request's headers and for the whole request, a bound on
//! request heads, backoff on accept errors, and graceful shutdown. It serves
//! `app`'s router over HTTP/1.1 and decides nothing about the requests itself.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::error::ApiError;
use crate::metrics::Metrics;

/// A request head (request line and headers) over this is refused: 431 (API.md).
pub const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Hyper keeps at most this much of an unfinished head before it refuses the
/// request itself. It answers that refusal with a bare 431 (no body: hyper
/// writes the status line from inside its parser and takes no body for it), so
/// hyper's cap sits above `HEAD_BYTES_MAX`: heads between the two reach us and
/// get a problem document; only larger ones get hyper's bare 431. It also bounds
/// what a connection can make us buffer before its headers are done.
pub const HEAD_BYTES_BUFFERED_MAX: usize = 2 * HEAD_BYTES_MAX;

/// Header lines per request, at most (hyper's own default, named here). More
/// is refused by hyper's parser, with a bare 431 as above.
pub const HEADERS_LEN_MAX: usize = 100;

/// File descriptors kept for the logs, journals, listener and the runtime on
/// top of one per connection, when checking `max_connections` against the
/// process's open-files limit.
const FILES_RESERVED: u64 = 256;

/// After an accept error that is not one connection's fault (EMFILE, ENFILE,
/// ENOBUFS), the loop waits before trying again, doubling from the first bound
/// to the second: retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// API.md's connection limits, the `[limits]` keys `max_connections`,
/// `header_timeout_secs` and `request_timeout_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, at most; more wait in the kernel's backlog,
    /// unaccepted, until one closes.
    pub connections_max: usize,
    /// A request's headers must all arrive within this of the connection
    /// becoming ready for it (accepted, or its previous response sent), or the
    /// connection is closed. It is also how long a kept-alive connection may idle.
    pub header_timeout: Duration,
    /// The whole request, headers and body, must arrive within this of the
    /// connection becoming ready for it, or it is answered 408.
    pub request_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { connections_max: 10_000, header_timeout: Duration::from_secs(10), request_timeout: Duration::from_secs(30) }
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
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(HEAD_BYTES_BUFFERED_MAX)
        .max_headers(HEADERS_LEN_MAX);
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
        let ready = Arc::new(Ready::new());
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |request: Request<Incoming>| {
                let deadline = ready.since() + limits.request_timeout;
                let (router, ready) = (router.clone(), ready.clone());
                async move {
                    let response = respond(router, request, deadline, limits.request_timeout).await;
                    Ok::<_, Infallible>(response.map(|body| Body::new(Sending { body, ready })))
                }
            }
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

/// When a connection became ready for its next request: when it was accepted,
/// then each time a response has been sent. Hyper's header timeout counts from
/// the same moments, so `request_timeout` covers headers and body alike. A
/// `parking_lot::Mutex` because one connection's requests never contend for it.
struct Ready(parking_lot::Mutex<Instant>);

impl Ready {
    fn new() -> Ready {
        Ready(parking_lot::Mutex::new(Instant::now()))
    }

    fn since(&self) -> Instant {
        *self.0.lock()
    }
}

/// A response body on its way out; when hyper is done with it (sent, or the
/// connection gone) the connection is ready for its next request.
struct Sending {
    body: Body,
    ready: Arc<Ready>,
}

impl Drop for Sending {
    fn drop(&mut self) {
        *self.ready.0.lock() = Instant::now();
    }
}

impl hyper::body::Body for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    // Forwarded so that hyper still sends Content-Length rather than chunks.
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The router's answer to `request`, unless its head is too large or it came
/// too late.
async fn respond(router: Router, request: Request<Incoming>, deadline: Instant, request_timeout: Duration) -> Response<Body> {
    let head_len = head_len(&request);
    if head_len > HEAD_BYTES_MAX {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            format!("request headers are limited to {HEAD_BYTES_MAX} bytes; these are {head_len}"),
        )
        .into_response();
    }
    if Instant::now() >= deadline {
        return RequestTimedOut { request_timeout }.problem().into_response();
    }
    // A deadline on reading the body, not a timeout around the handler (such as
    // tower-http's `TimeoutLayer`): a handler waiting for the writer may already
    // have had its command made durable, and cutting it off then would answer
    // 408 for a command that took effect.
    let request = request.map(|body| Body::new(DeadlineBody { body, deadline, sleep: None, request_timeout }));
    router.oneshot(request).await.unwrap_or_else(|never| match never {})
}

/// The bytes of a request head as HTTP/1.1 spells it: the request line, each
/// `name: value` line and the blank line, each with its CRLF.
fn head_len(request: &Request<Incoming>) -> usize {
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |scheme| scheme.len() + "://".len())
        + uri.authority().map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(0, |path| path.as_str().len());
    let line = request.method().as_str().len() + " ".len() + target + " HTTP/1.1\r\n".len();
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + "\r\n".len()).sum();
    line + headers + "\r\n".len()
}

/// The request's body did not arrive in full before its deadline.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request did not arrive in full within {} s", request_timeout.as_secs())]
pub struct RequestTimedOut {
    pub request_timeout: Duration,
}

impl RequestTimedOut {
    /// 408 `request_timeout`; the connection closes after it, since the rest of
    /// the body may still be on its way.
    pub fn problem(&self) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", self.to_string())
            .with("request_timeout_secs", self.request_timeout.as_secs())
    }

    /// The deadline that ended a body read, if that is what `error` comes from
    /// (however deep axum has wrapped it).
    pub fn cause_of(error: &(dyn std::error::Error + 'static)) -> Option<RequestTimedOut> {
        let mut error = Some(error);
        while let Some(e) = error {
            if let Some(timed_out) = e.downcast_ref::<RequestTimedOut>() {
                return Some(*timed_out);
            }
            error = e.source();
        }
        None
    }
}

/// A request body that fails with `RequestTimedOut` once its deadline passes.
/// The timer is made only if the body is not all there when first read.
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    request_timeout: Duration,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(RequestTimedOut { request_timeout: self.request_timeout })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
