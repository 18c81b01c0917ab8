//! A partition's ledger on a JetStream stream, mirrored into local files.
//!
//! One stream per partition, `LEDGER_P<n>`, holds three subjects:
//! `ledger.p<n>.events` (the ledger's records), `ledger.p<n>.answers` (the
//! stored answers of keyed commands that appended nothing, the `responses/`
//! log of a single node) and `ledger.p<n>.leases` (a marker each new writer
//! appends before it writes). Every message is one record framed exactly as on
//! disk (length, CRC32C, position, previous BLAKE3 hash, payload), so a reader
//! checks it as it checks a segment, and a corrupt message is reported with
//! its stream sequence, never applied.
//!
//! **The fence.** Every message is published with `Nats-Expected-Last-Sequence`
//! set to the stream sequence this writer last saw, over all three subjects.
//! So an append is stored only if the writer's state holds every record before
//! it; a writer that lost its partition (paused, cut off) has its next append
//! refused and stops. Events and answers share one fence, which is why they
//! share one stream: a keyed refusal decided on stale state cannot slip in
//! beside a successor's events.
//!
//! **The mirror.** A writer appends to its local [`FileLog`]s only what
//! JetStream acknowledged, so the local directory is always a prefix of the
//! stream and the whole single-node read side (recovery, snapshots, the
//! clinic index, `/events`, the audit) reads it unchanged. The local copy is a
//! cache: `mirror.seq` names how far it goes, and a copy that does not match
//! the stream is deleted and fetched again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::log::frame::{self, FRAME_HEADER_BYTES, Hash};
use crate::log::{FileLog, FileLogOptions, Log, LogError, Position, Visit};

/// The subjects of a partition's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Events,
    Answers,
    Leases,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Answers => "answers",
            Kind::Leases => "leases",
        }
    }
}

pub fn stream_name(partition: u32) -> String {
    format!("LEDGER_P{partition}")
}

pub fn subject(partition: u32, kind: Kind) -> String {
    format!("ledger.p{partition}.{}", kind.name())
}

fn kind_of(partition: u32, subject: &str) -> Option<Kind> {
    [Kind::Events, Kind::Answers, Kind::Leases].into_iter().find(|kind| self::subject(partition, *kind) == subject)
}

/// Creates the partition's stream if it does not exist: file storage,
/// `replicas` copies, nothing ever deleted or purged.
pub async fn ensure_stream(js: &jetstream::Context, partition: u32, replicas: usize) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: stream_name(partition),
        subjects: vec![format!("ledger.p{partition}.*")],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        retention: stream::RetentionPolicy::Limits,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.with_context(|| format!("creating the stream {}", stream_name(partition)))
}

/// How far the local mirror goes: the last stream sequence it holds, and the
/// last position of its ledger and answers logs then.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    seq: u64,
    events_last: Position,
    answers_last: Position,
}

const PROGRESS_FILE: &str = "mirror.seq";

impl Progress {
    fn read(dir: &Path) -> Option<Progress> {
        let text = std::fs::read_to_string(dir.join(PROGRESS_FILE)).ok()?;
        let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().ok());
        Some(Progress { seq: numbers.next()??, events_last: numbers.next()??, answers_last: numbers.next()?? })
    }

    /// Written after the records it names, without fsync: after a power loss a
    /// progress ahead of (or behind) the files makes the next load fetch again.
    fn write(&self, dir: &Path) -> std::io::Result<()> {
        let temporary = dir.join(format!("{PROGRESS_FILE}.tmp"));
        std::fs::write(&temporary, format!("{} {} {}\n", self.seq, self.events_last, self.answers_last))?;
        std::fs::rename(temporary, dir.join(PROGRESS_FILE))
    }
}

/// The append fence a partition's two logs share: the last stream sequence
/// this writer saw, and whether it failed.
pub struct Fence {
    js: jetstream::Context,
    partition: u32,
    dir: PathBuf,
    runtime: tokio::runtime::Handle,
    state: Mutex<FenceState>,
}

struct FenceState {
    progress: Progress,
    /// Set once an append failed: the fence refuses everything after.
    broken: Option<String>,
}

