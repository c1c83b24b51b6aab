//! Committed backups of any kind, in one place: objects under `backups/`, etcd under `etcd/`,
//! each `<root>/<name>/` holding one data file and the `metadata.json` written last ([`commit`]).
//! A [`Kind`] says where its backups live and what its documents are; everything else — reading
//! and checking a commit document, listing, not-found hints, deleting, and copying a data file
//! with its size and SHA-256 verified — is written once here, so what comes next (encryption,
//! volume data, incremental packs) lands once for every kind.
//!
//! [`commit`]: crate::commit

use std::io::{self, Read, Write};
use std::path::Path as FsPath;

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use crate::commit::{Deleted, METADATA_FILE};
use crate::model::{Envelope, StoredFile};
use crate::store::Store;
use crate::{Error, Result};

/// A kind of committed backup.
pub trait Kind {
    /// The directory of this kind's backups in a location: `backups` or `etcd`.
    const ROOT: &'static str;
    /// The newest metadata format this tool reads.
    const FORMAT_VERSION: u32;
    /// What error messages call a name, e.g. "backup name".
    const WHAT: &'static str;
    /// The CLI command family, for hints: `kubectl backup{COMMAND} list`.
    const COMMAND: &'static str;
    /// The part of the commit document a listing reads.
    type Head: Document;
    /// The whole commit document.
    type Metadata: Document + serde::Serialize;
    /// The printed document of one backup (`Backup`, `EtcdBackup`): its spec and status.
    type Spec;
    type Status;
    /// The printed document a listing's head holds.
    fn backup(head: Self::Head) -> Envelope<Self::Spec, Self::Status>;
}

/// The printed document of one backup of kind `K`.
pub type BackupOf<K> = Envelope<<K as Kind>::Spec, <K as Kind>::Status>;

/// What every commit document says.
pub trait Document: DeserializeOwned + Send {
    fn format_version(&self) -> u32;
    /// The backup's name (must be the directory's).
    fn name(&self) -> &str;
    /// The files of the backup's own directory, the data file first, or why this tool cannot use
    /// them. None at all: the backup's data is in the location's packs (an incremental backup).
    fn files(&self) -> std::result::Result<Vec<DataFile<'_>>, String>;
    /// Whether the backup references the location's shared packs (an incremental backup): deleting
    /// it may leave packs that no backup uses, which garbage collection removes.
    fn shares_packs(&self) -> bool {
        false
    }
    /// The data file, or why there is none.
    fn data(&self) -> std::result::Result<DataFile<'_>, String> {
        self.files()?.into_iter().next().ok_or_else(|| {
            "it is an incremental backup: its objects are in the location's packs, not in a data file of its own"
                .to_string()
        })
    }
}

/// Implements [`Document`] for commit documents of the shape `{formatVersion, backup}` whose
/// `backup.status.archive` describes the one data file: etcd backups'.
macro_rules! commit_document {
    ($($t:ty),+) => {$(
        impl $crate::committed::Document for $t {
            fn format_version(&self) -> u32 {
                self.format_version
            }
            fn name(&self) -> &str {
                &self.backup.metadata.name
            }
            fn files(&self) -> std::result::Result<Vec<$crate::committed::DataFile<'_>>, String> {
                Ok(vec![$crate::committed::data_file(self.backup.status.archive.as_ref())?])
            }
        }
    )+};
}
pub(crate) use commit_document;

/// A backup's one data file, as its metadata describes it.
#[derive(Clone, Copy, Debug)]
pub struct DataFile<'a> {
    /// The file's name in the backup's directory.
    pub key: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    /// How the stored bytes are encrypted, if they are.
    pub encryption: Option<&'a crate::crypto::Encryption>,
}

/// The data file a commit document describes, or why this tool cannot use it.
pub fn data_file(file: Option<&StoredFile>) -> std::result::Result<DataFile<'_>, String> {
    let f = file.ok_or("metadata.json names no data file")?;
    Ok(DataFile { key: &f.key, size: f.size, sha256: &f.sha256, encryption: f.encryption.as_ref() })
}

