//! Resident memory per booking: what the projections cost while the writer runs and
//! right after a restart, and how long that restart's recovery takes.
//!
//! For each size (1,000,000 and 10,000,000 bookings; `MEMORY_BOOKINGS_MAX` caps the
//! largest, default 10,000,000, which needs several GB of memory and minutes), on a
//! temporary directory:
//!
//! 1. `write`: a child process opens a `Writer` on empty `FileLog`s, sets the
//!    schedules of `TENANTS` × `CLINICS` × `DOCTORS` doctors, reads its resident set,
//!    commits the bookings through `Writer::commit` in batches of `BATCH` (each one
//!    fdatasynced), and reads its resident set again. The bookings are spread as
//!    real traffic would be: one after another over every doctor, `SLOTS_PER_DAY` a
//!    day, over as many days as it takes (2 at 1M, 20 at 10M). No Idempotency-Keys:
//!    their table is bounded by its retention window, not by the ledger's size. The
//!    writer holds two copies of the projections (the working and the published).
//! 2. `recover`: a fresh child process, as after a restart, reads its resident set,
//!    runs `replay::recover` (one copy, rebuilt from the log), reads it again, then
//!    builds the `Writer` a restarted server runs (the published copy cloned from
//!    it) and reads it a third time.
//!
//! Each step runs in a process of its own, so memory freed by one step and kept by the
//! allocator does not hide what the next one takes. The resident set is `VmRSS` of
//! `/proc/self/status` (`/proc/self/statm`'s resident pages, in bytes); `peak` is
//! `VmHWM`. The baselines measured in the same run: the log's bytes per booking on
//! disk (what the projections are rebuilt from), and for recovery, the same log
//! read and CRC-checked by `log::Tail` without decoding or applying. Not counted:
//! what `ledger serve` keeps beside the writer (the forensic clinic index, HTTP).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use booking_ledger::core::{Action, BookingDetails, BookingKind, Command, Rules, Schedule, State};
use booking_ledger::http::views;
use booking_ledger::log::{self, FileLog, FileLogOptions, Log};
use booking_ledger::metrics::Metrics;
use booking_ledger::replay;
use booking_ledger::snapshots;
use booking_ledger::writer::{Answer, SystemClock, Writer, WriterConfig};
use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use uuid::Uuid;

const SIZES: [u64; 2] = [1_000_000, 10_000_000];
const TENANTS: u64 = 10;
const CLINICS: u64 = 200;
const DOCTORS: u64 = 8;
const SLOTS_PER_DAY: u64 = 32;
const BATCH: u64 = 1024;
const BYTES_PER_BOOKING_TARGET: f64 = 200.0;

/// What a `write` child measured.
#[derive(Debug, Serialize, Deserialize)]
struct Written {
    /// After the schedules, before the first booking.
    rss_before: u64,
    rss_after: u64,
    peak: u64,
    commit_secs: f64,
    events: u64,
}

/// What a `recover` child measured.
#[derive(Debug, Serialize, Deserialize)]
struct Restarted {
    /// At start, before the logs are opened.
    rss_before: u64,
    /// After `replay::recover`: the projections, once.
    rss_recovered: u64,
    /// After `Writer::new`: the working and the published copy.
    rss_writer: u64,
    peak: u64,
    recover_secs: f64,
    events: u64,
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn resident() -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(name)).with_context(|| format!("/proc/self/status has no {name}"))?;
        let kib = line.trim().strip_suffix("kB").with_context(|| format!("{name}{line}: not in kB"))?;
        Ok(kib.trim().parse::<u64>()? * 1024)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

fn tenant_name(n: u64) -> String {
    format!("tenant-{:02}", n % TENANTS)
}

/// The doctor `d` of all `TENANTS * CLINICS * DOCTORS`: its tenant, clinic and name.
fn doctor(d: u64) -> (String, String, String) {
    (tenant_name(d), format!("clinic-{:03}", (d / TENANTS) % CLINICS), format!("dr-{}", d / (TENANTS * CLINICS)))
}

