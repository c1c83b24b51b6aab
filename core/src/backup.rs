//! A backup: collect -> archive -> multipart upload -> metadata written last (the commit).
//!
//! Layout under the location: `backups/<name>/archive-<run>.tar.zst` and `backups/<name>/metadata.json`.
//! The archive key is unique per run, so two runs racing for one name never write the same object;
//! the metadata is put only if absent, so exactly one of them commits. Anything under a backup's
//! directory without a metadata document is an interrupted run's leftover: never listed, removed by
//! `delete` or by the next successful run of that name.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use jiff::Timestamp;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::mpsc;

use crate::archive::{ArchiveWriter, FORMAT, Written};
use crate::collect::{self, Batch, Body};
use crate::filter::Selection;
use crate::input::{expiration, parse_duration, validate_name};
use crate::kube_client::Cluster;
use crate::model::{
    Backup, BackupMetadata, BackupProgress, BackupSpec, ContentsRef, FORMAT_VERSION, Phase, SourceCluster, StoredFile,
    Timing,
};
use crate::progress::{Event, Observer};
use crate::store::{ChunkSender, Store};
use crate::volume::MoverAccess;
use crate::{Error, Result};

use crate::catalog::Objects;
pub use crate::commit::METADATA_FILE;
/// Written when a run starts and refreshed while it runs; removed when it commits or fails.
pub const IN_PROGRESS_FILE: &str = "in-progress.json";
/// How often the in-progress marker is refreshed. A marker older than a few of these is stale.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes handed from the compressor to the uploader at a time.
pub const CHUNK: usize = 1 << 20;

pub fn in_progress_path(name: &str) -> Path {
    crate::committed::data_path::<Objects>(name, IN_PROGRESS_FILE)
}

/// Runs one backup to completion and commits it. Returns the committed `Backup`.
///
/// A backup that lists nothing at all (every LIST failed) or cannot be uploaded is not committed and
/// returns an error; one where some LISTs failed is committed as `PartiallyFailed` with each failure
/// named in `status.errors`.
pub async fn run(
    cluster: &Cluster,
    store: &Store,
    name: &str,
    spec: BackupSpec,
    observer: Arc<dyn Observer>,
) -> Result<Backup> {
    run_with_movers(cluster, store, name, spec, observer, &MoverAccess::Reader, None).await
}

/// [`run`], with the mover Pods of `--include-volumes` (and the hooks) created as `movers` says:
/// the in-cluster controller reads objects with its own rights but moves volume data only as the
/// requester or the identity the admin named. An incremental run continuing the backup `watched`
/// counts its changes from reads only the objects its watches saw change, of the types they cover
/// ([`collect::Watched`]).
pub async fn run_with_movers(
    cluster: &Cluster,
    store: &Store,
    name: &str,
    spec: BackupSpec,
    observer: Arc<dyn Observer>,
    movers: &MoverAccess,
    watched: Option<&collect::Watched>,
) -> Result<Backup> {
    validate_name("backup name", name)?;
    let ttl = spec.ttl.as_deref().map(|t| parse_duration("--ttl", t)).transpose()?;
    let selection = Selection::new(&spec.filters)?;
    if spec.include_volumes && spec.volume_method == crate::model::VolumeMethod::Fs {
        crate::volume::check_location(store)?;
    }
    let start = Timestamp::now();
    let run_id = format!("{}-{:08x}", start.as_second(), rand::random::<u32>());
    // The location (the name is free; an incremental run's lease and what it reads of the packs)
    // and the cluster (discovery, the plan, the server's version) are asked side by side: each
    // store request is a round trip, and most of a small incremental backup is round trips.
    let location = async {
        crate::committed::ensure_absent::<Objects>(store, name).await?;
        match spec.incremental {
            true => Begun::begin(store, &run_id, &scope(&spec, &cluster.server)).await.map(Some),
            false => Ok(None),
        }
    };
    let reading = async {
        let throttle = &cluster.throttle;
        let discovered = cluster.discover().await?;
        let plan = collect::plan(&cluster.client, throttle, &discovered, &selection).await?;
        Ok::<_, Error>((plan, cluster.server_version().await))
    };
    let (begun, read) = tokio::join!(location, reading);
    let begun = begun?;
    let (plan, version) = match read {
        Ok(read) => read,
        Err(e) => {
            if let Some(b) = begun {
                b.lease.release().await;
            }
            return Err(e);
        }
    };

    let log = crate::runlog::RunLog::new(observer);
    log.line(format_args!("backup {name} started to {}", store.url()));
    let observer: Arc<dyn Observer> = log.clone();

    // Visible to `describe` while running; refreshed with progress until the run ends.
    let mut marker = Backup::new(name, spec.clone());
    marker.metadata.creation_timestamp = Some(start);
    marker.status.timing.start_timestamp = Some(start);
    let tracker = Arc::new(Tracker {
        inner: observer.clone(),
        items: AtomicU64::new(0),
        volume: Default::default(),
        changed: Default::default(),
    });
    let observer: Arc<dyn Observer> = tracker.clone();
    // Stops with the run, also when the run is dropped (given up for taking too long).
    let heartbeat = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(heartbeat(
        store.clone(),
        name.to_string(),
        marker,
        tracker.clone(),
    )));
    let incremental = spec.incremental;
    let (selection, plan) = (&selection, &plan);
    let pipeline = Pipeline { cluster, store, name, selection, plan, start, observer, movers, watched, incremental };
    let result = run_pipeline(pipeline, spec, ttl, version, &run_id, begun).await;
    heartbeat.abort();
    let _ = heartbeat.await;
    // The heartbeat may have refreshed the marker after the commit removed it: remove it again.
    let saved = async {
        if let Ok(b) = &result {
            save_log(&log, store, b).await;
        }
    };
    let marker = in_progress_path(name);
    tokio::join!(store.remove_quietly(&marker), saved);
    result
}