/// Commits `metadata` as backup `name` of kind `K` (the protocol in [`crate::commit`]): its data
/// file must already be uploaded.
pub async fn commit<K: Kind>(store: &Store, name: &str, metadata: &K::Metadata) -> Result<()> {
    let encoding = |e: serde_json::Error| Error::Other(format!("encoding metadata: {e}"));
    let mut document = serde_json::to_value(metadata).map_err(encoding)?;
    crate::model::to_stored_spellings(document.pointer_mut("/backup/spec"));
    let body = serde_json::to_vec(&document).map_err(encoding)?;
    let files = metadata.files().map_err(|reason| corrupt(store, name, reason))?;
    let keep: Vec<Path> = files.iter().map(|f| data_path::<K>(name, f.key)).collect();
    crate::commit::commit(store, &dir::<K>(name), name, Bytes::from(body), &keep).await
}

/// Refuses to start a run under a name already committed: names are never overwritten.
pub async fn ensure_absent<K: Kind>(store: &Store, name: &str) -> Result<()> {
    match store.objects().head(&metadata_path::<K>(name)).await {
        Ok(_) => Err(Error::BackupExists { name: name.into(), location: store.url().into() }),
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(store.error(e)),
    }
}

pub fn root<K: Kind>() -> Path {
    Path::from(K::ROOT)
}

pub fn dir<K: Kind>(name: &str) -> Path {
    Path::from(format!("{}/{name}", K::ROOT))
}

pub fn metadata_path<K: Kind>(name: &str) -> Path {
    Path::from(format!("{}/{name}/{METADATA_FILE}", K::ROOT))
}

pub fn data_path<K: Kind>(name: &str, key: &str) -> Path {
    Path::from(format!("{}/{name}/{key}", K::ROOT))
}

pub fn corrupt(store: &Store, name: &str, reason: String) -> Error {
    Error::Corrupt { name: name.into(), location: store.url().into(), reason }
}

/// Reads and checks the commit document of `name` as `D` (the head or the whole document):
/// `None` when it does not exist; `Corrupt` when it is not valid, is of a newer format, names
/// another backup or a data file outside its directory.
pub async fn read<K: Kind, D: Document>(store: &Store, name: &str) -> Result<Option<D>> {
    let Some(bytes) = store.get_optional(&metadata_path::<K>(name)).await? else {
        return Ok(None);
    };
    parse::<K, D>(store, name, &bytes).map(Some)
}

fn parse<K: Kind, D: Document>(store: &Store, name: &str, bytes: &Bytes) -> Result<D> {
    let doc: D =
        serde_json::from_slice(bytes).map_err(|e| corrupt(store, name, format!("metadata.json is not valid: {e}")))?;
    if doc.format_version() > K::FORMAT_VERSION {
        return Err(corrupt(
            store,
            name,
            format!(
                "format version {} is newer than this tool reads ({}); upgrade kubectl-backup",
                doc.format_version(),
                K::FORMAT_VERSION
            ),
        ));
    }
    if doc.name() != name {
        return Err(corrupt(store, name, format!("metadata.json names another backup ({:?})", doc.name())));
    }
    for data in doc.files().map_err(|reason| corrupt(store, name, reason))? {
        if data.key.is_empty() || data.key.contains('/') || data.key == METADATA_FILE {
            return Err(corrupt(store, name, format!("data file {:?} is not a file of this backup", data.key)));
        }
    }
    Ok(doc)
}

/// The whole commit document of `name`, checked; a clear error when there is no such backup.
pub async fn metadata<K: Kind>(store: &Store, name: &str) -> Result<K::Metadata> {
    crate::input::validate_name(K::WHAT, name)?;
    match read::<K, K::Metadata>(store, name).await? {
        Some(m) => Ok(m),
        None => Err(not_found::<K>(store, name).await),
    }
}

/// "Not found", with a hint: leftovers of an interrupted run, or where to look.
pub async fn not_found<K: Kind>(store: &Store, name: &str) -> Error {
    let leftovers = has_files::<K>(store, name).await;
    let cmd = K::COMMAND;
    let hint = if leftovers {
        format!(
            " (an interrupted{} backup left files, or one is running; `kubectl backup{cmd} delete {name}` removes them)",
            K::COMMAND
        )
    } else {
        format!(" (see `kubectl backup{cmd} list`)")
    };
    Error::BackupNotFound { name: name.into(), location: store.url().into(), hint }
}