fn command(tenant: String, action: Action) -> Command {
    Command { tenant: tenant.into(), actor: "bench".into(), request_id: Uuid::new_v4().to_string().into(), idempotency: None, action }
}

/// The n-th booking: doctor `n % doctors`, then each slot of the day, then the next day.
fn booking(n: u64) -> Command {
    let doctors = TENANTS * CLINICS * DOCTORS;
    let (tenant, clinic, doctor) = doctor(n % doctors);
    let k = n / doctors;
    let details = BookingDetails {
        booking_id: Uuid::now_v7(),
        clinic: clinic.into(),
        doctor: doctor.into(),
        date: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap() + Days::new(k / SLOTS_PER_DAY),
        slot: (k % SLOTS_PER_DAY) as u32,
        patient: format!("Patient {n}").into(),
        kind: BookingKind::Advance,
        external: booking_ledger::core::External::boxed(None, None, None),
    };
    command(tenant, Action::Book(details))
}

fn schedules() -> Vec<Command> {
    let schedule = Schedule { slots_per_day: SLOTS_PER_DAY as u32, first_slot_minute: None, slot_minutes: None };
    (0..TENANTS * CLINICS * DOCTORS)
        .map(|d| {
            let (tenant, clinic, doctor) = doctor(d);
            command(tenant, Action::SetSchedule { clinic: clinic.into(), doctor: doctor.into(), schedule })
        })
        .collect()
}

fn open_log(dir: &Path) -> anyhow::Result<FileLog> {
    Ok(FileLog::open(dir, FileLogOptions::default()).with_context(|| format!("opening the log in {}", dir.display()))?.0)
}

fn new_writer(dir: &Path, state: State) -> anyhow::Result<Writer> {
    new_writer_on(dir, state, Arc::new(SystemClock))
}

fn new_writer_on(dir: &Path, state: State, clock: Arc<dyn booking_ledger::writer::Clock>) -> anyhow::Result<Writer> {
    Ok(Writer::new(
        Box::new(open_log(&dir.join("ledger"))?),
        Box::new(open_log(&dir.join("responses"))?),
        state,
        views::render,
        clock,
        WriterConfig::default(),
        Arc::new(Metrics::new()),
    ))
}

/// What a write step measured, once its bookings are committed.
fn written(writer: Writer, dir: &Path, rss_before: u64, started: Instant) -> anyhow::Result<Written> {
    let commit_secs = started.elapsed().as_secs_f64();
    let (rss_after, peak) = resident()?;
    drop(writer);
    let events = open_log(&dir.join("ledger"))?.position_next() - 1;
    Ok(Written { rss_before, rss_after, peak, commit_secs, events })
}

fn commit(writer: &mut Writer, commands: &[Command]) -> anyhow::Result<()> {
    let answers = writer.commit(commands)?;
    ensure!(answers.iter().all(|a| matches!(a, Ok(Answer::Fresh(Ok(_))))), "a benchmark command was refused");
    Ok(())
}

/// The `write` child: `bookings` bookings committed to a new ledger in `dir`.
fn write(dir: &Path, bookings: u64) -> anyhow::Result<Written> {
    let mut writer = new_writer(dir, State::new(Rules::default()))?;
    for chunk in schedules().chunks(BATCH as usize) {
        commit(&mut writer, chunk)?;
    }
    let (rss_before, _) = resident()?;
    let started = Instant::now();
    let mut next = 0;
    while next < bookings {
        let batch: Vec<Command> = (next..bookings.min(next + BATCH)).map(booking).collect();
        commit(&mut writer, &batch)?;
        next += batch.len() as u64;
    }
    written(writer, dir, rss_before, started)
}

/// How many days of dates the history step spreads its bookings over.
const HISTORY_DAYS: u64 = 730;

/// The history step's writer clock: the morning of the day being booked, so
/// that days close behind it as they would over two years.
struct FollowClock(std::sync::atomic::AtomicI64);