/// An incremental run's start on the location: its lease, written before anything is read of the
/// packs, then the packs it knows and the previous backup of its scope.
struct Begun {
    lease: crate::packs::Lease,
    known: crate::packs::Known,
    previous: Option<crate::packs::Previous>,
}

impl Begun {
    async fn begin(store: &Store, run_id: &str, scope: &str) -> Result<Begun> {
        if matches!(store.seal(), Some(crate::crypto::Seal::Passphrase(_))) {
            return Err(Error::invalid(
                "--incremental",
                "",
                "incremental backups share packs across backups, and with a passphrase this tool cannot tell whether two backups use the same one: encrypt to recipients (--encrypt-to) instead",
            ));
        }
        let lease = crate::packs::Lease::acquire(store, run_id).await?;
        let encryption = store.seal().map(|s| s.describe());
        match crate::packs::load_with_previous(store, encryption.as_ref(), scope, scope_of).await {
            Ok((known, previous)) => Ok(Begun { lease, known, previous }),
            Err(e) => {
                lease.release().await;
                Err(e)
            }
        }
    }
}

/// Ends the run's log with its outcome and stores it beside the committed backup. A log that
/// cannot be stored costs the backup nothing: it is committed already.
async fn save_log(log: &crate::runlog::RunLog, store: &Store, b: &Backup) {
    let s = &b.status;
    for w in &s.warnings {
        log.line(format_args!("warning: {w}"));
    }
    for e in &s.errors {
        log.line(format_args!("error: {e}"));
    }
    log.line(format_args!(
        "backup {} {}: {} objects, {} bytes stored",
        b.metadata.name,
        s.phase,
        s.progress.items_backed_up,
        b.bytes_stored()
    ));
    if let Err(e) = log.save(store, &crate::committed::dir::<Objects>(&b.metadata.name)).await {
        tracing::warn!(backup = %b.metadata.name, error = %e, "could not store the backup's log");
    }
}

/// What the pipeline of one run reads from and reports to.
struct Pipeline<'a> {
    cluster: &'a Cluster,
    store: &'a Store,
    name: &'a str,
    selection: &'a Selection,
    plan: &'a collect::Plan,
    start: Timestamp,
    observer: Arc<dyn Observer>,
    movers: &'a MoverAccess,
    watched: Option<&'a collect::Watched>,
    /// Stored in packs (`spec.incremental`): what a stopped run wrote is left to the collector.
    incremental: bool,
}