pub async fn has_files<K: Kind>(store: &Store, name: &str) -> bool {
    matches!(store.objects().list(Some(&dir::<K>(name))).next().await, Some(Ok(_)))
}

/// What a location holds of one kind of backup.
#[derive(Debug)]
pub struct Listing<D> {
    /// Committed backups, newest first.
    pub backups: Vec<D>,
    /// Runs in progress (object backups, whose runs keep a fresh marker).
    pub in_progress: Vec<D>,
    /// Names with files but no commit document and no live run: leftovers of interrupted runs.
    pub incomplete: Vec<String>,
    /// Names whose commit document could not be used, with the reason.
    pub unreadable: Vec<(String, String)>,
}

/// Lists `K`'s backups (newest first), reading their heads 16 at a time.
pub async fn list<K: Kind>(store: &Store) -> Result<Listing<BackupOf<K>>> {
    list_named::<K>(store, |_| true).await
}

/// [`list`] of the backups whose name `wanted` accepts: one LIST of the names, then the heads of
/// those alone (a location's other backups cost nothing more).
pub async fn list_named<K: Kind>(store: &Store, wanted: impl Fn(&str) -> bool) -> Result<Listing<BackupOf<K>>> {
    let found = find::<K>(store, wanted).await?;
    let mut backups: Vec<BackupOf<K>> = found.committed.into_iter().map(K::backup).collect();
    backups.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    Ok(Listing { backups, in_progress: Vec::new(), incomplete: found.uncommitted, unreadable: found.unreadable })
}

/// What a listing found.
struct Found<H> {
    committed: Vec<H>,
    uncommitted: Vec<String>,
    unreadable: Vec<(String, String)>,
}

