//! Prometheus metrics: what the writer and the server count, and the text
//! exposition served at `/metrics`.

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// Commands decided, by outcome: `accepted`, `repeated` (a stored answer sent again), `overloaded` (a new
    /// key met a full idempotency table), or the rejection's code.
    pub commands: IntCounterVec,
    pub events_appended: IntCounter,
    pub batch_len: Histogram,
    pub fsync_seconds: Histogram,
    pub queue_depth: IntGauge,
    pub recovered_events: IntGauge,
    /// The position of the snapshot start-up recovered from (0: none, the whole log).
    pub recovered_snapshot_position: IntGauge,
    /// The position of the last snapshot the snapshot thread wrote.
    pub snapshot_position: IntGauge,
    /// Time to take one snapshot: load the last, apply the events after it, write it.
    pub snapshot_seconds: Histogram,
    /// Snapshots the snapshot thread failed to take.
    pub snapshot_failures: IntCounter,
    /// Refused commands the rejection journal dropped (it failed), counted by the writer.
    pub rejections_dropped: IntCounter,
    /// HTTP requests answered by the router, by route template, method and status.
    pub http_requests: IntCounterVec,
    /// Time from a request's head to its response's head, by route template and method.
    pub http_request_seconds: HistogramVec,
    /// Idempotency answers held, against `idempotency_keys_max`.
    pub idempotency_keys: IntGauge,
    /// HTTP connections open, against `max_connections`.
    pub connections_open: IntGauge,
    /// Accepts that failed for want of resources (EMFILE and the like), each followed by a pause.
    pub accept_errors: IntCounter,
    /// Batches whose write or sync failed (their commands' outcome unknown).
    pub storage_failures: IntCounter,
    /// Re-opens of the logs after a storage failure, by result (`ok`, `later`, `never`).
    pub storage_reopens: IntCounterVec,
    /// 1 while storage is down (commands refused), else 0.
    pub storage_down: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let commands = IntCounterVec::new(
            Opts::new(
                "ledger_commands_total",
                "Commands decided by the writer, by outcome (accepted, repeated, overloaded, or the rejection code).",
            ),
            &["outcome"],
        )
        .unwrap();
        let events_appended = IntCounter::new("ledger_events_appended_total", "Events appended to the ledger.").unwrap();
        let batch_len = Histogram::with_opts(
            HistogramOpts::new("ledger_batch_commands", "Commands committed per batch (per fdatasync).")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
        )
        .unwrap();
        let fsync_seconds = Histogram::with_opts(
            HistogramOpts::new("ledger_fsync_seconds", "Time to make one batch durable.")
                .buckets(prometheus::exponential_buckets(0.000_025, 2.0, 14).unwrap()),
        )
        .unwrap();
        let queue_depth = IntGauge::new("ledger_queue_depth", "Commands waiting for the writer when it last took a batch.").unwrap();
        let recovered_events = IntGauge::new("ledger_recovered_events", "Events applied by the start-up recovery.").unwrap();
        let recovered_snapshot_position = IntGauge::new(
            "ledger_recovered_snapshot_position",
            "The position of the snapshot the start-up recovery started from (0: none, the whole log).",
        )
        .unwrap();
        let snapshot_position =
            IntGauge::new("ledger_snapshot_position", "The position of the last snapshot the snapshot thread wrote (0: none yet).")
                .unwrap();
        let snapshot_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ledger_snapshot_seconds",
                "Time to take one snapshot: load the last one, apply the events after it, write it.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 4.0, 10).unwrap()),
        )
        .unwrap();
        let snapshot_failures = IntCounter::new("ledger_snapshot_failures_total", "Snapshots the snapshot thread failed to take.").unwrap();
        let rejections_dropped = IntCounter::new(
            "ledger_rejections_dropped_total",
            "Refused commands the rejection journal dropped (it had failed and not re-opened yet).",
        )
        .unwrap();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "ledger_http_requests_total",
                "HTTP requests answered by the router, by route template (not the path), method and status.",
            ),
            &["route", "method", "status"],
        )
        .unwrap();
        let http_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ledger_http_request_duration_seconds",
                "Time from a request's head to its response's head (a live stream: to opening it), by route template and method.",
            )
            .buckets(vec![0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["route", "method"],
        )
        .unwrap();
        let idempotency_keys = IntGauge::new(
            "ledger_idempotency_keys",
            "Idempotency-Key answers held (within their retention window, or expired and not yet forgotten).",
        )
        .unwrap();
        let connections_open = IntGauge::new("ledger_connections_open", "HTTP connections open (at most max_connections).").unwrap();
        let accept_errors = IntCounter::new(
            "ledger_accept_errors_total",
            "Accepts that failed for want of resources (such as too many open files); each is followed by a pause.",
        )
        .unwrap();
        let storage_failures =
            IntCounter::new("ledger_storage_failures_total", "Batches whose write or sync of the log failed (their outcome unknown).")
                .unwrap();
        let storage_reopens = IntCounterVec::new(
            Opts::new("ledger_storage_reopens_total", "Re-opens of the logs after a storage failure, by result (ok, later, never)."),
            &["result"],
        )
        .unwrap();
        let storage_down = IntGauge::new("ledger_storage_down", "1 while storage is down and commands are refused, else 0.").unwrap();
        for collector in [
            Box::new(commands.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events_appended.clone()),
            Box::new(batch_len.clone()),
            Box::new(fsync_seconds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(recovered_events.clone()),
            Box::new(recovered_snapshot_position.clone()),
            Box::new(snapshot_position.clone()),
            Box::new(snapshot_seconds.clone()),
            Box::new(snapshot_failures.clone()),
            Box::new(rejections_dropped.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_request_seconds.clone()),
            Box::new(idempotency_keys.clone()),
            Box::new(connections_open.clone()),
            Box::new(accept_errors.clone()),
            Box::new(storage_failures.clone()),
            Box::new(storage_reopens.clone()),
            Box::new(storage_down.clone()),
        ] {
            registry.register(collector).unwrap();
        }
        Metrics {
            registry,
            commands,
            events_appended,
            batch_len,
            fsync_seconds,
            queue_depth,
            recovered_events,
            recovered_snapshot_position,
            snapshot_position,
            snapshot_seconds,
            snapshot_failures,
            rejections_dropped,
            http_requests,
            http_request_seconds,
            idempotency_keys,
            connections_open,
            accept_errors,
            storage_failures,
            storage_reopens,
            storage_down,
        }
    }

    /// Adds metrics kept elsewhere (the cluster's) to the exposition.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry.register(collector).expect("metric names are unique");
    }

    pub fn command(&self, outcome: &str) {
        self.commands.with_label_values(&[outcome]).inc();
    }

    /// One HTTP request answered: `route` is the route's template, never the raw path.
    pub fn http_request(&self, route: &str, method: &str, status: axum::http::StatusCode, elapsed: std::time::Duration) {
        self.http_requests.with_label_values(&[route, method, status.as_str()]).inc();
        self.http_request_seconds.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