/// What a run stored, whichever way it stored it.
struct Outcome {
    report: collect::Report,
    entries: u64,
    duplicates: u64,
    archive: Option<StoredFile>,
    contents: ContentsRef,
    packs: Vec<String>,
    incremental: Option<crate::model::IncrementalStatus>,
    /// Bytes uploaded.
    bytes: u64,
    volumes: Vec<crate::model::VolumeData>,
}

/// Collects, archives and uploads, then commits the metadata of what was written.
async fn run_pipeline(
    p: Pipeline<'_>,
    spec: BackupSpec,
    ttl: Option<jiff::SignedDuration>,
    version: String,
    run_id: &str,
    begun: Option<Begun>,
) -> Result<Backup> {
    let (store, name) = (p.store, p.name);
    let Some(Begun { lease, known, previous }) = begun else {
        let (mut outcome, mut files) = store_archive(&p, run_id).await?;
        let volumes = back_up_volumes(&p, &spec, run_id, &mut outcome).await;
        files.extend(volumes.files);
        let committed = match volumes.fatal {
            Some(e) => Err(e),
            None => commit(&p, spec, ttl, version, outcome).await,
        };
        if committed.as_ref().is_err_and(|e| !e.may_have_committed()) {
            for f in files {
                store.remove_quietly(&f).await;
            }
        }
        return committed;
    };
    let scope = scope(&spec, &p.cluster.server);
    let result = async {
        let mut outcome = store_incremental(&p, known, previous, &version).await?;
        let volumes = back_up_volumes(&p, &spec, run_id, &mut outcome).await;
        let packs = outcome.packs.clone();
        let committed = async {
            if let Some(e) = volumes.fatal {
                return Err(e);
            }
            lease.check()?;
            commit(&p, spec, ttl, version, outcome).await
        }
        .await;
        if committed.as_ref().is_err_and(|e| !e.may_have_committed()) {
            for f in volumes.files {
                store.remove_quietly(&f).await;
            }
        }
        let backup = committed?;
        lease.check_committed(name).await?;
        crate::packs::confirm(store, name, &packs).await?;
        Ok(backup)
    }
    .await;
    let head = async {
        if result.is_ok() {
            crate::packs::set_head(store, &scope, name).await;
        }
    };
    tokio::join!(head, lease.release());
    result
}

/// The error of a run stopped by [`crate::interrupt`] before its commit. An incremental run's packs
/// stay until a garbage collection ([`crate::packs`]) finds no backup using them.
fn not_committed(p: &Pipeline<'_>) -> Error {
    let name = p.name;
    crate::interrupt::stopped(&match p.incremental {
        false => format!("backup {name:?} was not committed, and what it wrote was removed"),
        true => format!(
            "backup {name:?} was not committed; the packs it wrote are removed by the next garbage collection (delete, expiry)"
        ),
    })
}

/// Builds the committed document of a run and commits it.
async fn commit(
    p: &Pipeline<'_>,
    spec: BackupSpec,
    ttl: Option<jiff::SignedDuration>,
    version: String,
    o: Outcome,
) -> Result<Backup> {
    if crate::interrupt::requested() {
        return Err(not_committed(p));
    }
    let (store, name, start) = (p.store, p.name, p.start);
    let mut warnings = o.report.warnings;
    if o.duplicates > 0 {
        warnings.push(format!("{} objects were listed twice and archived once", o.duplicates));
    }
    let mut backup = Backup::new(name, spec);
    backup.metadata.creation_timestamp = Some(start);
    let status = &mut backup.status;
    status.phase = if o.report.errors.is_empty() { Phase::Completed } else { Phase::PartiallyFailed };
    status.timing = Timing { start_timestamp: Some(start), completion_timestamp: Some(Timestamp::now()) };
    status.expiration = ttl.and_then(|t| expiration(start, t));
    status.progress = BackupProgress { total_items: o.entries, items_backed_up: o.entries, volume_data: None };
    status.resources = o.report.counts;
    status.namespaces = o.report.namespaces.into_iter().collect();
    status.warnings = warnings;
    status.errors = o.report.errors;
    status.source_cluster = Some(SourceCluster { server: p.cluster.server.clone(), version });
    status.archive = o.archive;
    status.incremental = o.incremental;
    status.volumes = o.volumes;
    let mut metadata = BackupMetadata {
        format_version: FORMAT_VERSION,
        backup,
        objects: Default::default(),
        contents: Some(o.contents),
        packs: o.packs,
    };
    // The metadata document counts as uploaded too: it is what an unchanged backup costs.
    let document = serde_json::to_vec(&metadata).map_or(0, |b| b.len() as u64);
    if let Some(inc) = metadata.backup.status.incremental.as_mut() {
        inc.bytes_uploaded += document;
    }
    p.observer.event(Event::Uploading { bytes: o.bytes });
    crate::committed::commit::<Objects>(store, name, &metadata).await?;
    Ok(metadata.backup)
}

