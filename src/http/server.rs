//! The accept loop: at most `max_connections` connections open at once, at
//! most `requests_in_flight_max` requests being answered at once (503 beyond),
//! a deadline for each request's headers and for the whole request, a bound on
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::error::ApiError;
use crate::metrics::Metrics;

/// A request head (request line and headers) over this is refused: 431 (API.md).
pub const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Hyper keeps at most this much of an unfinished head before it refuses the
/// request itself. It answers that refusal with a bare 431 (no body: hyper
/// writes the status line from inside its parser and takes no body for it),
/// which `Answering` turns into a problem document on its way out. Heads
/// between the two limits reach the router and are refused there. It also
/// bounds what a connection can make us buffer before its headers are done.
pub const HEAD_BYTES_BUFFERED_MAX: usize = 2 * HEAD_BYTES_MAX;

/// Header lines per request, at most (hyper's own default, named here). More
/// is refused by hyper's parser, with a 431 as above.
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

/// After refusing a request it could not parse, the server reads and discards
/// what the client still sends for at most this long and this many bytes
/// before closing, so that the refusal is read rather than lost to the reset
/// that closing a socket with unread input sends (nginx's "lingering close").
const LINGER_TIME_MAX: Duration = Duration::from_secs(2);
const LINGER_BYTES_MAX: u64 = 4 << 20;

/// Routes answered whatever the load, so that probes and scrapes see an
/// overloaded server as overloaded rather than dead.
const PATHS_NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// API.md's connection limits, the `[limits]` keys `max_connections`,
/// `requests_in_flight_max`, `header_timeout_secs` and `request_timeout_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, at most; more wait in the kernel's backlog,
    /// unaccepted, until one closes.
    pub connections_max: usize,
    /// Requests being answered at once, at most; beyond it a request is
    /// answered 503 `overloaded` at once rather than queued, so that those
    /// admitted keep a bounded latency and the memory they hold stays bounded.
    /// Counted from the request's head to the router's response (a live
    /// stream's open body does not count).
    pub requests_in_flight_max: usize,
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
        ConnectionLimits {
            connections_max: 10_000,
            requests_in_flight_max: 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
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
    let in_flight = Arc::new(Semaphore::new(limits.requests_in_flight_max));
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
            let (router, in_flight) = (router.clone(), in_flight.clone());
            move |request: Request<Incoming>| {
                let deadline = ready.since() + limits.request_timeout;
                let (router, ready, in_flight) = (router.clone(), ready.clone(), in_flight.clone());
                async move {
                    let response = match admit(&in_flight, &request, limits.requests_in_flight_max) {
                        Ok(permit) => {
                            let response = respond(router, request, deadline, limits.request_timeout).await;
                            drop(permit);
                            response
                        }
                        Err(shed) => shed.into_response(),
                    };
                    Ok::<_, Infallible>(response.map(|body| Body::new(Sending { body, ready })))
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(Answering::new(stream)), service));
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

/// A permit to answer `request`, or 503 `overloaded` when
/// `requests_in_flight_max` requests are already being answered. Probes and
/// metrics are never shed.
fn admit(in_flight: &Arc<Semaphore>, request: &Request<Incoming>, in_flight_max: usize) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if PATHS_NEVER_SHED.contains(&request.uri().path()) {
        return Ok(None);
    }
    in_flight.clone().try_acquire_owned().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("the server is answering as many requests as it allows at once ({in_flight_max}); retry shortly"),
        )
        .retry_after(1)
    })
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

/// A connection's socket as hyper sees it. Hyper answers a request it cannot
/// parse (a malformed request line or header, a head over its cap) itself,
/// from inside its parser, with a bare status line and no body; this wrapper
/// recognises such an answer as it is written and sends a problem document in
/// its place, so that every refusal is `application/problem+json`. It then
/// lingers on close (`LINGER_TIME_MAX`): the client is usually still sending.
struct Answering {
    /// None only once dropped.
    stream: Option<TcpStream>,
    /// A replacement being written: its bytes, how many are out, and how many
    /// bytes of hyper's answer it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
    replaced: bool,
}

impl Answering {
    fn new(stream: TcpStream) -> Answering {
        Answering { stream: Some(stream), replacing: None, replaced: false }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("the stream is there until dropped"))
    }
}

/// The problem document to send instead of `written`, if it is one of hyper's
/// own bare answers: a whole head alone, status 400, 414 or 431, no
/// Content-Type. Every answer of the router carries a Content-Type.
fn replacement_for(written: &[u8]) -> Option<Vec<u8>> {
    let head = written.strip_prefix(b"HTTP/1.1 ")?;
    if !head.ends_with(b"\r\n\r\n") || head.windows(13).any(|w| w.eq_ignore_ascii_case(b"content-type:")) {
        return None;
    }
    let problem = match head.get(..4)? {
        b"400 " => ApiError::invalid("the request is not well-formed HTTP/1.1 (request line or header syntax)"),
        b"414 " => ApiError::new(StatusCode::URI_TOO_LONG, "uri_too_long", "the request target is too long"),
        b"431 " => ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            format!("request headers are limited to {HEAD_BYTES_MAX} bytes and {HEADERS_LEN_MAX} lines"),
        ),
        _ => return None,
    };
    let body = problem.body();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        problem.status.as_u16(),
        problem.status.canonical_reason().unwrap_or("Error"),
        super::error::PROBLEM_JSON,
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl AsyncRead for Answering {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Answering {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none()
            && let Some(answer) = replacement_for(buf)
        {
            self.replacing = Some((answer, 0, buf.len()));
            self.replaced = true;
        }
        let Some((answer, mut out, stands_for)) = self.replacing.take() else {
            return self.stream().poll_write(cx, buf);
        };
        while out < answer.len() {
            match self.stream().poll_write(cx, &answer[out..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => out += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    self.replacing = Some((answer, out, stands_for));
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(stands_for))
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        // Hyper's own answers are a head alone, the first slice.
        match bufs.first() {
            Some(first) if self.replacing.is_some() || replacement_for(first).is_some() => self.poll_write(cx, first),
            _ => self.stream().poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|stream| stream.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else { return };
        if !self.replaced {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let _ = stream.shutdown().await;
            let drain = async {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut (&mut stream).take(LINGER_BYTES_MAX), &mut sink).await;
            };
            let _ = tokio::time::timeout(LINGER_TIME_MAX, drain).await;
        });
    }
}