impl booking_ledger::writer::Clock for FollowClock {
    fn now(&self) -> chrono::DateTime<Utc> {
        chrono::DateTime::from_timestamp_micros(self.0.load(std::sync::atomic::Ordering::Relaxed)).unwrap()
    }
}

/// The first day of the history: `HISTORY_DAYS` days ending today, so that
/// a `ledger serve` started on it now finds the same days closed.
fn history_start() -> NaiveDate {
    Utc::now().date_naive() - Days::new(HISTORY_DAYS - 1)
}

/// Bookings on an open day (2030-01-01, every doctor) made after the
/// history: what a server keeps in memory beside it.
fn open_bookings(bookings: u64) -> u64 {
    200_000.min(bookings / 5)
}

/// The n-th history booking's id (known, so that reads can name it).
fn history_id(n: u64) -> Uuid {
    Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0000 | u128::from(n))
}

/// The n-th of `bookings` booked over `HISTORY_DAYS` days from
/// [`history_start`]: on its day, doctor after doctor (each at most once a day at 1M).
fn history_booking(n: u64, bookings: u64) -> (NaiveDate, Command) {
    let per_day = bookings.div_ceil(HISTORY_DAYS);
    let (day, m) = (n / per_day, n % per_day);
    let doctors = TENANTS * CLINICS * DOCTORS;
    let (tenant, clinic, doctor) = doctor(m % doctors);
    let date = history_start() + Days::new(day);
    let details = BookingDetails {
        booking_id: history_id(n),
        clinic: clinic.into(),
        doctor: doctor.into(),
        date,
        slot: ((m / doctors) % SLOTS_PER_DAY) as u32,
        patient: format!("Patient {n}").into(),
        kind: BookingKind::Advance,
        external: booking_ledger::core::External::boxed(None, None, None),
    };
    (date, command(tenant, Action::Book(details)))
}

/// The `write-history` child: `bookings` bookings over two years of dates, the
/// clock following them, so that all but the last few days closed and left
/// memory for the closed-day store.
fn write_history(dir: &Path, bookings: u64) -> anyhow::Result<Written> {
    let clock = Arc::new(FollowClock(std::sync::atomic::AtomicI64::new(0)));
    let morning = |date: NaiveDate| date.and_hms_opt(0, 1, 0).unwrap().and_utc().timestamp_micros();
    clock.0.store(morning(history_start()), std::sync::atomic::Ordering::Relaxed);
    let store = Arc::new(booking_ledger::closed::ClosedStore::open(&dir.join(booking_ledger::closed::FILE))?);
    let mut writer = new_writer_on(dir, State::new(Rules::default()), clock.clone())?.with_closed_store(store);
    for chunk in schedules().chunks(BATCH as usize) {
        commit(&mut writer, chunk)?;
    }
    let (rss_before, _) = resident()?;
    let started = Instant::now();
    let mut next = 0;
    while next < bookings {
        let first = history_booking(next, bookings).0;
        let batch: Vec<Command> = (next..bookings.min(next + BATCH))
            .map(|n| history_booking(n, bookings))
            .take_while(|(date, _)| *date == first)
            .map(|(_, command)| command)
            .collect();
        clock.0.store(morning(first), std::sync::atomic::Ordering::Relaxed);
        let answers = writer.commit(&batch)?;
        ensure!(answers.iter().all(|a| matches!(a, Ok(Answer::Fresh(Ok(_))))), "a history booking was refused: {:?}", answers.first());
        next += batch.len() as u64;
    }
    let open = open_bookings(bookings);
    for first in (0..open).step_by(BATCH as usize) {
        let batch: Vec<Command> = (first..open.min(first + BATCH)).map(booking).collect();
        let answers = writer.commit(&batch)?;
        ensure!(answers.iter().all(|a| matches!(a, Ok(Answer::Fresh(Ok(_))))), "an open-day booking was refused: {:?}", answers.first());
    }
    written(writer, dir, rss_before, started)
}