/// With `--include-volumes`, the data of the claims the backup holds, by mover Pods; a claim that
/// could not be read is an error of the backup (PartiallyFailed); a hook that fails with
/// `on-error: Fail` fails the whole backup.
async fn back_up_volumes(p: &Pipeline<'_>, spec: &BackupSpec, run_id: &str, o: &mut Outcome) -> VolumeOutcome {
    if !spec.include_volumes || o.report.claims.is_empty() {
        return VolumeOutcome { files: Vec::new(), fatal: None };
    }
    let cluster = match p.movers {
        MoverAccess::Reader => p.cluster,
        MoverAccess::As(cluster) => cluster,
        MoverAccess::Refused(why) => {
            for (ns, claim) in &o.report.claims {
                o.report
                    .errors
                    .push(format!("the data of PersistentVolumeClaim {ns}/{claim} was not backed up: {why}"));
            }
            return VolumeOutcome { files: Vec::new(), fatal: None };
        }
    };
    let movers = crate::volume::Movers {
        cluster,
        store: p.store,
        backup: p.name,
        mover: spec.mover.clone(),
        timeout: crate::volume::TIMEOUT,
        // Counted from the backup's start: listing the objects took part of it.
        deadline: spec.mover.time_limit.map(|limit| {
            let spent = std::time::Duration::try_from(Timestamp::now().duration_since(p.start)).unwrap_or_default();
            std::time::Instant::now() + limit.saturating_sub(spent)
        }),
        method: spec.volume_method,
        observer: p.observer.clone(),
    };
    let backed = crate::volume::back_up(&movers, run_id, &o.report.claims).await;
    o.report.warnings.extend(backed.warnings);
    o.report.errors.extend(backed.errors);
    o.bytes += backed.volumes.iter().map(|v| v.size).sum::<u64>();
    o.volumes = backed.volumes;
    VolumeOutcome { files: backed.files, fatal: backed.fatal.map(Error::Other) }
}

/// The volume parts a run wrote, and whether the backup must fail.
struct VolumeOutcome {
    files: Vec<Path>,
    fatal: Option<Error>,
}

/// A plain backup: the archive and its contents file in the backup's directory. Returns what was
/// stored and the files to remove if the commit fails.
async fn store_archive(p: &Pipeline<'_>, run_id: &str) -> Result<(Outcome, Vec<Path>)> {
    let (store, name) = (p.store, p.name);
    let archive_key = format!("archive-{run_id}.tar.zst");
    let archive = crate::committed::data_path::<Objects>(name, &archive_key);
    let (report, archived) = archive_and_upload(p, &archive).await?;
    let written = archived.archive;
    // The store must hold exactly what we wrote.
    crate::commit::check_uploaded(store, &archive, written.size).await?;
    let contents_key = format!("contents-{run_id}.jsonl.zst");
    let contents_path = crate::committed::data_path::<Objects>(name, &contents_key);
    let contents_size = match store.upload_file(&contents_path, archived.contents).await {
        Ok(n) => n,
        Err(e) => {
            store.remove_quietly(&archive).await;
            return Err(e);
        }
    };
    let c = archived.contents_written;
    let encryption = store.seal().map(|s| s.describe());
    let outcome = Outcome {
        report,
        entries: written.entries,
        duplicates: written.duplicates,
        archive: Some(StoredFile {
            key: archive_key,
            size: written.size,
            sha256: written.sha256,
            format: FORMAT.into(),
            encryption: encryption.clone(),
        }),
        contents: ContentsRef {
            entries: c.entries,
            file: Some(StoredFile {
                key: contents_key,
                size: c.size,
                sha256: c.sha256,
                format: crate::contents::FORMAT.into(),
                encryption,
            }),
            ..Default::default()
        },
        packs: Vec::new(),
        incremental: None,
        bytes: written.size + contents_size,
        volumes: Vec::new(),
    };
    Ok((outcome, vec![archive, contents_path]))
}