async fn find<K: Kind>(store: &Store, wanted: impl Fn(&str) -> bool) -> Result<Found<K::Head>> {
    let listed = store.objects().list_with_delimiter(Some(&root::<K>())).await.map_err(|e| store.error(e))?;
    let names: Vec<String> = (listed.common_prefixes.iter())
        .filter_map(|p| p.filename().map(str::to_string))
        .filter(|name| wanted(name))
        .collect();
    let results: Vec<(String, Result<Option<K::Head>>)> = futures::stream::iter(names.into_iter().map(|name| async {
        let r = read::<K, K::Head>(store, &name).await;
        (name, r)
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    let mut listing = Found { committed: Vec::new(), uncommitted: Vec::new(), unreadable: Vec::new() };
    for (name, r) in results {
        match r {
            Ok(Some(head)) => listing.committed.push(head),
            Ok(None) => listing.uncommitted.push(name),
            Err(Error::Corrupt { reason, .. }) => listing.unreadable.push((name, reason)),
            Err(e) => return Err(e),
        }
    }
    listing.uncommitted.sort();
    Ok(listing)
}

/// Deletes a backup: the commit document first (an interrupted delete leaves an uncommitted
/// leftover, never a listed backup without its data), then every other file of it.
/// Deleting a backup that shared packs then collects the packs no backup uses any more
/// ([`crate::packs::collect_garbage`]); a collection that fails is reported, the delete stands.
pub async fn delete<K: Kind>(store: &Store, name: &str) -> Result<Deleted> {
    crate::input::validate_name(K::WHAT, name)?;
    let shares_packs = matches!(read::<K, K::Head>(store, name).await, Ok(Some(h)) if h.shares_packs());
    let mut deleted = match crate::commit::delete(store, &dir::<K>(name)).await? {
        Some(d) => d,
        None => return Err(not_found::<K>(store, name).await),
    };
    if shares_packs {
        deleted.collected = Some(crate::packs::collect_garbage(store).await.map_err(|e| e.to_string()));
    }
    Ok(deleted)
}

/// Where a download goes.
pub enum Destination<'a> {
    File(&'a FsPath),
    Stdout,
}

/// A check of the data beyond size and SHA-256 (e.g. an etcd snapshot's own trailer): sees every
/// chunk, then says yes or no.
pub trait Inspect {
    fn update(&mut self, chunk: &[u8]);
    fn verify(&mut self) -> Result<()>;
}

impl Inspect for () {
    fn update(&mut self, _: &[u8]) {}
    fn verify(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Downloads the data file of `name`, verified. A file destination is written to a temporary
/// file beside it and renamed only when verified, so a failed download never leaves a partial
/// file under the requested name. Returns the bytes written.
pub async fn download<K: Kind>(store: &Store, name: &str, dest: Destination<'_>) -> Result<u64> {
    let meta = metadata::<K>(store, name).await?;
    let data = meta.data().map_err(|reason| corrupt(store, name, reason))?;
    let path = data_path::<K>(name, data.key);
    match dest {
        Destination::Stdout => {
            let mut out = tokio::io::stdout();
            copy_verified(store, name, &path, data, &mut out, &mut ()).await.map_err(|e| e.at("stdout"))
        }
        Destination::File(file) => write_verified(store, name, &path, data, file, &mut ()).await,
    }
}

/// Writes the plaintext of a data file to `file` through a temporary file beside it, renamed once
/// the stored size and SHA-256, the decryption (if encrypted) and `inspect` (on the plaintext)
/// agree. The plaintext is written nowhere else. Returns the plaintext's size.
pub async fn write_plaintext(
    store: &Store,
    name: &str,
    path: &Path,
    data: DataFile<'_>,
    file: &FsPath,
    inspect: &mut (dyn Inspect + Send),
) -> Result<u64> {
    let Some(encryption) = data.encryption.cloned() else {
        return write_verified(store, name, path, data, file, inspect).await;
    };
    let stored = fetch(store, name, path, data).await?;
    let (beside, tmp_path) = temp_beside(file)?;
    let opener = crate::crypto::Opener::new(Some(encryption), store.unseal().clone(), name);
    let plain = decrypt_into(opener, stored, beside, file.to_path_buf()).await?;
    // The snapshot's own checks read the plaintext back (from the page cache, just written).
    let mut reader = tokio::io::BufReader::new(tokio::fs::File::from_std(plain));
    let mut n = 0u64;
    loop {
        let chunk = tokio::io::AsyncBufReadExt::fill_buf(&mut reader).await.map_err(|e| Error::io(file, e))?;
        if chunk.is_empty() {
            break;
        }
        inspect.update(chunk);
        let len = chunk.len();
        n += len as u64;
        tokio::io::AsyncBufReadExt::consume(&mut reader, len);
    }
    inspect.verify()?;
    tmp_path.persist(file).map_err(|e| Error::io(file, e.error))?;
    Ok(n)
}

/// The plaintext of a data file in an anonymous temporary file (mode 0600), verified and rewound:
/// the stored bytes' size and SHA-256 first, then the decryption, which authenticates every chunk.
/// For readers that must seek (a zip); others decrypt as they read ([`crate::crypto::Opener`]).
pub async fn fetch_plaintext(store: &Store, name: &str, path: &Path, data: DataFile<'_>) -> Result<std::fs::File> {
    let stored = fetch(store, name, path, data).await?;
    let Some(encryption) = data.encryption.cloned() else {
        return Ok(stored);
    };
    let tmp = std::env::temp_dir();
    let out = tempfile::tempfile().map_err(|e| Error::io(&tmp, e))?;
    let opener = crate::crypto::Opener::new(Some(encryption), store.unseal().clone(), name);
    decrypt_into(opener, stored, out, tmp).await
}

/// Decrypts `stored` into `out` on a blocking thread, synced and rewound. `at` names `out` in errors.
async fn decrypt_into(
    opener: crate::crypto::Opener,
    stored: std::fs::File,
    mut out: std::fs::File,
    at: std::path::PathBuf,
) -> Result<std::fs::File> {
    tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
        let mut plain = opener.open(std::io::BufReader::new(stored))?;
        std::io::copy(&mut plain, &mut out).map_err(|e| Error::Encrypted {
            name: opener.name().to_string(),
            reason: format!("the ciphertext does not decrypt: {e}"),
        })?;
        out.sync_all().map_err(|e| Error::io(&at, e))?;
        std::io::Seek::rewind(&mut out).map_err(|e| Error::io(&at, e))?;
        Ok(out)
    })
    .await
    .map_err(|e| Error::Other(format!("decrypting: {e}")))?
}

/// A temporary file in `file`'s directory, to be renamed to `file` once its content is verified.
pub(crate) fn temp_beside(file: &FsPath) -> Result<(std::fs::File, tempfile::TempPath)> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(FsPath::new("."));
    let tmp =
        tempfile::Builder::new().prefix(".kubectl-backup-download").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    Ok(tmp.into_parts())
}

/// Writes a data file to `file` through a temporary file beside it, renamed once the size, the
/// SHA-256 and `inspect` agree.
pub async fn write_verified(
    store: &Store,
    name: &str,
    path: &Path,
    data: DataFile<'_>,
    file: &FsPath,
    inspect: &mut (dyn Inspect + Send),
) -> Result<u64> {
    let (std_file, tmp_path) = temp_beside(file)?;
    let mut out = tokio::fs::File::from_std(std_file);
    let n = copy_verified(store, name, path, data, &mut out, inspect).await.map_err(|e| e.at(file))?;
    inspect.verify()?;
    out.sync_all().await.map_err(|e| Error::io(file, e))?;
    tmp_path.persist(file).map_err(|e| Error::io(file, e.error))?;
    Ok(n)
}

/// A data file in an anonymous temporary file, verified and rewound.
pub async fn fetch(store: &Store, name: &str, path: &Path, data: DataFile<'_>) -> Result<std::fs::File> {
    let tmp = std::env::temp_dir();
    let file = tempfile::tempfile().map_err(|e| Error::io(&tmp, e))?;
    let mut out = tokio::fs::File::from_std(file);
    copy_verified(store, name, path, data, &mut out, &mut ()).await.map_err(|e| e.at(tmp.as_path()))?;
    out.flush().await.map_err(|e| Error::io(&tmp, e))?;
    let mut file = out.into_std().await;
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io(&tmp, e))?;
    Ok(file)
}

/// Counts and hashes what passes through (archives and etcd data files alike).
pub struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W> Digesting<W> {
    pub fn new(inner: W) -> Self {
        Digesting { inner, hasher: Sha256::new(), size: 0 }
    }

    /// Bytes that passed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The inner writer or reader, the byte count and the SHA-256 (hex). Flushes nothing.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Either a store or verification error, or a local write error (which `at` names the file of).
pub enum CopyError {
    Engine(Error),
    Write(std::io::Error),
}

impl CopyError {
    pub fn at(self, path: impl AsRef<FsPath>) -> Error {
        match self {
            CopyError::Engine(e) => e,
            CopyError::Write(e) => Error::io(path.as_ref(), e),
        }
    }
}

/// Streams the data file at `path` into `out`, then checks its size and SHA-256 against `data`.
/// `inspect` sees every chunk.
pub async fn copy_verified(
    store: &Store,
    name: &str,
    path: &Path,
    data: DataFile<'_>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    inspect: &mut (dyn Inspect + Send),
) -> std::result::Result<u64, CopyError> {
    let got = store.objects().get(path).await.map_err(|e| {
        CopyError::Engine(match e {
            object_store::Error::NotFound { .. } => {
                corrupt(store, name, format!("its data file {} is missing", data.key))
            }
            e => store.error(e),
        })
    })?;
    let mut stream = got.into_stream();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CopyError::Engine(store.error(e)))?;
        hasher.update(&chunk);
        inspect.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk).await.map_err(CopyError::Write)?;
    }
    out.flush().await.map_err(CopyError::Write)?;
    if size != data.size {
        return Err(CopyError::Engine(corrupt(
            store,
            name,
            format!("{} is {size} bytes, the metadata says {} (truncated?)", data.key, data.size),
        )));
    }
    let got = hex::encode(hasher.finalize());
    if got != data.sha256 {
        return Err(CopyError::Engine(corrupt(
            store,
            name,
            format!("{} has SHA-256 {got}, the metadata says {}", data.key, data.sha256),
        )));
    }
    Ok(size)
}
