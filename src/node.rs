//! One ledger put together: its data directory's layout, its logs opened, its
//! projections rebuilt, its writer, follower and snapshot thread started and
//! its routes served. The composition root both `ledger serve` (one ledger,
//! [`serve`]) and cluster mode (one ledger per partition it leads, through
//! [`prepare`] and [`start`]) use, so that neither depends on the other.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::closed::ClosedStore;
use crate::config::Config;
use crate::forensics::disk::ReadStore;
use crate::forensics::follower::Indexes;
use crate::http::auth::Auth;
use crate::http::{AppState, app, views};
use crate::log::{FileLog, FileLogOptions, Log};
use crate::metrics::Metrics;
use crate::rejections::Journal;
use crate::replay::{RecoverError, Recovered};
use crate::snapshots::{self, Dirs, SnapshotThread};
use crate::writer::{Clock, Writer, WriterHandle};

pub const LEDGER_DIR: &str = "ledger";
pub const RESPONSES_DIR: &str = "responses";
pub const REJECTIONS_DIR: &str = "rejections";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const LOCK_FILE: &str = "LOCK";

/// Where the data directory keeps the logs snapshots are taken from, and its snapshots.
pub fn snapshot_dirs(data_dir: &Path) -> Dirs {
    Dirs { ledger: data_dir.join(LEDGER_DIR), responses: data_dir.join(RESPONSES_DIR), snapshots: data_dir.join(SNAPSHOTS_DIR) }
}