/// The scope a backup covers: what it selects, from which cluster. An incremental backup stores
/// its contents as changes since the previous backup of the same scope.
pub fn scope(spec: &BackupSpec, server: &str) -> String {
    let key = serde_json::to_vec(&(&spec.filters, server)).expect("filters serialize");
    crate::archive::sha256_hex(&key)
}

/// The latest incremental backup of what `spec` selects on the cluster at `server`, which a backup
/// of the same spec would continue, and every object it recorded ([`crate::packs::latest`]).
pub async fn latest(store: &Store, spec: &BackupSpec, server: &str) -> Option<crate::packs::Previous> {
    crate::packs::latest(store, &scope(spec, server), scope_of).await
}

fn scope_of(meta: &BackupMetadata) -> String {
    let server = meta.backup.status.source_cluster.as_ref().map_or("", |c| c.server.as_str());
    scope(&meta.backup.spec, server)
}

/// How an incremental run stores its contents.
enum ContentsMode {
    /// Every object's line, in chunks cut where the paths say (most of them stored already).
    Full { chunker: crate::packs::Chunker, chunks: Vec<String> },
    /// Only what changed since `previous`: lines of new and changed objects, then removals.
    Delta { previous: Arc<collect::Previous>, delta: Vec<u8> },
}

/// The largest delta blob; a longer delta is split.
const DELTA_BLOB: usize = 1 << 20;