/// The same history in a whole-log recovery and from a snapshot (of the open days only).
fn measure_history(bookings: u64) -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    println!();
    println!("{bookings} bookings over {HISTORY_DAYS} days of dates (the clock following them: all but the last days closed):");
    let open = open_bookings(bookings);
    println!("then {open} bookings on an open day (2030-01-01); the writer's figures are per history booking");
    let written: Written = child("write-history", dir.path(), bookings)?;
    let store = std::fs::metadata(dir.path().join(booking_ledger::closed::FILE))?.len();
    let note = format!("(the closed-day store on disk: {:.0} B/booking)", store as f64 / bookings as f64);
    row("the writer that wrote them (2 copies)", written.rss_before, written.rss_after, bookings, &note);
    println!("    committed in {:.1} s, {:.0} bookings/s", written.commit_secs, bookings as f64 / written.commit_secs);
    let restarted: Restarted = child("recover", dir.path(), bookings)?;
    row("after a restart: its writer (2 copies)", restarted.rss_before, restarted.rss_writer, bookings, "");
    println!("    recovery of the whole log ({} events): {:.2} s", restarted.events, restarted.recover_secs);
    if let Some(snapshot) = restart_from_snapshot(dir.path(), bookings)? {
        row("with a snapshot: its writer (2 copies)", snapshot.rss_before, snapshot.rss_writer, bookings, "");
        println!("    start-up from the snapshot: {:.3} s (events after it: {})", snapshot.recover_secs, snapshot.events);
    }
    measure_server(dir.path(), bookings)
}

/// `ledger serve` (the release binary cargo built beside this bench) on the
/// history: the whole server's resident set once its read side caught up,
/// beside an empty server's; the time to `/readyz` and to the read side
/// caught up (`GET /audit` answers 200), on a first start (no read-side
/// checkpoint: it indexes the whole log) and a restart (from the checkpoint
/// the first one wrote when it stopped); then reads of closed days.
fn measure_server(dir: &Path, bookings: u64) -> anyhow::Result<()> {
    let empty = TempDir::new()?;
    let server = Server::start(empty.path())?;
    std::thread::sleep(Duration::from_secs(1));
    let base = server.rss()?;
    server.stop()?;
    let open = open_bookings(bookings);
    println!("  the whole server (`ledger serve`, {:.1} MiB empty), RSS above the empty one's once its read side caught up:", mib(base));
    for (label, last) in [("first start (indexes the whole log)", false), ("restart (read side from its checkpoint)", true)] {
        let started = Instant::now();
        let server = Server::start(dir)?;
        let ready = started.elapsed();
        server.wait_caught_up()?;
        let caught_up = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let rss = server.rss()?;
        let per_open = rss.saturating_sub(base) as f64 / open as f64;
        let verdict = if per_open <= BYTES_PER_BOOKING_TARGET { "met" } else { "missed" };
        println!(
            "    {label:<40} {:>8.1} MiB: {per_open:>6.0} B per open booking, {:>5.1} B per booking   target <= {BYTES_PER_BOOKING_TARGET:.0} per open: {verdict}",
            mib(rss.saturating_sub(base)),
            rss.saturating_sub(base) as f64 / (bookings + open) as f64,
        );
        println!(
            "      /readyz after {:.3} s (target < 1 s); read side caught up after {:.2} s",
            ready.as_secs_f64(),
            caught_up.as_secs_f64()
        );
        if last {
            server.closed_reads(bookings)?;
        }
        server.stop()?;
    }
    Ok(())
}

/// A `ledger serve` child on a data directory.
struct Server {
    child: std::process::Child,
    port: u16,
    token: String,
}

