//! Content-addressed storage for incremental backups: every object body (and every chunk of a
//! backup's contents) is stored once per location, under its SHA-256, in packs shared by all the
//! incremental backups there. A backup is then its `metadata.json`: the contents chunks and the
//! packs it references. A second backup of an unchanged workspace uploads its metadata only.
//!
//! # Layout (under the location)
//! - `packs/<id>.tar.zst` — a pack: a tar+zstd archive (sealed like any data file when the
//!   location encrypts) of blobs named `blobs/<sha256>`; about 8 MiB of plaintext each. Object
//!   bodies go to data packs (`<run>-<n>`), contents blobs (chunks, chunk lists, deltas) to
//!   contents packs (`<run>-c<n>`).
//! - `packs/<id>.json.zst` — its index ([`PackIndex`], zstd JSON; `<id>.json` uncompressed from
//!   the first versions): size and SHA-256 of the stored bytes, the encryption, and each blob's
//!   SHA-256 and size. Written after the pack: a pack without an index is an interrupted
//!   upload, which no backup references.
//! - `heads/<scope>.json` — the latest incremental backup of a scope, whose contents the next
//!   backup of that scope continues with a delta ([`previous`]).
//! - `packs/<id>.gone` — a tombstone: garbage collection found no committed backup using the
//!   pack. A backup never reuses a tombstoned pack.
//! - `leases/<run>.start`, `leases/<run>.beat` — a running incremental backup's lease: the
//!   first written once before it reads the pack indexes, the second refreshed every 10 s.
//!
//! # Garbage collection never removes what a running backup is about to reference
//! A backup takes its lease *before* listing the packs, and references only packs it saw without a
//! tombstone, or wrote itself. Collection ([`collect_garbage`]):
//! 1. lists the committed backups' packs (R1) and tombstones every other pack with an index
//!    (none written after the oldest live lease began: those may be a running backup's own);
//! 2. then lists the packs (T: the tombstones that exist now), then the leases (L), and *after
//!    that* the committed backups' packs again (R2);
//! 3. removes a tombstone whose pack is in R2 (a backup committed meanwhile uses it), and deletes
//!    a tombstoned pack only when its tombstone was already in T and every live lease in L began
//!    after that tombstone was written.
//!
//! Why that is safe: a backup B that references pack P saw P without a tombstone, so its lease
//! began before P's tombstone. That tombstone was in T, so it was written before L was listed. If
//! B's lease was still there when L was listed, P is kept. If not, B had committed before L was
//! listed (a lease is removed only after the commit), so B's metadata was there when R2 was
//! listed, and P is kept. A tombstone another collection writes after L was listed is not in T:
//! this collection leaves it to a later one. Every time compared is the store's own
//! (`last_modified`; "now" is the time the store gives a probe object), never a client clock.
//! A lease without a heartbeat for a minute is stale: collection ignores it, and its backup
//! refuses to commit if its heartbeat ever missed that long (checked by wall and monotonic clock),
//! and checks after committing that every pack it references is still there.
//!
//! Collection also removes what interrupted runs left: a pack without an index (its upload
//! finished, its index was never written) or an index without a pack, once older than every live
//! lease and than [`STALE`]; and lease files without a heartbeat for ten times [`STALE`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::archive::{ArchiveWriter, Entry};
use crate::contents::{Line, Recorded, digest as digest_key};
use crate::crypto::{Encryption, Opener, Seal};
use crate::model::{BackupMetadata, ContentsRef, IncrementalStatus};
use crate::store::Store;
use crate::{Error, Result};

pub const ROOT: &str = "packs";
pub const LEASES: &str = "leases";
/// Plaintext bytes (tar records included) after which a pack is closed and a new one begun.
const PACK_TARGET: u64 = 8 << 20;
/// What one blob adds to a pack's tar stream besides its body: a header and at most a block of
/// padding (blob names are short: no long-name records).
const ENTRY_OVERHEAD: u64 = 1024;
/// The most plaintext a pack of this writer can hold: the target, the blob that crossed it, and
/// the end-of-archive blocks. A reader refuses to decompress more (a small zstd bomb stays small),
/// whatever the pack's unauthenticated index says.
const MAX_PACK_PLAIN: u64 = PACK_TARGET + crate::archive::MAX_OBJECT_BYTES + 4 * ENTRY_OVERHEAD;
/// A pack holds at most PACK_TARGET / ENTRY_OVERHEAD blobs, so its index is well under this.
const MAX_INDEX_BYTES: u64 = 4 << 20;
/// How often a lease is refreshed, and after how long without a refresh it is stale.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
pub const STALE: Duration = Duration::from_secs(60);
/// How much earlier than it can be seen a store may date a file (when the put began, or by a
/// front end whose clock is behind): a lease that began this close after a tombstone's date may
/// have listed the packs before the tombstone could be seen, so it holds the pack.
const DATING: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// A contents chunk ends after an entry whose path hashes to 0 mod this (about this many
/// entries each, the same boundaries whatever else changed), or at `CHUNK_MAX` entries.
const CHUNK_SPREAD: u8 = 16;
const CHUNK_MAX: usize = 256;

fn pack_path(id: &str) -> Path {
    Path::from(format!("{ROOT}/{id}.tar.zst"))
}
/// A pack's index as this version writes it (JSON, zstd-compressed).
fn index_path(id: &str) -> Path {
    Path::from(format!("{ROOT}/{id}.json.zst"))
}
/// A pack's index as the first incremental backups wrote it (plain JSON); still read.
fn plain_index_path(id: &str) -> Path {
    Path::from(format!("{ROOT}/{id}.json"))
}
/// Whether a pack holds contents blobs (chunks, chunk lists and deltas), which a backup reads to
/// find what changed, apart from object bodies: `<run>-c<n>` rather than `<run>-<n>`.
fn is_contents_pack(id: &str) -> bool {
    id.rsplit('-').next().is_some_and(|n| n.starts_with('c'))
}
fn tombstone_path(id: &str) -> Path {
    Path::from(format!("{ROOT}/{id}.gone"))
}
fn blob_name(sha256: &str) -> String {
    format!("blobs/{sha256}")
}