/// An incremental backup: each object body and contents blob the location's packs do not hold
/// yet goes into new packs; the rest is referenced. Continuing the previous backup of its scope,
/// it reads only the objects whose `resourceVersion` moved since (when both backups read the
/// same API server version). Runs under the caller's lease.
async fn store_incremental(
    p: &Pipeline<'_>,
    known: crate::packs::Known,
    mut previous: Option<crate::packs::Previous>,
    server_version: &str,
) -> Result<Outcome> {
    let store = p.store;
    let encryption = store.seal().map(|s| s.describe());
    if let Some(prev) = &previous {
        p.observer.event(Event::Continuing { backup: prev.name.clone(), deltas: prev.contents.deltas.len() });
    }
    // The apiVersion each resource type is listed at now, recorded with the backup for the types
    // it holds objects of (only a recorded object's type is ever looked up).
    let mut versions: BTreeMap<String, String> =
        p.plan.namespaced.iter().chain(&p.plan.cluster).map(|r| (r.key.clone(), r.ar.api_version.clone())).collect();
    // What the previous backup recorded, shared by the LISTs (which leave an object unread when
    // its version has not moved, its type is listed at the apiVersion it was, and its body is
    // still in the location) and the pack writer.
    let recorded: Option<Arc<collect::Previous>> = previous.as_mut().map(|prev| {
        // A version this run could not read ("") matches nothing: it may be another server's.
        let same_server = !server_version.is_empty() && prev.server_version.as_deref() == Some(server_version);
        let same_api_version: HashSet<&str> = versions
            .iter()
            .filter(|(k, v)| prev.contents.versions.get(*k) == Some(*v))
            .map(|(k, _)| k.as_str())
            .collect();
        let mut lines = std::mem::take(&mut prev.assembled.lines);
        for (path, r) in lines.iter_mut() {
            let listed_alike = crate::archive::entry_resource(path).is_some_and(|k| same_api_version.contains(k));
            r.reusable = same_server && r.version.is_some() && known.holds(&r.sha256) && listed_alike;
        }
        Arc::new(lines)
    });
    let listed_against = recorded.clone();
    // A watch's changes count from one backup: only a run continuing that one may use them.
    let watched = p.watched.filter(|w| previous.as_ref().is_some_and(|prev| prev.name == w.since));
    let (item_tx, item_rx) = mpsc::channel::<Batch>(collect::BATCHES_QUEUED);
    let (pack_tx, pack_rx) = mpsc::channel::<crate::packs::FinishedPack>(1);
    let (seal, mtime, observer) = (store.seal().cloned(), p.start.as_second().max(0) as u64, p.observer.clone());
    // Pack ids are short (every backup's metadata lists the packs it uses): 48 random bits.
    let prefix = format!("{:012x}", rand::random::<u64>() >> 16);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut stash = crate::packs::Stash::new(known, &prefix, seal, mtime, pack_tx);
        let (mut mode, mut contents) = match previous {
            Some(prev) => {
                for sha in prev.blobs() {
                    if !stash.reference(sha) {
                        return Err(std::io::Error::other(format!(
                            "contents blob {sha} of backup {} vanished",
                            prev.name
                        )));
                    }
                }
                let contents = ContentsRef {
                    deltas: prev.contents.deltas.clone(),
                    list: prev.contents.list.clone(),
                    chunks: prev.contents.chunks.clone(),
                    ..Default::default()
                };
                let previous = recorded.expect("recorded with the previous backup");
                (ContentsMode::Delta { previous, delta: Vec::new() }, contents)
            }
            None => (ContentsMode::Full { chunker: Default::default(), chunks: Vec::new() }, ContentsRef::default()),
        };
        let mut seen = crate::contents::Seen::default();
        let (mut n, mut duplicates, mut unread) = (0u64, 0u64, 0u64);
        let store_blob = |stash: &mut crate::packs::Stash, blob: &[u8]| -> std::io::Result<String> {
            let sha = crate::archive::sha256_hex(blob);
            stash.put_contents(&sha, blob)?;
            Ok(sha)
        };
        for item in collect::blocking_items(item_rx) {
            let path = crate::archive::entry_path(&item.resource, item.namespace.as_deref(), &item.name);
            if !seen.insert(&path) {
                duplicates += 1;
                continue;
            }
            let line = match item.body {
                Body::Read { json, version } => {
                    let mut line = crate::contents::Line::of(path, &json);
                    line.resource_version = version;
                    stash.put(&line.sha256, &json)?;
                    line
                }
                Body::Unchanged(r) => {
                    if !stash.reference_digest(&r.sha256) {
                        return Err(std::io::Error::other(format!(
                            "the body of {path} ({}) vanished from the location's packs",
                            r.sha256_hex()
                        )));
                    }
                    unread += 1;
                    r.line(path)
                }
            };
            match &mut mode {
                ContentsMode::Full { chunker, chunks } => {
                    if let Some(chunk) = chunker.push(&item.resource, item.namespace.as_deref(), &line) {
                        chunks.push(store_blob(&mut stash, &chunk)?);
                    }
                }
                ContentsMode::Delta { previous, delta } => {
                    if !previous.get(&line.path).is_some_and(|r| r.same_as(&line)) {
                        line.encode(delta);
                    }
                }
            }
            n += 1;
            if n.is_multiple_of(256) {
                observer.event(Event::Archived { items: n, bytes: 0 });
            }
        }
        match mode {
            ContentsMode::Full { chunker, mut chunks } => {
                for chunk in chunker.finish() {
                    chunks.push(store_blob(&mut stash, &chunk)?);
                }
                let mut list = Vec::with_capacity(chunks.len() * 65);
                for c in &chunks {
                    list.extend_from_slice(c.as_bytes());
                    list.push(b'\n');
                }
                contents.list = Some(store_blob(&mut stash, &list)?);
            }
            ContentsMode::Delta { previous, mut delta } => {
                let mut removed: Vec<&String> = previous.keys().filter(|p| !seen.contains(p)).collect();
                removed.sort();
                for path in removed {
                    crate::packs::encode_removed(path, &mut delta);
                }
                let mut rest = &delta[..];
                while !rest.is_empty() {
                    let cut = if rest.len() <= DELTA_BLOB {
                        rest.len()
                    } else {
                        rest[..DELTA_BLOB].iter().rposition(|b| *b == b'\n').map_or(rest.len(), |i| i + 1)
                    };
                    contents.deltas.push(store_blob(&mut stash, &rest[..cut])?);
                    rest = &rest[cut..];
                }
            }
        }
        contents.entries = n;
        let (packs, stored, reused) = stash.finish()?;
        observer.event(Event::Archived { items: n, bytes: 0 });
        Ok((contents, duplicates, packs, stored, reused, unread))
    });
    let collecting = p.collect(item_tx, listed_against.as_deref(), watched, p.watched);
    let uploading = crate::packs::upload_packs(store, pack_rx);
    let (report, uploaded) = tokio::join!(collecting, uploading);
    let written = writer.await.map_err(|e| Error::Other(format!("pack writer stopped: {e}")))?;
    // Stopped: the packs uploaded so far are referenced by nothing, and collected as any failed
    // run's are.
    let report = report?;
    let (bytes, written_packs) = uploaded?;
    let (mut contents, duplicates, packs, stored, reused, unread) =
        written.map_err(|e| Error::Other(format!("writing packs: {e}")))?;
    versions.retain(|k, _| report.counts.get(k).is_some_and(|n| *n > 0));
    contents.versions = versions;
    if let Some(e) = nothing_listed(&report, p.name) {
        return Err(e);
    }
    let status = crate::model::IncrementalStatus {
        bytes_uploaded: bytes,
        objects_stored: stored,
        objects_reused: reused,
        objects_not_read: unread,
        lists_skipped: report.lists_skipped,
        lists_empty: report.lists_empty,
        packs_written: written_packs.len() as u64,
        packs: packs.len() as u64,
        encryption,
    };
    Ok(Outcome {
        report,
        entries: contents.entries,
        duplicates,
        archive: None,
        contents,
        packs,
        incremental: Some(status),
        bytes,
        volumes: Vec::new(),
    })
}