impl Fence {
    /// Publishes `frames` on the partition's `kind` subject, pipelined (every
    /// message sent, then every acknowledgement awaited), each conditional on
    /// the one before it. Durable only if every acknowledgement came back.
    fn publish(&self, kind: Kind, frames: &[Bytes]) -> Result<(), LogError> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.broken {
            return Err(LogError::Fenced(format!("an earlier append failed: {reason}")));
        }
        let first = state.progress.seq;
        let result = self.runtime.block_on(publish_all(&self.js, &subject(self.partition, kind), first, frames));
        match result {
            Ok(last) => {
                state.progress.seq = last;
                Ok(())
            }
            Err(error) => {
                state.broken = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Whether the stream holds a message this writer did not append: its
    /// last sequence is `stream_last`, read just before, and no append of ours
    /// is in flight (else it cannot tell, and says no). Another writer, or a
    /// message published past the ledger: either way this writer's state is
    /// no longer the stream's, and the fence is broken.
    pub fn moved_past(&self, stream_last: u64) -> bool {
        let Some(mut state) = self.state.try_lock() else { return false };
        if state.broken.is_none() && stream_last > state.progress.seq {
            state.broken = Some(format!("the stream reached sequence {stream_last}, past this writer's {}", state.progress.seq));
        }
        state.broken.is_some()
    }

    /// The stream this fence guards.
    pub fn stream(&self) -> String {
        stream_name(self.partition)
    }

    /// Records that the local `kind` log now ends at `last`, as of the fence's sequence.
    fn mirrored(&self, kind: Kind, last: Position) {
        let mut state = self.state.lock();
        match kind {
            Kind::Events => state.progress.events_last = last,
            Kind::Answers => state.progress.answers_last = last,
            Kind::Leases => {}
        }
        if let Err(error) = state.progress.write(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "cannot record how far the local mirror goes; the next load fetches it again");
        }
    }
}

async fn publish_all(js: &jetstream::Context, subject: &str, first: u64, frames: &[Bytes]) -> Result<u64, LogError> {
    let mut acks = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let expected = first + i as u64;
        let publish = PublishMessage::build().payload(frame.clone()).expected_last_sequence(expected);
        let ack = js.send_publish(subject.to_owned(), publish).await.map_err(|e| refusal(e.kind(), &e, expected))?;
        acks.push(ack);
    }
    let mut last = first;
    for (i, ack) in acks.into_iter().enumerate() {
        let expected = first + i as u64;
        let ack = ack.await.map_err(|e| refusal(e.kind(), &e, expected))?;
        if ack.sequence != expected + 1 {
            return Err(LogError::Fenced(format!("stored at sequence {} instead of {}", ack.sequence, expected + 1)));
        }
        last = ack.sequence;
    }
    Ok(last)
}

fn refusal(kind: jetstream::context::PublishErrorKind, error: &dyn std::fmt::Display, expected: u64) -> LogError {
    match kind {
        jetstream::context::PublishErrorKind::WrongLastSequence => {
            LogError::Fenced(format!("the stream moved past sequence {expected}: another writer appended ({error})"))
        }
        _ => LogError::Unreplicated(format!("after sequence {expected}: {error}")),
    }
}

/// One of a partition's logs (events or answers): records go to the stream
/// first, then, once acknowledged, to the local mirror.
pub struct StreamLog {
    fence: Arc<Fence>,
    kind: Kind,
    local: FileLog,
    frames: Vec<Bytes>,
    position_next: Position,
    last_hash: Hash,
}

impl StreamLog {
    fn new(fence: Arc<Fence>, kind: Kind, local: FileLog) -> StreamLog {
        StreamLog { position_next: local.position_next(), last_hash: local.last_hash(), fence, kind, local, frames: Vec::new() }
    }
}

impl Log for StreamLog {
    fn append(&mut self, payload: &[u8]) -> Result<Position, LogError> {
        let position = self.position_next;
        let mut framed = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        self.last_hash = frame::encode_record(&mut framed, position, &self.last_hash, payload);
        self.frames.push(Bytes::from(framed));
        self.position_next += 1;
        Ok(position)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.frames.is_empty() {
            return Ok(());
        }
        self.fence.publish(self.kind, &self.frames)?;
        for framed in self.frames.drain(..) {
            self.local.append(&framed[FRAME_HEADER_BYTES..])?;
        }
        debug_assert_eq!(self.local.last_hash(), self.last_hash, "the mirror frames records as the stream holds them");
        let last = self.local.write_without_sync()?;
        self.fence.mirrored(self.kind, last);
        Ok(())
    }

    fn position_next(&self) -> Position {
        self.position_next
    }

    fn read_from(&self, from: Position, visit: &mut Visit<'_>) -> Result<(), LogError> {
        self.local.read_from(from, visit)
    }

    fn path_of(&self, position: Position) -> PathBuf {
        self.local.path_of(position)
    }
}

/// A partition loaded and fenced: its two logs, ready for a writer.
pub struct Loaded {
    pub fence: Arc<Fence>,
    pub events: StreamLog,
    pub answers: StreamLog,
    /// Messages fetched from the stream into the local mirror.
    pub fetched: u64,
    /// The sequence of this writer's lease marker: its first write.
    pub marker_seq: u64,
}

/// What a partition's directory holds of it.
pub struct PartitionDirs {
    pub root: PathBuf,
    pub ledger: PathBuf,
    pub responses: PathBuf,
    pub snapshots: PathBuf,
}