/// A pack's index, `packs/<id>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackIndex {
    /// `tar+zstd`.
    pub format: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    pub blobs: Vec<Blob>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
}

// ---------------------------------------------------------------------------------------------
// Leases

/// A running incremental backup's hold on the packs (see the module's protocol).
pub struct Lease {
    store: Store,
    run: String,
    /// Stops when the lease is released or dropped (a run given up, e.g. for taking too long): a
    /// lease that beat on would keep what it holds from collection for good.
    beat: tokio_util::task::AbortOnDropHandle<()>,
    health: Arc<std::sync::Mutex<Health>>,
}

/// When the last heartbeat that succeeded was sent, by both clocks (the monotonic one does not
/// count a suspended machine), and whether a gap ever made the lease stale. The store dates a beat
/// no earlier than it was sent, so measuring from the sending errs on the safe side.
struct Health {
    at: std::time::Instant,
    wall: std::time::SystemTime,
    lapsed: bool,
}

impl Health {
    fn quiet(&self) -> Duration {
        self.at.elapsed().max(self.wall.elapsed().unwrap_or_default())
    }
}

impl Lease {
    /// Writes the lease (before anything is read of the packs) and starts its heartbeat.
    pub async fn acquire(store: &Store, run: &str) -> Result<Lease> {
        let body = Bytes::from(serde_json::to_vec(&serde_json::json!({ "run": run })).unwrap_or_default());
        let sent = (std::time::Instant::now(), std::time::SystemTime::now());
        // Both written, side by side, before anything is read of the packs.
        let put = |suffix: &str| {
            let (path, body) = (Path::from(format!("{LEASES}/{run}.{suffix}")), body.clone());
            async move { store.objects().put(&path, PutPayload::from_bytes(body)).await.map_err(|e| store.error(e)) }
        };
        futures::future::try_join(put("start"), put("beat")).await?;
        let health = Arc::new(std::sync::Mutex::new(Health { at: sent.0, wall: sent.1, lapsed: false }));
        let (s, path, h) = (store.clone(), Path::from(format!("{LEASES}/{run}.beat")), health.clone());
        let beat = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let sent = (std::time::Instant::now(), std::time::SystemTime::now());
                if s.objects().put(&path, PutPayload::from_bytes(body.clone())).await.is_ok() {
                    let mut h = h.lock().expect("lease health");
                    // A gap a collection may have seen as stale poisons the lease for good: a
                    // collection in that gap may have removed a pack this run will reference.
                    if h.quiet() > STALE - HEARTBEAT {
                        h.lapsed = true;
                    }
                    // Beats whose answers come out of order: keep the latest sent.
                    if sent.0 > h.at {
                        (h.at, h.wall) = sent;
                    }
                }
            }
        }));
        Ok(Lease { store: store.clone(), run: run.to_string(), beat, health })
    }

    /// Fails when the heartbeat ever went (or now is) close to [`STALE`]: a collection may have
    /// ignored this lease, so committing could reference a pack it removed. Leaves two heartbeats'
    /// margin for the commit itself.
    pub fn check(&self) -> Result<()> {
        match self.unrefreshed() {
            Some(quiet) => Err(Error::Other(format!(
                "the run's lease on the packs went unrefreshed for too long ({quiet}s now); not committing (run it again)"
            ))),
            None => Ok(()),
        }
    }

    /// After the commit returned, the same test: a commit that took long may have landed after a
    /// collection saw the lease as stale, listed the committed backups without it, and went on to
    /// remove a pack it references, even after [`confirm`] found the pack there. Such a commit is
    /// undone.
    pub async fn check_committed(&self, name: &str) -> Result<()> {
        match self.unrefreshed() {
            Some(quiet) => Err(undo_commit(
                &self.store,
                name,
                format!("the run's lease on the packs went unrefreshed for {quiet}s by the end of backup {name:?}'s commit, so a collection may have removed a pack it references"),
            )
            .await),
            None => Ok(()),
        }
    }

    /// Seconds since the last beat sent that succeeded, when that is too close to [`STALE`] or a
    /// gap ever was.
    fn unrefreshed(&self) -> Option<u64> {
        let h = self.health.lock().expect("lease health");
        let quiet = h.quiet();
        (h.lapsed || quiet > STALE - 2 * HEARTBEAT).then_some(quiet.as_secs())
    }

    pub async fn release(self) {
        self.beat.abort();
        let _ = self.beat.await;
        let path = |suffix: &str| Path::from(format!("{LEASES}/{}.{suffix}", self.run));
        let (beat, start) = (path("beat"), path("start"));
        futures::future::join(self.store.remove_quietly(&beat), self.store.remove_quietly(&start)).await;
    }
}