/// Streams LIST pages through the archive writer to `archive` in the store. Fails, removing the
/// upload, if writing or uploading failed or no resource could be listed.
async fn archive_and_upload(p: &Pipeline<'_>, archive: &Path) -> Result<(collect::Report, Archived)> {
    let (store, observer) = (p.store, &p.observer);
    // Pipeline: LIST pages -> (items) -> compressor thread -> (chunks) -> multipart upload.
    let (item_tx, item_rx) = mpsc::channel::<Batch>(collect::BATCHES_QUEUED);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(4);
    let seal = p.store.seal().cloned();
    let writer = spawn_writer(item_rx, chunk_tx, p.start.as_second().max(0) as u64, seal, observer.clone());
    let progress = observer.clone();
    let upload = store.upload(archive, chunk_rx, move |bytes| progress.event(Event::Uploading { bytes }));
    let collecting = p.collect(item_tx, None, None, p.watched);
    let (report, uploaded) = tokio::join!(collecting, upload);
    let written = writer.await.map_err(|e| Error::Other(format!("archive writer stopped: {e}")))?;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            store.remove_quietly(archive).await;
            return Err(e);
        }
    };

    let written = match (written, uploaded) {
        (Ok(w), Ok(_)) => w,
        (_, Err(e)) => {
            store.remove_quietly(archive).await;
            return Err(e);
        }
        (Err(e), Ok(_)) => {
            store.remove_quietly(archive).await;
            return Err(Error::Other(format!("writing the archive: {e}")));
        }
    };
    if let Some(e) = nothing_listed(&report, p.name) {
        store.remove_quietly(archive).await;
        return Err(e);
    }
    Ok((report, written))
}

impl Pipeline<'_> {
    /// Lists what the plan selects into `items` (concurrent paged LISTs).
    /// With `previous`, objects unchanged since it are sent unread; with `watched` too, the types
    /// it covers are not listed; with `empty`, nor those it names as holding nothing. A stop
    /// ([`crate::interrupt`]) ends the LISTs at once (`items` closed) and is the error.
    async fn collect(
        &self,
        items: mpsc::Sender<Batch>,
        previous: Option<&collect::Previous>,
        watched: Option<&collect::Watched>,
        empty: Option<&collect::Watched>,
    ) -> Result<collect::Report> {
        let selector = self.selection.selector.as_ref().map(|s| s.as_str().to_string());
        let listing = collect::collect(
            &self.cluster.client,
            &self.cluster.throttle,
            self.plan,
            selector.as_deref(),
            previous,
            watched,
            empty,
            items,
            self.observer.as_ref(),
        );
        tokio::select! {
            report = listing => Ok(report),
            _ = crate::interrupt::wait() => Err(not_committed(self)),
        }
    }
}