impl PartitionDirs {
    pub fn new(data_dir: &Path, partition: u32) -> PartitionDirs {
        PartitionDirs::for_data_dir(&data_dir.join("partitions").join(format!("p{partition}")))
    }

    /// A partition's logs laid out as a single node's data directory.
    pub fn for_data_dir(data: &Path) -> PartitionDirs {
        PartitionDirs {
            ledger: data.join(crate::node::LEDGER_DIR),
            responses: data.join(crate::node::RESPONSES_DIR),
            snapshots: data.join(crate::node::SNAPSHOTS_DIR),
            root: data.to_owned(),
        }
    }

    /// Deletes the mirror (logs, snapshots, progress); the rejection journal stays.
    fn wipe(&self) -> anyhow::Result<()> {
        for dir in [&self.ledger, &self.responses, &self.snapshots] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("deleting {}", dir.display()));
                }
                _ => {}
            }
        }
        let _ = std::fs::remove_file(self.root.join(PROGRESS_FILE));
        Ok(())
    }
}

/// Brings the local mirror of `partition` up to the stream's end, checking
/// every message's frame (CRC, position, chain link), then appends a lease
/// marker conditional on that end: from then on no earlier writer can append.
/// Blocking file I/O inside: run it on a blocking thread.
pub async fn load(
    js: &jetstream::Context,
    partition: u32,
    dirs: &PartitionDirs,
    options: FileLogOptions,
    node: &str,
) -> anyhow::Result<Loaded> {
    std::fs::create_dir_all(&dirs.root).with_context(|| format!("creating {}", dirs.root.display()))?;
    let stream = js.get_stream(stream_name(partition)).await.with_context(|| format!("opening the stream {}", stream_name(partition)))?;
    let (mut events, mut answers, mut progress) = open_mirror(&stream, partition, dirs, options).await?;
    let mut fetched = 0;
    for _attempt in 0..16 {
        let last = stream.get_info().await.context("reading the stream's last sequence")?.state.last_sequence;
        fetched += fetch(&stream, partition, progress.seq, last, &mut events, &mut answers).await?;
        events.sync().context("writing the mirror")?;
        answers.sync().context("writing the mirror")?;
        progress = Progress { seq: last, events_last: events.position_next() - 1, answers_last: answers.position_next() - 1 };
        progress.write(&dirs.root).context("recording the mirror's progress")?;
        let marker = serde_json::json!({ "node": node, "after": last }).to_string();
        match publish_all(js, &subject(partition, Kind::Leases), last, &[Bytes::from(marker)]).await {
            Ok(marker_seq) => {
                let fence = Arc::new(Fence {
                    js: js.clone(),
                    partition,
                    dir: dirs.root.clone(),
                    runtime: tokio::runtime::Handle::current(),
                    state: Mutex::new(FenceState { progress: Progress { seq: marker_seq, ..progress }, broken: None }),
                });
                return Ok(Loaded {
                    fence: fence.clone(),
                    events: StreamLog::new(fence.clone(), Kind::Events, events),
                    answers: StreamLog::new(fence, Kind::Answers, answers),
                    fetched,
                    marker_seq,
                });
            }
            // Another writer appended meanwhile (a predecessor finishing a batch): fetch that too.
            Err(LogError::Fenced(reason)) => tracing::info!(partition, %reason, "the stream moved while loading; fetching again"),
            Err(error) => return Err(error).context("appending the lease marker"),
        }
    }
    bail!("the stream {} kept moving while this node loaded it", stream_name(partition))
}

/// One of a partition's local logs.
fn open_local(dir: &Path, options: FileLogOptions) -> anyhow::Result<FileLog> {
    FileLog::open(dir, options).map(|(log, _)| log).with_context(|| format!("opening {}", dir.display()))
}

/// The local mirror, if it is a prefix of the stream; else an empty one.
async fn open_mirror(
    stream: &stream::Stream,
    partition: u32,
    dirs: &PartitionDirs,
    options: FileLogOptions,
) -> anyhow::Result<(FileLog, FileLog, Progress)> {
    let open = |dir: &Path| open_local(dir, options);
    let (events, answers) = (open(&dirs.ledger)?, open(&dirs.responses)?);
    let progress = Progress::read(&dirs.root);
    let matches = match progress {
        Some(p) if p.events_last + 1 == events.position_next() && p.answers_last + 1 == answers.position_next() => {
            mirror_matches(stream, partition, &p, &events, &answers).await
        }
        Some(_) => Err(anyhow::anyhow!("the local logs do not end where mirror.seq says")),
        None if events.position_next() == 1 && answers.position_next() == 1 => return Ok((events, answers, Progress::default())),
        None => Err(anyhow::anyhow!("no mirror.seq")),
    };
    match matches {
        Ok(()) => Ok((events, answers, progress.unwrap_or_default())),
        Err(reason) => {
            tracing::warn!(partition, %reason, "the local copy of the partition is not the stream's; fetching the stream again");
            drop((events, answers));
            dirs.wipe()?;
            Ok((open(&dirs.ledger)?, open(&dirs.responses)?, Progress::default()))
        }
    }
}

