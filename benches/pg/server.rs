//! A minimal booking server on PostgreSQL: the baseline `make bench-pg` measures the
//! ledger against, what users would otherwise write. Not part of the ledger.
//!
//! `POST /v1/{tenant}/bookings` takes the ledger's JSON body (`clinic`, `doctor`,
//! `date`, `slot`, `patient`) and runs one `INSERT ... ON CONFLICT DO NOTHING
//! RETURNING` on a pool of `--pool` connections (default 16), in its own implicit
//! transaction, so each booking waits for PostgreSQL's commit (default
//! `synchronous_commit = on`: the WAL flushed to disk). A row back is `201` with a
//! small JSON answer; no row means the unique key (tenant, clinic, doctor, date, slot)
//! already holds the slot: `409` with a problem document whose `code` is
//! `slot_taken`, as the ledger answers (without naming the holder, which would take
//! a second query). `POST /bench/echo` returns the body untouched, like the ledger's.
//! Every request but the echo needs `Authorization: Bearer <--token>`.
//!
//! The table is `benches/pg/schema.sql`; `benches/pg/run.sh` creates it and starts
//! this server, which prints `listening on http://ADDR` once it accepts requests.
//!
//! It does the work the ledger's answer to the same request does, minus what a
//! minimal server leaves out: no schedules (any slot number is accepted), no
//! per-day tokens, no Idempotency-Keys, no journal of refusals, no metrics.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Deserialize;
use serde_json::json;
use tokio_postgres::NoTls;
use uuid::Uuid;

const INSERT: &str = "INSERT INTO bookings (booking_id, tenant, clinic, doctor, date, slot, patient) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7) \
                      ON CONFLICT (tenant, clinic, doctor, date, slot) DO NOTHING \
                      RETURNING created_at";

/// The ledger's limits on the same fields (`src/http/clinics.rs`), so both refuse the same bodies.
const NAME_CHARS_MAX: usize = 128;
const PATIENT_CHARS_MAX: usize = 200;

#[derive(Debug, Parser)]
struct Args {
    /// Where to listen; port 0 takes a free one (printed on start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A libpq-style connection string, e.g. "host=127.0.0.1 port=5432 user=bench dbname=postgres".
    #[arg(long)]
    database: String,
    /// The bearer token every booking must carry.
    #[arg(long)]
    token: String,
    /// PostgreSQL connections in the pool.
    #[arg(long, default_value_t = 16)]
    pool: usize,
}

struct App {
    pool: Pool,
    /// `Bearer <token>`, compared with the request's header as bytes.
    authorization: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingRequest {
    clinic: String,
    doctor: String,
    date: String,
    slot: u32,
    patient: String,
}

/// A refusal: an RFC 9457 problem document shaped like the ledger's.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, code, detail: detail.into() }
    }

    fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    fn unavailable(error: impl std::fmt::Display) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("urn:booking-ledger:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

fn check_text(field: &str, value: &str, chars_max: usize) -> Result<(), Problem> {
    let chars = value.chars().count();
    if chars == 0 || chars > chars_max {
        return Err(Problem::invalid(format!("{field}: must be 1 to {chars_max} characters")));
    }
    Ok(())
}

async fn book(State(app): State<Arc<App>>, Path(tenant): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    if headers.get(header::AUTHORIZATION).map(|value| value.as_bytes()) != Some(app.authorization.as_bytes()) {
        return Err(Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid bearer token is required"));
    }
    let request: BookingRequest = serde_json::from_slice(&body).map_err(|error| Problem::invalid(error.to_string()))?;
    check_text("tenant", &tenant, NAME_CHARS_MAX)?;
    check_text("clinic", &request.clinic, NAME_CHARS_MAX)?;
    check_text("doctor", &request.doctor, NAME_CHARS_MAX)?;
    check_text("patient", &request.patient, PATIENT_CHARS_MAX)?;
    let date = NaiveDate::parse_from_str(&request.date, "%Y-%m-%d")
        .map_err(|_| Problem::invalid(format!("date: {:?} is not YYYY-MM-DD", request.date)))?;
    let slot = i32::try_from(request.slot).map_err(|_| Problem::invalid("slot: too large"))?;

    let client = app.pool.get().await.map_err(Problem::unavailable)?;
    let insert = client.prepare_cached(INSERT).await.map_err(Problem::unavailable)?;
    let booking_id = Uuid::now_v7();
    let row = client
        .query_opt(&insert, &[&booking_id, &tenant, &request.clinic, &request.doctor, &date, &slot, &request.patient])
        .await
        .map_err(Problem::unavailable)?;
    drop(client);
    let Some(row) = row else {
        let detail = format!("slot {} of {} on {} is taken", request.slot, request.doctor, request.date);
        return Err(Problem::new(StatusCode::CONFLICT, "slot_taken", detail));
    };
    let created_at: DateTime<Utc> = row.get(0);
    let body = json!({
        "booking_id": booking_id,
        "status": "confirmed",
        "clinic": request.clinic,
        "doctor": request.doctor,
        "date": request.date,
        "slot": request.slot,
        "patient": request.patient,
        "created_at": created_at,
    });
    Ok((StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}

async fn echo(body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: tokio_postgres::Config = args.database.parse().context("parsing --database")?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager).max_size(args.pool).build().context("building the pool")?;
    // Fails now, not under load, when the database or its table is missing.
    pool.get().await.context("connecting to PostgreSQL")?.prepare_cached(INSERT).await.context("preparing the insert")?;

    let app = Arc::new(App { pool, authorization: format!("Bearer {}", args.token) });
    let router = Router::new().route("/v1/{tenant}/bookings", post(book)).route("/bench/echo", post(echo)).with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, router).with_graceful_shutdown(shutdown()).await.context("serving HTTP")?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