/// The error of a run in which every LIST failed: nothing was backed up.
fn nothing_listed(report: &collect::Report, name: &str) -> Option<Error> {
    (report.lists > 0 && report.failed_lists == report.lists).then(|| {
        let first = report.errors.first().cloned().unwrap_or_default();
        Error::Other(format!("backup {name:?} failed: no resource could be listed ({first})"))
    })
}

/// Counts archived objects for the in-progress marker, forwarding every event.
struct Tracker {
    inner: Arc<dyn Observer>,
    items: AtomicU64,
    /// The claim whose data is being moved, for `describe` while the run goes on.
    volume: std::sync::Mutex<Option<crate::model::VolumeProgress>>,
    /// Wakes the heartbeat when that changes (volume data moves for minutes, objects for seconds).
    changed: tokio::sync::Notify,
}

impl Observer for Tracker {
    fn event(&self, event: Event) {
        match &event {
            Event::Archived { items, .. } => self.items.store(*items, Ordering::Relaxed),
            Event::VolumeBytes { namespace, claim, done, total } => {
                let now = crate::model::VolumeProgress {
                    claim: format!("{namespace}/{claim}"),
                    bytes_done: *done,
                    bytes_total: *total,
                };
                *self.volume.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                self.changed.notify_one();
            }
            _ => {}
        }
        self.inner.event(event);
    }
}

async fn heartbeat(store: Store, name: String, mut marker: Backup, tracker: Arc<Tracker>) {
    let path = in_progress_path(&name);
    loop {
        let items = tracker.items.load(Ordering::Relaxed);
        let volume_data = tracker.volume.lock().unwrap_or_else(|p| p.into_inner()).clone();
        marker.status.progress = BackupProgress { total_items: items, items_backed_up: items, volume_data };
        let mut document = serde_json::to_value(&marker).unwrap_or_default();
        crate::model::to_stored_spellings(document.get_mut("spec"));
        if let Ok(body) = serde_json::to_vec_pretty(&document)
            && let Err(e) = store.objects().put(&path, PutPayload::from(body)).await
        {
            tracing::debug!(error = %crate::store::store_message(&e), "could not refresh the in-progress marker");
        }
        // Volume progress is written as it comes, at most once a second; otherwise every HEARTBEAT.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let _ = tokio::time::timeout(
            HEARTBEAT.saturating_sub(std::time::Duration::from_secs(1)),
            tracker.changed.notified(),
        )
        .await;
    }
}

/// The archive written, and the contents file (in a local temporary file, to upload after it).
struct Archived {
    archive: Written,
    contents: std::fs::File,
    contents_written: crate::contents::WrittenFile,
}

fn spawn_writer(
    items: mpsc::Receiver<Batch>,
    chunks: mpsc::Sender<Bytes>,
    mtime: u64,
    seal: Option<crate::crypto::Seal>,
    observer: Arc<dyn Observer>,
) -> tokio::task::JoinHandle<std::io::Result<Archived>> {
    tokio::task::spawn_blocking(move || {
        let mut w = ArchiveWriter::new(ChunkSender::new(chunks, CHUNK), mtime, seal.as_ref())?;
        let file = std::io::BufWriter::new(tempfile::tempfile()?);
        let mut contents = crate::contents::Writer::new(file, seal.as_ref())?;
        let mut n = 0u64;
        for item in collect::blocking_items(items) {
            if let Some(line) = w.append(&item)? {
                contents.push(&line)?;
            }
            n += 1;
            if n.is_multiple_of(256) {
                let bytes = w.bytes_out();
                observer.event(Event::Archived { items: n, bytes });
            }
        }
        let (mut sender, archive) = w.finish()?;
        std::io::Write::flush(&mut sender)?;
        observer.event(Event::Archived { items: n, bytes: archive.size });
        let (file, contents_written) = contents.finish()?;
        let contents = file.into_inner().map_err(|e| e.into_error())?;
        Ok(Archived { archive, contents, contents_written })
    })
}