/// Whether the mirror's last record is the stream's message at the sequence `progress` names.
async fn mirror_matches(
    stream: &stream::Stream,
    partition: u32,
    progress: &Progress,
    events: &FileLog,
    answers: &FileLog,
) -> anyhow::Result<()> {
    if progress.seq == 0 {
        return Ok(());
    }
    let message = stream.get_raw_message(progress.seq).await.with_context(|| format!("reading sequence {}", progress.seq))?;
    let (local, last) = match kind_of(partition, message.subject.as_str()) {
        Some(Kind::Events) => (events, progress.events_last),
        Some(Kind::Answers) => (answers, progress.answers_last),
        // A lease marker carries no chain; the records before it were checked when fetched.
        Some(Kind::Leases) => return Ok(()),
        None => bail!("sequence {} is on subject {}", progress.seq, message.subject),
    };
    let framed = frame::decode_record(&message.payload).map_err(|e| anyhow::anyhow!("sequence {}: {}", progress.seq, e.describe()))?;
    if framed.position != last || frame::record_hash(framed.covered) != local.last_hash() {
        bail!("sequence {} is not the local log's last record", progress.seq);
    }
    Ok(())
}

/// Appends messages `after + 1 ..= last` of the stream to the local logs,
/// checked; returns how many it read.
async fn fetch(
    stream: &stream::Stream,
    partition: u32,
    after: u64,
    last: u64,
    events: &mut FileLog,
    answers: &mut FileLog,
) -> anyhow::Result<u64> {
    if last <= after {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
            ..Default::default()
        })
        .await
        .context("creating a consumer to read the stream")?;
    let mut messages = consumer.messages().await.context("reading the stream")?;
    let mut expected = after + 1;
    while expected <= last {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .with_context(|| format!("waiting for sequence {expected} of {}", stream_name(partition)))?
            .with_context(|| format!("the stream ended before sequence {expected}"))?
            .context("reading the stream")?;
        let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        if seq != expected {
            bail!("{}: expected sequence {expected}, read {seq}", stream_name(partition));
        }
        let local = match kind_of(partition, message.subject.as_str()) {
            Some(Kind::Events) => &mut *events,
            Some(Kind::Answers) => &mut *answers,
            Some(Kind::Leases) => {
                expected += 1;
                continue;
            }
            None => bail!("{} sequence {seq}: unknown subject {}", stream_name(partition), message.subject),
        };
        check_frame(&message.payload, local).map_err(|reason| anyhow::anyhow!("{} sequence {seq}: {reason}", stream_name(partition)))?;
        local.append(&message.payload[FRAME_HEADER_BYTES..])?;
        expected += 1;
        if expected.is_multiple_of(4096) {
            events.write_without_sync()?;
            answers.write_without_sync()?;
        }
    }
    Ok(last - after)
}

/// Checks a message as a record that must come next in `local`.
fn check_frame(payload: &[u8], local: &FileLog) -> Result<(), String> {
    let framed = frame::decode_record(payload).map_err(|e| format!("corrupt record: {}", e.describe()))?;
    if framed.len != payload.len() {
        return Err(format!("{} bytes after the record", payload.len() - framed.len));
    }
    if framed.position != local.position_next() {
        return Err(format!("record carries position {}, expected {}", framed.position, local.position_next()));
    }
    if *framed.prev_hash != local.last_hash() {
        return Err(format!("hash chain broken at position {}", framed.position));
    }
    Ok(())
}

/// Reads a whole partition stream into `dirs` (for `ledger verify` and `ledger
/// audit` against a cluster): every message checked as on load.
pub async fn download(js: &jetstream::Context, partition: u32, dirs: &PartitionDirs, options: FileLogOptions) -> anyhow::Result<u64> {
    let stream = js.get_stream(stream_name(partition)).await.with_context(|| format!("opening the stream {}", stream_name(partition)))?;
    let open = |dir: &Path| open_local(dir, options);
    std::fs::create_dir_all(&dirs.root).with_context(|| format!("creating {}", dirs.root.display()))?;
    let (mut events, mut answers) = (open(&dirs.ledger)?, open(&dirs.responses)?);
    let last = stream.get_info().await.context("reading the stream's last sequence")?.state.last_sequence;
    let read = fetch(&stream, partition, 0, last, &mut events, &mut answers).await?;
    events.sync()?;
    answers.sync()?;
    Ok(read)
}