impl Server {
    /// Starts it and waits for `/readyz` to answer 200.
    fn start(data: &Path) -> anyhow::Result<Server> {
        use std::io::BufRead;
        let mut child = Process::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ledger serve")?;
        let mut lines = std::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let port = loop {
            let line = lines.next().context("ledger serve exited before listening")??;
            if let Some((_, addr)) = line.split_once("listening on ") {
                let addr = addr.split_whitespace().next().unwrap_or_default();
                break addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).context("the port")?;
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let token = std::fs::read_to_string(data.join("admin.token")).context("admin.token")?.trim().to_owned();
        let server = Server { child, port, token };
        while server.get("/readyz")?.0 != 200 {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(server)
    }

    /// GET `path`: the status and the body (a fresh connection each time).
    fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return Ok((0, String::new())) };
        write!(stream, "GET {path} HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", self.token)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    fn wait_caught_up(&self) -> anyhow::Result<()> {
        loop {
            match self.get(&format!("/v1/{}/audit", tenant_name(0)))? {
                (200, body) => {
                    ensure!(body.contains("\"violations\":[]"), "the audit found violations: {body}");
                    return Ok(());
                }
                (503, _) => {}
                (status, body) => bail!("GET /audit answered {status}: {body}"),
            }
        }
    }

    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
        Ok(kib.context("VmRSS")? * 1024)
    }

    /// Reads of closed days, one at a time: a booking by id, a day's slots,
    /// the same as of an earlier position; median and p99 of each.
    fn closed_reads(&self, bookings: u64) -> anyhow::Result<()> {
        const SAMPLES: u64 = 300;
        let per_day = bookings.div_ceil(HISTORY_DAYS);
        // Bookings of days closed: all but the last few days'.
        let closed = bookings.saturating_sub(4 * per_day);
        let mut reads: [(&str, Vec<Duration>); 3] =
            [("a booking by id", vec![]), ("a day's slots", vec![]), ("a day's slots as_of", vec![])];
        for k in 0..SAMPLES {
            let n = (k * 7_919_993) % closed;
            let (day, m) = (n / per_day, n % per_day);
            let (tenant, clinic, _) = doctor(m % (TENANTS * CLINICS * DOCTORS));
            let date = history_start() + Days::new(day);
            let paths = [
                format!("/v1/{tenant}/bookings/{}", history_id(n)),
                format!("/v1/{tenant}/clinics/{clinic}/slots?date={date}"),
                format!("/v1/{tenant}/clinics/{clinic}/slots?date={date}&as_of={}", 1 + n),
            ];
            for ((_, times), path) in reads.iter_mut().zip(paths) {
                let started = Instant::now();
                let (status, body) = self.get(&path)?;
                times.push(started.elapsed());
                ensure!(status == 200, "GET {path}: {status} {body}");
            }
        }
        for (what, mut times) in reads {
            times.sort();
            let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
            println!("      closed days, {what:<22} p50 {:>6.2} ms   p99 {:>6.2} ms   (target: p99 < 5 ms)", at(0.5), at(0.99));
        }
        Ok(())
    }

    /// SIGTERM, and waits for the clean stop (the read side checkpoints).
    fn stop(mut self) -> anyhow::Result<()> {
        Process::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        let status = self.child.wait()?;
        ensure!(status.success(), "ledger serve stopped with {status}");
        Ok(())
    }
}

/// The `recover` child: the ledger in `dir` recovered, then a writer built on it.
fn recover(dir: &Path) -> anyhow::Result<Restarted> {
    let (rss_before, _) = resident()?;
    let (log, responses) = (open_log(&dir.join("ledger"))?, open_log(&dir.join("responses"))?);
    let recovered = replay::recover(&log, &responses, Rules::default(), Utc::now()).context("recovering")?;
    drop((log, responses));
    restarted(dir, rss_before, recovered)
}

/// What a restart left resident: the recovered state, then with a writer built on it.
fn restarted(dir: &Path, rss_before: u64, recovered: replay::Recovered) -> anyhow::Result<Restarted> {
    let (rss_recovered, _) = resident()?;
    let (recover_secs, events) = (recovered.elapsed.as_secs_f64(), recovered.events);
    let writer = new_writer(dir, recovered.state)?;
    let (rss_writer, peak) = resident()?;
    drop(writer);
    Ok(Restarted { rss_before, rss_recovered, rss_writer, peak, recover_secs, events })
}