/// Holds the data directory for this process: a second server, or an offline
/// command, on the same directory is refused.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    fs::create_dir_all(data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join(LOCK_FILE);
    let mut file =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("the data directory {} is held by another ledger process", data_dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

pub fn open_log(dir: &Path, options: FileLogOptions) -> anyhow::Result<FileLog> {
    let (log, report) = FileLog::open(dir, options).with_context(|| format!("opening the log in {}", dir.display()))?;
    if let Some(t) = &report.truncated {
        tracing::warn!(
            path = %t.path.display(), offset = t.offset, bytes = t.bytes, position = t.position,
            "cut a torn record off the end of the log: it was never acknowledged"
        );
    }
    Ok(log)
}

/// Serves one ledger in `config.data_dir` on `listener` until `shutdown`
/// completes. `on_listening` learns the address before the projections are
/// rebuilt: the port answers (readiness 503) while they are.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    auth: Auth,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let metrics = Arc::new(Metrics::new());
    let ledger_dir = data_dir.join(LEDGER_DIR);
    let (state, journal, indexes) = prepare(&data_dir, auth, metrics.clone(), clock.clone(), &config)?;
    let state = Arc::new(state);

    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening on {addr}");
    tracing::info!("the clinic dashboard: http://{addr}/ui/ (sign in with a token)");
    on_listening(addr);
    let abort = Arc::new(Notify::new());
    let stop = {
        let (abort, state) = (abort.clone(), state.clone());
        async move {
            tokio::select! {
                () = shutdown => tracing::info!("shutting down: no new requests; draining the writer's queue"),
                () = abort.notified() => {}
            }
            state.stopping.send_replace(true);
        }
    };
    let router = crate::http::layers::cors(app(state.clone()), &config.cors_origins);
    let server = tokio::spawn(crate::http::server::serve(listener, router, config.connections, metrics.clone(), stop));

    let (rules, log_options) = (config.rules, config.log);
    let ledger_dir_for_forensics = ledger_dir.clone();
    let dirs = snapshot_dirs(&data_dir);
    let dirs_for_snapshots = dirs.clone();
    let closed = open_closed(&data_dir)?;
    let closed_for_recovery = closed.clone();
    let recovered = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let log = open_log(&ledger_dir, log_options)?;
        let responses = open_log(&dirs.responses, log_options)?;
        let recovered = snapshots::recover_storing(&log, &responses, &dirs, rules, clock.now(), Some(&closed_for_recovery))
            .context("rebuilding the projections from the log")?;
        Ok((log, responses, recovered, clock))
    })
    .await?;
    let (log, responses, recovered, clock) = match recovered {
        Ok(recovered) => recovered,
        Err(error) => {
            // A log that breaks the rules is not served from, but it is the very
            // thing an investigator needs to see: forensics stay up.
            if let Some(RecoverError::Violation { .. }) = error.downcast_ref::<RecoverError>() {
                let last = crate::log::last_position(&ledger_dir_for_forensics)?.unwrap_or(0);
                tracing::error!("{error:#}; commands are refused, forensics are served (GET /v1/{{tenant}}/audit)");
                let _ = state.forensic_only.set((last, format!("{error:#}")));
                // The audit and time travel read the damaged ledger up to its end.
                tokio::spawn(crate::forensics::follower::follow(indexes, tokio::sync::watch::channel(last).1, None));
                return server.await.context("the server task")?.context("serving HTTP");
            }
            abort.notify_one();
            let _ = server.await;
            return Err(error);
        }
    };
    let (recovered, snapshot) = (recovered.recovered, recovered.snapshot);
    let snapshot_position = snapshot.as_ref().map_or(0, |(position, _)| *position);
    let from = match &snapshot {
        Some((position, path)) => format!("snapshot {} (position {position}) and", path.display()),
        None => "the whole log:".to_owned(),
    };
    tracing::info!(
        snapshot_position,
        events = recovered.events,
        stored_responses = recovered.responses,
        position = recovered.state.position,
        elapsed_ms = recovered.elapsed.as_millis() as u64,
        "recovered from {from} {} events in {:.3} s; ready",
        recovered.events,
        recovered.elapsed.as_secs_f64()
    );
    let (handle, thread, snapshot_thread, follower) = start(
        Box::new(log),
        Box::new(responses),
        recovered,
        snapshot_position,
        Started { journal, indexes, dirs: dirs_for_snapshots, clock, metrics, closed },
        &config,
    );
    state.set_writer(handle);

    let served = server.await.context("the server task")?;
    // The last handle goes with the state: the writer drains its queue and stops.
    drop(state);
    tokio::task::spawn_blocking(move || thread.join()).await?.map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    tokio::task::spawn_blocking(move || snapshot_thread.stop()).await?.map_err(|_| anyhow::anyhow!("the snapshot thread panicked"))?;
    // The follower ends with the writer, after checkpointing the read side.
    follower.await.context("the read side's follower")?;
    served.context("serving HTTP")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The state the routes of one ledger share, its rejection journal (in
/// `<root>/rejections`) and its read side's indexes (of `<root>/ledger`), before
/// the projections are rebuilt.
pub fn prepare(
    root: &Path,
    auth: Auth,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    config: &Config,
) -> anyhow::Result<(AppState, Journal, Arc<Indexes>)> {
    let ledger_dir = root.join(LEDGER_DIR);
    let journal_dir = root.join(REJECTIONS_DIR);
    let journal_log = open_log(&journal_dir, FileLogOptions { segment_bytes_max: config.journal.segment_bytes_max })?;
    let (journal, journal_handle) = crate::rejections::Journal::new(journal_log, &journal_dir, config.journal);
    let mut state = AppState::new(auth, metrics, Some(ledger_dir.clone()), clock);
    state.journal = Some(journal_handle);
    state.rules = config.rules;
    let indexes = Indexes::with_store(&ledger_dir, config.rules, open_read_store(root));
    state.indexes = Some(indexes.clone());
    Ok((state.with_read_limits(config.read), journal, indexes))
}

/// The closed-day store of the ledger in `root` (`closed.redb`): opened, or
/// set aside and started empty when it does not open (start-up then replays
/// the whole log into it).
pub fn open_closed(root: &Path) -> anyhow::Result<Arc<ClosedStore>> {
    let (store, rebuilt) = ClosedStore::open_or_rebuild(&root.join(crate::closed::FILE))?;
    if rebuilt {
        tracing::warn!("the closed-day store was set aside ({}.damaged): it is rebuilt from the ledger", crate::closed::FILE);
    }
    Ok(Arc::new(store))
}

/// The read side's store of the ledger in `root` (`read.redb`): opened, or
/// set aside and started empty when it does not open (the read side then
/// indexes the whole log again). While a read side that stopped still holds
/// it (a cluster partition led again at once), one in memory serves.
fn open_read_store(root: &Path) -> Arc<ReadStore> {
    match ReadStore::open_or_rebuild(&root.join(crate::forensics::disk::FILE)) {
        Ok((store, rebuilt)) => {
            if rebuilt {
                tracing::warn!(
                    "the read side's store was set aside ({}.damaged): it is rebuilt from the ledger",
                    crate::forensics::disk::FILE
                );
            }
            Arc::new(store)
        }
        Err(error) => {
            tracing::warn!(%error, "the read side's store does not open: this read side keeps it in memory and indexes the whole ledger");
            Arc::new(ReadStore::in_memory())
        }
    }
}

/// What a ledger's writer starts with besides its logs and state.
pub struct Started {
    pub journal: Journal,
    pub indexes: Arc<Indexes>,
    pub dirs: Dirs,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// The closed-day store the recovery used.
    pub closed: Arc<ClosedStore>,
}

/// Starts a recovered ledger: its writer, the follower feeding the read side's
/// indexes, and the snapshot thread. Within a tokio runtime.
pub fn start(
    log: Box<dyn Log>,
    responses: Box<dyn Log>,
    recovered: Recovered,
    snapshot_position: u64,
    started: Started,
    config: &Config,
) -> (WriterHandle, std::thread::JoinHandle<()>, SnapshotThread, tokio::task::JoinHandle<()>) {
    let Started { journal, indexes, dirs, clock, metrics, closed } = started;
    metrics.recovered_events.set(recovered.events as i64);
    metrics.recovered_snapshot_position.set(snapshot_position as i64);
    let (feed, fed) = crate::log::events::feed();
    let writer = Writer::new(log, responses, recovered.state, views::render, clock, config.writer, metrics.clone())
        .with_journal(journal)
        .with_closed_store(closed)
        .with_feed(feed);
    let (handle, thread) = writer.spawn();
    let follower = tokio::spawn(crate::forensics::follower::follow(indexes, handle.durable(), Some(fed)));
    let snapshot_thread = snapshots::spawn(dirs, config.rules, config.snapshots, handle.durable(), snapshot_position, metrics);
    (handle, thread, snapshot_thread, follower)
}