/// Checks, after an incremental backup committed, that every pack it references is still there
/// (with its index); if one is not (the run's lease lapsed unnoticed), the commit is undone.
pub async fn confirm(store: &Store, name: &str, packs: &[String]) -> Result<()> {
    let checked: Vec<Option<String>> = futures::stream::iter(packs.iter().cloned().map(|id| {
        let store = store.clone();
        async move {
            let head = |path: Path| {
                let store = store.clone();
                async move {
                    match store.objects().head(&path).await {
                        Err(object_store::Error::NotFound { .. }) => false,
                        _ => true, // there, or unknown: not proof of a loss
                    }
                }
            };
            let index = async { head(index_path(&id)).await || head(plain_index_path(&id)).await };
            let (indexed, packed) = futures::future::join(index, head(pack_path(&id))).await;
            (!indexed || !packed).then_some(id)
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    if let Some(id) = checked.into_iter().flatten().next() {
        let why = format!("pack {id}, which backup {name:?} references, was removed while it ran");
        return Err(undo_commit(store, name, why).await);
    }
    Ok(())
}

/// Removes the commit of backup `name` because of `why`, then every other file in its directory
/// (the volume data its movers uploaded), the way `kubectl backup delete` does (the commit document
/// first). The packs only it referenced are left to the next collection: its lease is still held.
/// Says what became of it: not kept; not kept with files left, which `list` shows as an
/// interrupted run's; or, when the commit could not be removed, listed but not to be trusted.
async fn undo_commit(store: &Store, name: &str, why: String) -> Error {
    match crate::commit::delete(store, &crate::committed::dir::<crate::catalog::Objects>(name)).await {
        Ok(_) => Error::Other(format!("{why}; the backup is not kept (run it again)")),
        Err(e) => match store.objects().head(&crate::committed::metadata_path::<crate::catalog::Objects>(name)).await {
            // The commit went but not every file: an interrupted run's leftovers, which `list` shows.
            Err(object_store::Error::NotFound { .. }) => Error::Other(format!(
                "{why}; the backup is not kept (run it again), but removing its files failed ({e}): `kubectl backup delete {name}` removes them"
            )),
            // The undo failed: say so, rather than that the backup is gone.
            _ => Error::Other(format!(
                "{why}, and undoing its commit failed ({e}): the backup is listed but may not restore; delete it and run it again"
            )),
        },
    }
}

/// The store's clock: the time it gives a probe object (written and removed).
async fn store_now(store: &Store) -> Result<DateTime<Utc>> {
    let path = Path::from(format!("{LEASES}/.clock-{:016x}", rand::random::<u64>()));
    store.objects().put(&path, PutPayload::from_static(b"{}")).await.map_err(|e| store.error(e))?;
    let meta = store.objects().head(&path).await.map_err(|e| store.error(e));
    store.remove_quietly(&path).await;
    Ok(meta?.last_modified)
}

/// The leases in the location: per run, when it began and when it last beat (the store's times).
struct Leases {
    runs: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
    /// Heartbeats without a start (a run whose start was never written, or a beat that landed
    /// after its lease was released or removed): never a lease, only removed once old.
    orphan_beats: Vec<(String, DateTime<Utc>)>,
}

impl Leases {
    /// When each lease with a heartbeat within [`STALE`] of `now` began.
    fn live(&self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.runs
            .iter()
            .filter(|(_, _, last)| (now - *last).to_std().unwrap_or_default() < STALE)
            .map(|r| r.1)
            .collect()
    }
}

async fn list_leases(store: &Store) -> Result<Leases> {
    let listed: Vec<_> =
        store.objects().list(Some(&Path::from(LEASES))).try_collect().await.map_err(|e| store.error(e))?;
    let mut start: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut beat: HashMap<String, DateTime<Utc>> = HashMap::new();
    for m in listed {
        let file = m.location.filename().unwrap_or_default().to_string();
        if let Some(run) = file.strip_suffix(".start") {
            start.insert(run.to_string(), m.last_modified);
        } else if let Some(run) = file.strip_suffix(".beat") {
            beat.insert(run.to_string(), m.last_modified);
        }
    }
    let orphan_beats = beat.iter().filter(|(run, _)| !start.contains_key(*run)).map(|(r, t)| (r.clone(), *t)).collect();
    Ok(Leases {
        runs: start
            .into_iter()
            .map(|(run, began)| {
                let last = beat.get(&run).copied().unwrap_or(began).max(began);
                (run, began, last)
            })
            .collect(),
        orphan_beats,
    })
}

// ---------------------------------------------------------------------------------------------
// What the location holds

/// What `packs/` holds: per pack id, which of its files exist (with their times).
#[derive(Default, Debug)]
struct Listed {
    packs: BTreeMap<String, PackFiles>,
}

#[derive(Default, Debug, Clone)]
struct PackFiles {
    data: Option<DateTime<Utc>>,
    index: Option<DateTime<Utc>>,
    tombstone: Option<DateTime<Utc>>,
}

async fn list_packs(store: &Store) -> Result<Listed> {
    let listed: Vec<_> =
        store.objects().list(Some(&Path::from(ROOT))).try_collect().await.map_err(|e| store.error(e))?;
    let mut out = Listed::default();
    for m in listed {
        let file = m.location.filename().unwrap_or_default().to_string();
        let (id, kind) = match file.split_once('.') {
            Some((id, kind)) if !id.is_empty() => (id.to_string(), kind.to_string()),
            _ => continue,
        };
        let entry = out.packs.entry(id).or_default();
        match kind.as_str() {
            "tar.zst" => entry.data = Some(m.last_modified),
            "json" | "json.zst" => entry.index = Some(m.last_modified),
            "gone" => entry.tombstone = Some(m.last_modified),
            _ => {}
        }
    }
    Ok(out)
}

async fn read_index(store: &Store, id: &str) -> Result<PackIndex> {
    let bad = |reason: String| Error::Location {
        location: store.url().into(),
        reason: format!("pack index of {id}: {reason}"),
    };
    let bytes = match store.get_optional_within(&index_path(id), MAX_INDEX_BYTES).await? {
        Some(compressed) => {
            let mut plain = Vec::new();
            zstd::Decoder::new(&compressed[..])
                .and_then(|d| d.take(MAX_INDEX_BYTES + 1).read_to_end(&mut plain))
                .map_err(|e| bad(format!("not zstd: {e}")))?;
            if plain.len() as u64 > MAX_INDEX_BYTES {
                return Err(bad(format!("larger than {MAX_INDEX_BYTES} bytes")));
            }
            Bytes::from(plain)
        }
        None => store
            .get_optional_within(&plain_index_path(id), MAX_INDEX_BYTES)
            .await?
            .ok_or_else(|| missing_pack(store, id))?,
    };
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}

fn missing_pack(store: &Store, id: &str) -> Error {
    Error::Location { location: store.url().into(), reason: format!("pack {id} is missing from {ROOT}/") }
}

/// The blobs of the packs a new backup may reference: every pack with an index, no tombstone
/// and the same encryption as this run's.
pub struct Known {
    blobs: HashMap<[u8; 32], u32>,
    packs: Vec<String>,
}

impl Known {
    pub async fn load(store: &Store, encryption: Option<&Encryption>) -> Result<Known> {
        let listed = list_packs(store).await?;
        let ids: Vec<String> = listed
            .packs
            .into_iter()
            .filter(|(_, f)| f.data.is_some() && f.index.is_some() && f.tombstone.is_none())
            .map(|(id, _)| id)
            .collect();
        let indexes: Vec<(String, Result<PackIndex>)> = futures::stream::iter(ids.into_iter().map(|id| {
            let store = store.clone();
            async move {
                let r = read_index(&store, &id).await;
                (id, r)
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
        let mut known = Known { blobs: HashMap::new(), packs: Vec::new() };
        for (id, index) in indexes {
            let Ok(index) = index else {
                // Unreadable: not reused (the pack may be being removed); a new copy is stored.
                continue;
            };
            if index.encryption.as_ref() != encryption {
                continue;
            }
            let n = known.packs.len() as u32;
            known.packs.push(id);
            for b in &index.blobs {
                if let Some(k) = digest_key(&b.sha256) {
                    known.blobs.insert(k, n);
                }
            }
        }
        Ok(known)
    }
}

impl Known {
    /// Whether the location has the blob of this digest.
    pub fn holds(&self, key: &[u8; 32]) -> bool {
        self.blobs.contains_key(key)
    }

    /// The pack holding a blob, if the location has it.
    pub fn pack_of(&self, sha256: &str) -> Option<&str> {
        let n = *self.blobs.get(&digest_key(sha256)?)?;
        Some(&self.packs[n as usize])
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// A pack written to a local file, ready to upload.
pub struct FinishedPack {
    id: String,
    file: std::fs::File,
    index: PackIndex,
}

const DATA: usize = 0;
const CONTENTS: usize = 1;

struct OpenPack {
    id: String,
    /// Its number in the run's `new_ids`.
    n: u32,
    writer: ArchiveWriter<io::BufWriter<std::fs::File>>,
    blobs: Vec<Blob>,
    plain: u64,
}

/// Puts blobs into packs (on a blocking thread): each blob once, reusing what the location has.
pub struct Stash {
    known: Known,
    /// Blobs this run stored, by digest: the pack id they went to.
    new: HashMap<[u8; 32], u32>,
    new_ids: Vec<String>,
    /// The open pack of object bodies, and the open pack of contents blobs.
    current: [Option<OpenPack>; 2],
    finished: mpsc::Sender<FinishedPack>,
    referenced: BTreeSet<u32>,
    reused_packs: BTreeSet<u32>,
    seal: Option<Seal>,
    run: String,
    mtime: u64,
    pub stored: u64,
    pub reused: u64,
}

impl Stash {
    pub fn new(known: Known, run: &str, seal: Option<Seal>, mtime: u64, finished: mpsc::Sender<FinishedPack>) -> Self {
        Stash {
            known,
            new: HashMap::new(),
            new_ids: Vec::new(),
            current: [None, None],
            finished,
            referenced: BTreeSet::new(),
            reused_packs: BTreeSet::new(),
            seal,
            run: run.to_string(),
            mtime,
            stored: 0,
            reused: 0,
        }
    }

    /// Stores an object's `body` under `sha256` unless the location or this run has it already.
    pub fn put(&mut self, sha256: &str, body: &[u8]) -> io::Result<()> {
        self.put_kind(DATA, sha256, body)
    }

    /// Stores a contents blob (a chunk, a chunk list or a delta) in a contents pack, unless a
    /// contents pack of the location or this run has it already.
    pub fn put_contents(&mut self, sha256: &str, body: &[u8]) -> io::Result<()> {
        self.put_kind(CONTENTS, sha256, body)
    }

    /// Records that the backup references a blob the location holds (a contents blob of the
    /// previous backup it continues); false if the location has no such blob.
    pub fn reference(&mut self, sha256: &str) -> bool {
        digest_key(sha256).is_some_and(|k| self.reference_digest(&k))
    }

    /// [`Stash::reference`] by the digest's bytes.
    pub fn reference_digest(&mut self, key: &[u8; 32]) -> bool {
        match self.known.blobs.get(key) {
            Some(&n) => {
                self.reused += 1;
                self.reused_packs.insert(n);
                true
            }
            None => false,
        }
    }

    fn put_kind(&mut self, kind: usize, sha256: &str, body: &[u8]) -> io::Result<()> {
        let key = digest_key(sha256).ok_or_else(|| io::Error::other(format!("{sha256:?} is not a SHA-256")))?;
        if let Some(&n) = self.known.blobs.get(&key)
            && (kind == DATA || is_contents_pack(&self.known.packs[n as usize]))
        {
            self.reused += 1;
            self.reused_packs.insert(n);
            return Ok(());
        }
        if let Some(&n) = self.new.get(&key)
            && (kind == DATA || is_contents_pack(&self.new_ids[n as usize]))
        {
            self.reused += 1;
            self.referenced.insert(n);
            return Ok(());
        }
        if self.current[kind].is_none() {
            let n = self.new_ids.len();
            let id = if kind == CONTENTS { format!("{}-c{n}", self.run) } else { format!("{}-{n}", self.run) };
            let file = io::BufWriter::new(tempfile::tempfile()?);
            let writer = ArchiveWriter::new(file, self.mtime, self.seal.as_ref())?;
            self.new_ids.push(id.clone());
            self.current[kind] = Some(OpenPack { id, n: n as u32, writer, blobs: Vec::new(), plain: 0 });
        }
        let pack = self.current[kind].as_mut().expect("an open pack");
        let n = pack.n;
        pack.writer.append_raw(&blob_name(sha256), body)?;
        pack.blobs.push(Blob { sha256: sha256.to_string(), size: body.len() as u64 });
        pack.plain += body.len() as u64 + ENTRY_OVERHEAD;
        self.new.insert(key, n);
        self.referenced.insert(n);
        self.stored += 1;
        if pack.plain >= PACK_TARGET {
            self.close(kind)?;
        }
        Ok(())
    }

    /// Closes an open pack and hands it to the uploader.
    fn close(&mut self, kind: usize) -> io::Result<()> {
        let Some(pack) = self.current[kind].take() else { return Ok(()) };
        let (file, written) = pack.writer.finish()?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        let index = PackIndex {
            format: crate::archive::FORMAT.into(),
            size: written.size,
            sha256: written.sha256,
            encryption: self.seal.as_ref().map(|s| s.describe()),
            blobs: pack.blobs,
        };
        self.finished
            .blocking_send(FinishedPack { id: pack.id, file, index })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the pack uploader stopped"))
    }

    /// Closes the last pack; returns the ids of every pack the stored blobs are in.
    pub fn finish(mut self) -> io::Result<(Vec<String>, u64, u64)> {
        self.close(DATA)?;
        self.close(CONTENTS)?;
        let mut packs: BTreeSet<String> = self.referenced.iter().map(|&n| self.new_ids[n as usize].clone()).collect();
        packs.extend(self.reused_packs.iter().map(|&n| self.known.packs[n as usize].clone()));
        Ok((packs.into_iter().collect(), self.stored, self.reused))
    }
}

/// Cuts the contents into chunks with boundaries that depend only on the paths, per resource and
/// namespace (the order a LIST returns them in), so an unchanged part of a workspace gives the
/// same chunk as last time and is stored once.
#[derive(Default)]
pub struct Chunker {
    open: HashMap<(String, Option<String>), (Vec<u8>, usize)>,
    pub entries: u64,
}

impl Chunker {
    /// Adds a line; returns a finished chunk when this line ends one.
    pub fn push(&mut self, resource: &str, namespace: Option<&str>, line: &Line) -> Option<Vec<u8>> {
        self.entries += 1;
        let key = (resource.to_string(), namespace.map(str::to_string));
        let (buf, n) = self.open.entry(key.clone()).or_default();
        line.encode(buf);
        *n += 1;
        let boundary = Sha256::digest(line.path.as_bytes())[0] % CHUNK_SPREAD == 0;
        if boundary || *n >= CHUNK_MAX { self.open.remove(&key).map(|(b, _)| b) } else { None }
    }

    /// The chunks still open, in a stable order.
    pub fn finish(self) -> Vec<Vec<u8>> {
        let mut rest: Vec<_> = self.open.into_iter().collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        rest.into_iter().map(|(_, (b, _))| b).collect()
    }
}

/// Uploads finished packs, each followed by its index. Returns the bytes uploaded and the packs.
pub async fn upload_packs(store: &Store, mut finished: mpsc::Receiver<FinishedPack>) -> Result<(u64, Vec<String>)> {
    let mut bytes = 0u64;
    let mut written = Vec::new();
    while let Some(p) = finished.recv().await {
        let path = pack_path(&p.id);
        let sent = store.upload_file(&path, p.file).await?;
        if sent != p.index.size {
            store.remove_quietly(&path).await;
            return Err(Error::Other(format!("pack {} is {sent} bytes, {} were written", p.id, p.index.size)));
        }
        let index = serde_json::to_vec(&p.index)
            .map_err(io::Error::other)
            .and_then(|json| zstd::encode_all(&json[..], crate::archive::CONTENTS_ZSTD_LEVEL))
            .map_err(|e| Error::Other(format!("encoding a pack index: {e}")))?;
        bytes += sent + index.len() as u64;
        store.objects().put(&index_path(&p.id), PutPayload::from(index)).await.map_err(|e| store.error(e))?;
        written.push(p.id);
    }
    Ok((bytes, written))
}

/// What an incremental run stored, for its metadata.
pub struct Stored {
    pub contents: ContentsRef,
    pub packs: Vec<String>,
    pub status: IncrementalStatus,
}

// ---------------------------------------------------------------------------------------------
// Reading

/// The packs of one backup, fetched to local temporary files and verified (size and SHA-256 of
/// each against its index), then read as many times as a restore needs.
pub struct Local {
    packs: Vec<(String, std::fs::File, Opener)>,
    encryption: Option<Encryption>,
}

impl Local {
    /// How the packs are encrypted (every pack a backup references is encrypted alike).
    pub fn encryption(&self) -> Option<&Encryption> {
        self.encryption.as_ref()
    }

    pub async fn fetch(store: &Store, meta: &BackupMetadata) -> Result<Local> {
        Local::fetch_packs(store, &meta.backup.metadata.name, &meta.packs).await
    }

    /// Fetches some of backup `name`'s packs.
    pub async fn fetch_packs(store: &Store, name: &str, ids: &[String]) -> Result<Local> {
        let corrupt = |reason: String| crate::committed::corrupt(store, name, reason);
        if let Some(id) = ids.iter().find(|id| id.is_empty() || id.contains('/') || id.contains('.')) {
            return Err(corrupt(format!("it names pack {id:?}, which is not a pack id")));
        }
        // Sixteen at a time: a backup may use many small packs (one per earlier run).
        let fetched: Vec<Result<(String, std::fs::File, Option<Encryption>)>> =
            futures::stream::iter(ids.iter().cloned().map(|id| fetch_pack(store.clone(), name.to_string(), id)))
                .buffered(16)
                .collect()
                .await;
        let mut packs = Vec::new();
        let mut encryption = None;
        for f in fetched {
            let (id, file, enc) = f?;
            let opener = Opener::new(enc.clone(), store.unseal().clone(), name);
            packs.push((id, file, opener));
            encryption = encryption.or(enc);
        }
        Ok(Local { packs, encryption })
    }
}

/// Fetches one pack of backup `name` to a local file, checked against its index.
async fn fetch_pack(store: Store, name: String, id: String) -> Result<(String, std::fs::File, Option<Encryption>)> {
    let index = read_index(&store, &id).await.map_err(|e| match e {
        Error::Location { reason, .. } => crate::committed::corrupt(&store, &name, reason),
        e => e,
    })?;
    let data = crate::committed::DataFile {
        key: &id,
        size: index.size,
        sha256: &index.sha256,
        encryption: index.encryption.as_ref(),
    };
    let file = crate::committed::fetch(&store, &name, &pack_path(&id), data).await?;
    Ok((id, file, index.encryption))
}

/// A visitor over stored bodies: `f(key, body)` returns whether to go on.
pub type Visit<'a> = dyn FnMut(&str, Vec<u8>) -> std::result::Result<bool, String> + 'a;

impl Local {
    /// Calls `f(sha256, body)` for every blob of every pack whose digest is in `wanted`, after
    /// checking the body has that digest. Blocking.
    pub fn scan(&self, wanted: &dyn Fn(&str) -> bool, f: &mut Visit<'_>) -> std::result::Result<(), String> {
        for (id, file, opener) in &self.packs {
            let mut file = file;
            io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
            let plain = opener.open(io::BufReader::new(file)).map_err(|e| e.to_string())?;
            let mut archive = crate::archive::open_within(plain, MAX_PACK_PLAIN)?;
            for entry in archive.entries().map_err(|e| format!("pack {id}: not a tar archive: {e}"))? {
                let mut entry = entry.map_err(|e| format!("pack {id} is truncated or corrupt: {e}"))?;
                let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some(sha) = path.strip_prefix("blobs/") else {
                    return Err(format!("pack {id} holds {path:?}, which is not a blob"));
                };
                if !wanted(sha) {
                    continue;
                }
                if entry.size() > crate::archive::MAX_OBJECT_BYTES {
                    return Err(format!("pack {id}: blob {sha} is larger than any object"));
                }
                let body = crate::archive::read_body(&mut entry)
                    .map_err(|e| format!("pack {id} is truncated in {sha}: {e}"))?;
                let got = crate::archive::sha256_hex(&body);
                if got != sha {
                    return Err(format!("pack {id}: blob {sha} is corrupt (its SHA-256 is {got})"));
                }
                let sha = sha.to_string();
                if !f(&sha, body)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// An incremental backup's contents, assembled from its chunks and deltas.
pub struct Assembled {
    /// Every object: path -> its body's SHA-256 and size and the version it was read at.
    pub lines: HashMap<String, Recorded>,
    /// The chunks, in order (from the metadata or the chunk list).
    pub chunks: Vec<String>,
    /// Lines in the deltas applied to the chunks.
    pub delta_lines: u64,
}

/// One line of a delta: an object added or changed, or one removed.
#[derive(Serialize, Deserialize)]
struct Removed {
    path: String,
    removed: bool,
}

/// Appends a delta line saying `path` was removed.
pub fn encode_removed(path: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, &Removed { path: path.to_string(), removed: true }).expect("serializes");
    out.push(b'\n');
}

fn lines_of(blob: &[u8]) -> impl Iterator<Item = &[u8]> {
    blob.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// Reads the blobs `wanted` from `local`'s packs (each verified by SHA-256) into `into`.
fn fetch_blobs(
    local: &Local,
    wanted: &HashSet<String>,
    into: &mut HashMap<String, Vec<u8>>,
) -> std::result::Result<(), String> {
    let wanted: HashSet<&str> = wanted.iter().map(String::as_str).filter(|s| !into.contains_key(*s)).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut found = 0;
    local.scan(&|sha| wanted.contains(sha), &mut |sha, body| {
        if into.insert(sha.to_string(), body).is_none() {
            found += 1;
        }
        Ok(found < wanted.len())
    })
}

/// Reads an incremental backup's contents: its chunk list, its chunks (every object once) and
/// its deltas applied in order. Blocking.
pub fn read_contents(local: &Local, contents: &ContentsRef) -> std::result::Result<Assembled, String> {
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut wanted: HashSet<String> = contents.chunks.iter().chain(&contents.deltas).cloned().collect();
    wanted.extend(contents.list.clone());
    fetch_blobs(local, &wanted, &mut blobs)?;
    let chunks: Vec<String> = match &contents.list {
        None => contents.chunks.clone(),
        Some(list) => {
            let body = blobs.get(list).ok_or_else(|| format!("the chunk list {list} is in none of its packs"))?;
            let chunks: Vec<String> = lines_of(body).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
            if let Some(bad) = chunks.iter().find(|c| digest_key(c).is_none()) {
                return Err(format!("the chunk list {list} names {bad:?}, which is not a SHA-256"));
            }
            fetch_blobs(local, &chunks.iter().cloned().collect(), &mut blobs)?;
            chunks
        }
    };
    let mut lines: HashMap<String, Recorded> = HashMap::new();
    for sha in &chunks {
        let chunk = blobs.get(sha).ok_or_else(|| format!("contents chunk {sha} is in none of its packs"))?;
        for raw in lines_of(chunk) {
            let line = crate::contents::parse_line(raw)?;
            if lines.insert(line.path.clone(), line.recorded()).is_some() {
                return Err(format!("entry {:?} is listed twice in the contents", line.path));
            }
        }
    }
    let mut delta_lines = 0;
    for sha in &contents.deltas {
        let delta = blobs.get(sha).ok_or_else(|| format!("contents delta {sha} is in none of its packs"))?;
        for raw in lines_of(delta) {
            delta_lines += 1;
            match crate::contents::parse_line(raw) {
                Ok(line) => {
                    let recorded = line.recorded();
                    lines.insert(line.path, recorded);
                }
                Err(not_a_line) => {
                    let r: Removed =
                        serde_json::from_slice(raw).map_err(|_| format!("contents delta {sha}: {not_a_line}"))?;
                    if !r.removed || lines.remove(&r.path).is_none() {
                        return Err(format!(
                            "contents delta {sha} removes {:?}, which the contents do not hold",
                            r.path
                        ));
                    }
                }
            }
        }
    }
    Ok(Assembled { lines, chunks, delta_lines })
}

/// Reads an incremental backup's contents from its chunks and deltas and every object it lists
/// from the packs, each verified by SHA-256; calls `f` with each object as an archive entry.
/// Blocking.
pub fn read_verified(
    local: &Local,
    contents: &ContentsRef,
    mut f: impl FnMut(Entry) -> std::result::Result<(), String>,
) -> std::result::Result<u64, String> {
    // 1. The contents.
    let assembled = read_contents(local, contents)?;
    let entries = assembled.lines.len() as u64;
    if entries != contents.entries {
        return Err(format!("the contents list {entries} entries, the metadata says {}", contents.entries));
    }
    let mut by_sha: HashMap<String, Vec<String>> = HashMap::new();
    for (path, recorded) in assembled.lines {
        by_sha.entry(recorded.sha256_hex()).or_default().push(path);
    }
    // 2. The objects.
    let mut seen = 0u64;
    let mut found: HashSet<String> = HashSet::new();
    local.scan(&|sha| by_sha.contains_key(sha), &mut |sha, body| {
        if !found.insert(sha.to_string()) {
            // The same blob in a second pack (stored again after a tombstone): read once.
            return Ok(true);
        }
        for raw_path in &by_sha[sha] {
            let path = crate::archive::parse_entry_path(raw_path)?;
            seen += 1;
            f(Entry { path, raw_path: raw_path.clone(), json: body.clone(), sha256: sha.to_string() })?;
        }
        Ok(true)
    })?;
    if let Some(missing) = by_sha.iter().find(|(sha, _)| !found.contains(*sha)) {
        return Err(format!("entry {:?}: its body {} is in none of its packs", missing.1[0], missing.0));
    }
    Ok(seen)
}

// ---------------------------------------------------------------------------------------------
// The previous backup of a scope

const HEADS: &str = "heads";
/// A backup continues its predecessor's chunks with at most this many deltas.
pub const MAX_DELTAS: usize = 32;

fn head_path(scope: &str) -> Path {
    Path::from(format!("{HEADS}/{scope}.json"))
}

#[derive(Serialize, Deserialize)]
struct Head {
    backup: String,
}

/// Records `name` as the latest incremental backup of `scope` (the next one of that scope stores
/// its changes since this one). Best effort: without it the next backup lists every object.
pub async fn set_head(store: &Store, scope: &str, name: &str) {
    let body = serde_json::to_vec(&Head { backup: name.to_string() }).expect("serializes");
    if let Err(e) = store.objects().put(&head_path(scope), PutPayload::from(body)).await {
        tracing::warn!(scope, backup = name, error = %e, "could not record the latest incremental backup");
    }
}

/// The previous incremental backup of a scope, which a new backup continues.
pub struct Previous {
    pub name: String,
    pub contents: ContentsRef,
    pub assembled: Assembled,
    /// The version of the API server it was read from.
    pub server_version: Option<String>,
}

impl Previous {
    /// Every contents blob it uses (chunk list, chunks and deltas).
    pub fn blobs(&self) -> impl Iterator<Item = &String> {
        self.contents.list.iter().chain(&self.assembled.chunks).chain(&self.contents.deltas)
    }
}

/// The location's packs ([`Known::load`]) and the latest committed incremental backup of `scope`
/// if it can be continued ([`previous`]), read side by side: their requests overlap (on a store
/// that answers a small GET in tens of milliseconds, each sequential request shows).
pub async fn load_with_previous(
    store: &Store,
    encryption: Option<&Encryption>,
    scope: &str,
    scope_of: impl Fn(&BackupMetadata) -> String,
) -> Result<(Known, Option<Previous>)> {
    let (known, fetched) = tokio::join!(Known::load(store, encryption), fetch_previous(store, scope, scope_of));
    let known = known?;
    let previous = match fetched {
        Some(f) => previous(f, &known).await,
        None => None,
    };
    Ok((known, previous))
}

/// A previous backup's metadata and contents packs, read before the location's packs are known.
struct Fetched {
    name: String,
    meta: BackupMetadata,
    contents: ContentsRef,
    ids: Vec<String>,
    local: Local,
}

/// Reads the latest incremental backup of `scope`: its metadata, which must be for the same scope
/// with a short chain of deltas (see below), and its contents packs. `None` if any of it is not
/// there or not so.
async fn fetch_previous(store: &Store, scope: &str, scope_of: impl Fn(&BackupMetadata) -> String) -> Option<Fetched> {
    fetch_head(store, scope, scope_of, MAX_DELTAS).await
}

/// Reads the latest incremental backup of `scope` with fewer than `max_deltas` deltas ([`fetch_previous`]).
async fn fetch_head(
    store: &Store,
    scope: &str,
    scope_of: impl Fn(&BackupMetadata) -> String,
    max_deltas: usize,
) -> Option<Fetched> {
    let doc = store.get_optional_within(&head_path(scope), 4096).await.ok()??;
    let head: Head = serde_json::from_slice(&doc).ok()?;
    let meta: BackupMetadata =
        crate::committed::read::<crate::catalog::Objects, BackupMetadata>(store, &head.backup).await.ok()??;
    let contents = meta.contents.clone()?;
    if !meta.backup.spec.incremental || contents.file.is_some() || scope_of(&meta) != scope {
        return None;
    }
    // A new backup adds one more delta only to a short chain whose changes are under a quarter of
    // its objects; else it lists every object again, in chunks (most of them stored already). The
    // chain's length is known before its contents are downloaded.
    if contents.deltas.len() >= max_deltas {
        return None;
    }
    let ids: Vec<String> = meta.packs.iter().filter(|id| is_contents_pack(id)).cloned().collect();
    if ids.is_empty() {
        return None;
    }
    let local = Local::fetch_packs(store, &head.backup, &ids).await.ok()?;
    Some(Fetched { name: head.backup, meta, contents, ids, local })
}

/// The fetched previous backup, if it can be continued: every contents pack it uses is one `known`
/// may reuse, and its contents read whole with a small chain of deltas. Never an error.
async fn previous(f: Fetched, known: &Known) -> Option<Previous> {
    if f.ids.iter().any(|id| !known.packs.contains(id)) {
        return None;
    }
    assemble(f, true).await
}

/// The latest incremental backup of `scope` and every object it recorded, for a caller that
/// compares them with what it sees (the in-cluster controller after a restart): the backup a new
/// one of the scope would continue ([`load_with_previous`]), short of checking the location's
/// packs, and also one at the end of a long chain of deltas. `None` when there is none, or it
/// cannot be read.
pub async fn latest(store: &Store, scope: &str, scope_of: impl Fn(&BackupMetadata) -> String) -> Option<Previous> {
    assemble(fetch_head(store, scope, scope_of, usize::MAX).await?, false).await
}

/// A fetched backup with its contents read whole, if their lines are all there (and, with
/// `short_chain`, its deltas changed under a quarter of them).
async fn assemble(f: Fetched, short_chain: bool) -> Option<Previous> {
    let (local, c) = (f.local, f.contents.clone());
    let assembled = tokio::task::spawn_blocking(move || read_contents(&local, &c)).await.ok()?;
    let contents = f.contents;
    match assembled {
        Ok(a)
            if a.lines.len() as u64 == contents.entries
                && (!short_chain || a.delta_lines * 4 < contents.entries.max(1)) =>
        {
            let server_version = f.meta.backup.status.source_cluster.map(|c| c.version);
            Some(Previous { name: f.name, contents, assembled: a, server_version })
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(backup = %f.name, error = %e, "not continuing the previous backup");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage collection

/// What a collection did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    /// Packs found unused and tombstoned now.
    pub marked: Vec<String>,
    /// Packs deleted (tombstoned, unused, and older than every live lease).
    pub deleted: Vec<String>,
    /// Tombstones removed because a committed backup uses the pack.
    pub revived: Vec<String>,
    /// Tombstoned packs kept because a backup that may use them is running.
    pub held: Vec<String>,
    pub bytes_freed: u64,
}

/// The packs committed object backups reference. Fails when any commit document cannot be read:
/// a pack is never deleted on a guess.
async fn referenced(store: &Store) -> Result<HashSet<String>> {
    #[derive(Deserialize)]
    struct Packs {
        #[serde(default)]
        packs: Vec<String>,
    }
    let root = crate::committed::root::<crate::catalog::Objects>();
    let listed = store.objects().list_with_delimiter(Some(&root)).await.map_err(|e| store.error(e))?;
    let names: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
    let docs: Vec<(String, Result<Option<Bytes>>)> = futures::stream::iter(names.into_iter().map(|name| {
        let store = store.clone();
        async move {
            let doc = store.get_optional(&crate::committed::metadata_path::<crate::catalog::Objects>(&name)).await;
            (name, doc)
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    let mut out = HashSet::new();
    for (name, doc) in docs {
        let Some(bytes) = doc? else { continue };
        let p: Packs = serde_json::from_slice(&bytes).map_err(|e| Error::Location {
            location: store.url().into(),
            reason: format!("not collecting packs: the metadata of backup {name:?} cannot be read ({e})"),
        })?;
        out.extend(p.packs);
    }
    Ok(out)
}

/// Removes the packs no committed backup uses, never one a running backup may reference (the
/// protocol in the module's documentation).
pub async fn collect_garbage(store: &Store) -> Result<Collected> {
    let mut done = Collected::default();
    // 1. Tombstone what no committed backup uses (but what a running backup may have written).
    let now = store_now(store).await?;
    let leases = list_leases(store).await?;
    let live = leases.live(now);
    let oldest_lease = live.iter().min().copied();
    let used = referenced(store).await?;
    let listed = list_packs(store).await?;
    for (id, files) in &listed.packs {
        // Half-written packs (data or index only) are step 4's.
        let (Some(_), Some(indexed)) = (files.data, files.index) else { continue };
        if used.contains(id) || files.tombstone.is_some() || oldest_lease.is_some_and(|l| indexed >= l) {
            continue;
        }
        store.objects().put(&tombstone_path(id), PutPayload::from_static(b"{}")).await.map_err(|e| store.error(e))?;
        done.marked.push(id.clone());
    }
    // 2. The tombstones (T), then the leases (L), then (after them) what committed backups use.
    let before = list_packs(store).await?;
    let now = store_now(store).await?;
    let leases = list_leases(store).await?;
    let live = leases.live(now);
    let used = referenced(store).await?;
    let listed = list_packs(store).await?;
    // 3. Revive or delete.
    for (id, files) in &listed.packs {
        let Some(tombstoned) = files.tombstone else { continue };
        let in_t = before.packs.get(id).and_then(|f| f.tombstone) == Some(tombstoned);
        if used.contains(id) {
            store.remove_quietly(&tombstone_path(id)).await;
            done.revived.push(id.clone());
        } else if in_t && live.iter().all(|began| *began > tombstoned + DATING) {
            done.bytes_freed += remove_pack(store, id).await?;
            done.deleted.push(id.clone());
        } else {
            done.held.push(id.clone());
        }
    }
    // 4. What interrupted runs left: half-written packs and dead leases.
    let settled =
        |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default() > STALE && live.iter().all(|began| *began > t);
    for (id, files) in &before.packs {
        let half = match (files.data, files.index, files.tombstone) {
            (Some(t), None, None) | (None, Some(t), None) => t,
            _ => continue,
        };
        if settled(half) && !used.contains(id) {
            done.bytes_freed += remove_pack(store, id).await?;
            done.deleted.push(id.clone());
        }
    }
    for (run, _, last) in &leases.runs {
        if (now - *last).to_std().unwrap_or_default() > 10 * STALE {
            for suffix in ["beat", "start"] {
                store.remove_quietly(&Path::from(format!("{LEASES}/{run}.{suffix}"))).await;
            }
        }
    }
    for (run, last) in &leases.orphan_beats {
        if (now - *last).to_std().unwrap_or_default() > 10 * STALE {
            store.remove_quietly(&Path::from(format!("{LEASES}/{run}.beat"))).await;
        }
    }
    Ok(done)
}

/// Deletes a pack: the index first (a pack without an index is never reused), the tombstone last.
/// Returns the bytes freed.
async fn remove_pack(store: &Store, id: &str) -> Result<u64> {
    let size = store.objects().head(&pack_path(id)).await.map(|m| m.size).unwrap_or(0);
    for path in [index_path(id), plain_index_path(id), pack_path(id), tombstone_path(id)] {
        match store.objects().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store.error(e)),
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_lease_stops_beating() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_url(&format!("file://{}", dir.path().display()), &Default::default()).unwrap();
        let lease = Lease::acquire(&store, "run-1").await.unwrap();
        assert!(dir.path().join(LEASES).join("run-1.beat").is_file());
        let beat = lease.beat.abort_handle();
        assert!(!beat.is_finished());
        // A run given up (its future dropped, as a continuous backup that took too long) drops
        // its lease unreleased: the heartbeat must not outlive it.
        drop(lease);
        for _ in 0..100 {
            if beat.is_finished() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the heartbeat of a dropped lease still runs");
    }
}