/// A snapshot of the ledger in `dir` taken at its end (as the server's snapshot
/// thread would), then a child that restarts from it: the newest snapshot plus
/// the log after it (nothing, here), as `ledger serve` starts.
fn restart_from_snapshot(dir: &Path, bookings: u64) -> anyhow::Result<Option<Restarted>> {
    let started = Instant::now();
    let taken = snapshots::take(&dirs(dir), Rules::default(), snapshots::Through::Available, 2, &AtomicBool::new(false))?;
    let size = std::fs::metadata(&taken.path)?.len();
    println!(
        "    snapshot at position {} taken in {:.2} s ({} MiB, {:.0} B/booking)",
        taken.header.position,
        started.elapsed().as_secs_f64(),
        size >> 20,
        size as f64 / bookings as f64
    );
    Ok(Some(child("recover-snapshot", dir, bookings)?))
}

fn dirs(dir: &Path) -> snapshots::Dirs {
    snapshots::Dirs { ledger: dir.join("ledger"), responses: dir.join("responses"), snapshots: dir.join("snapshots") }
}

/// The `recover-snapshot` child: start-up from the newest snapshot, then a writer built on it.
fn recover_from_snapshot(dir: &Path) -> anyhow::Result<Restarted> {
    let (rss_before, _) = resident()?;
    let (log, responses) = (open_log(&dir.join("ledger"))?, open_log(&dir.join("responses"))?);
    let start_up = snapshots::recover(&log, &responses, &dirs(dir), Rules::default(), Utc::now()).context("recovering")?;
    ensure!(start_up.snapshot.is_some(), "the start-up did not use the snapshot");
    drop((log, responses));
    restarted(dir, rss_before, start_up.recovered)
}

/// Runs this bench's own executable as a child for one step, and reads its answer.
fn child<T: for<'de> Deserialize<'de>>(step: &str, dir: &Path, bookings: u64) -> anyhow::Result<T> {
    let exe = std::env::current_exe()?;
    let output = Process::new(exe)
        .arg(format!("--{step}"))
        .arg(dir)
        .arg(bookings.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running the {step} child"))?;
    ensure!(output.status.success(), "the {step} child failed: {}", output.status);
    serde_json::from_slice(&output.stdout).with_context(|| format!("reading the {step} child's answer"))
}

/// Records read and CRC-checked by `log::Tail`, and the time it took.
fn read_only(ledger_dir: &Path, events: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut read = 0;
    let mut tail = log::Tail::new(ledger_dir, 1);
    while tail.read(events, 1 << 16, &mut |_, _, _| {
        read += 1;
        ControlFlow::Continue(())
    })? > 0
    {}
    ensure!(read == events, "read {read} of {events} events");
    Ok(started.elapsed())
}

fn log_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        bytes += entry?.metadata()?.len();
    }
    Ok(bytes)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One line: the resident set grown from `before` to `after`, per booking, beside the target.
fn row(label: &str, before: u64, after: u64, bookings: u64, note: &str) {
    let grown = after.saturating_sub(before);
    let bytes = grown as f64 / bookings as f64;
    let verdict = if bytes <= BYTES_PER_BOOKING_TARGET { "met" } else { "missed" };
    let line = format!(
        "  {label:<40} {:>9.1} MiB {bytes:>7.0} B/booking   target <= {BYTES_PER_BOOKING_TARGET:.0}: {verdict:<6}   {note}",
        mib(grown)
    );
    println!("{}", line.trim_end());
}

fn measure(bookings: u64) -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    println!();
    println!(
        "{bookings} bookings over {} doctors in {TENANTS} tenants, batches of {BATCH}; resident set grown by them:",
        TENANTS * CLINICS * DOCTORS
    );

    let written: Written = child("write", dir.path(), bookings)?;
    let log_per_booking = log_bytes(&dir.path().join("ledger"))? as f64 / bookings as f64;
    let note = format!("(the log on disk: {log_per_booking:.0} B/booking; peak {:.1} MiB)", mib(written.peak));
    row("the writer that wrote them (2 copies)", written.rss_before, written.rss_after, bookings, &note);
    println!("    committed in {:.1} s, {:.0} bookings/s", written.commit_secs, bookings as f64 / written.commit_secs);

    let restarted: Restarted = child("recover", dir.path(), bookings)?;
    ensure!(restarted.events == written.events, "recovered {} events of {}", restarted.events, written.events);
    let show = |how: &str, restarted: &Restarted| {
        let note = format!("(peak {:.1} MiB)", mib(restarted.peak));
        row(&format!("{how}: recovered (1 copy)"), restarted.rss_before, restarted.rss_recovered, bookings, &note);
        row(&format!("{how}: its writer (2 copies)"), restarted.rss_before, restarted.rss_writer, bookings, "");
    };
    show("after a restart", &restarted);
    let read = read_only(&dir.path().join("ledger"), written.events)?;
    let (recover_rate, read_rate) = (restarted.events as f64 / restarted.recover_secs, restarted.events as f64 / read.as_secs_f64());
    println!(
        "    recovery of {} events: {:.2} s, {recover_rate:.0} events/s   (read + CRC only: {:.2} s, {read_rate:.0} events/s; ratio {:.3})",
        restarted.events,
        restarted.recover_secs,
        read.as_secs_f64(),
        recover_rate / read_rate
    );

    // SNAPSHOT FIGURES ARE PRINTED HERE (see `restart_from_snapshot`).
    match restart_from_snapshot(dir.path(), bookings)? {
        Some(snapshot) => {
            show("with a snapshot", &snapshot);
            println!("    start-up from the snapshot: {:.2} s (events after it: {})", snapshot.recover_secs, snapshot.events);
        }
        None => println!("  {:<40} - (snapshots are not implemented yet)", "with a snapshot"),
    }
    Ok(())
}

fn sizes() -> anyhow::Result<Vec<u64>> {
    let max = match std::env::var("MEMORY_BOOKINGS_MAX") {
        Ok(text) => text.replace('_', "").parse::<u64>().with_context(|| format!("MEMORY_BOOKINGS_MAX={text:?}"))?,
        Err(_) => *SIZES.last().unwrap(),
    };
    ensure!(max > 0, "MEMORY_BOOKINGS_MAX must be positive");
    let mut sizes: Vec<u64> = SIZES.iter().map(|&size| size.min(max)).collect();
    sizes.dedup();
    Ok(sizes)
}

fn run(args: &[String]) -> anyhow::Result<()> {
    match args {
        [step, dir, bookings] if ["--write", "--write-history", "--recover", "--recover-snapshot"].contains(&step.as_str()) => {
            let (dir, bookings) = (PathBuf::from(dir), bookings.parse::<u64>()?);
            let answer = match step.as_str() {
                "--write" => serde_json::to_string(&write(&dir, bookings)?)?,
                "--write-history" => serde_json::to_string(&write_history(&dir, bookings)?)?,
                "--recover" => serde_json::to_string(&recover(&dir)?)?,
                _ => serde_json::to_string(&recover_from_snapshot(&dir)?)?,
            };
            println!("{answer}");
            Ok(())
        }
        // What cargo passes to a benchmark.
        [] | [_] if args.iter().all(|a| a == "--bench") => {
            let started = Instant::now();
            let sizes = sizes()?;
            println!("resident memory per booking (MEMORY_BOOKINGS_MAX caps the largest size: {})", sizes.last().unwrap());
            // MEMORY_HISTORY_ONLY=1: the history steps alone (the all-open ones take minutes at 10M).
            let history_only = std::env::var("MEMORY_HISTORY_ONLY").is_ok_and(|v| v == "1");
            for bookings in sizes {
                if !history_only {
                    measure(bookings)?;
                }
                measure_history(bookings)?;
            }
            println!();
            println!("memory bench: {:.0} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        _ => bail!("unexpected arguments {args:?}; usage: memory (MEMORY_BOOKINGS_MAX=N to cap the largest size)"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("memory bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
