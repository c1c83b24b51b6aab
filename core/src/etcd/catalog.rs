//! The committed etcd backups in a location: list, describe, delete, download, expired.
//!
//! An etcd backup exists when its `metadata.json` does. Its data file is never handed out without
//! checking its size and SHA-256 against the metadata first.

use std::path::Path as FsPath;

use futures::StreamExt;
use jiff::Timestamp;
use object_store::ObjectStoreExt;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::model::{EtcdBackup, EtcdMetadata, FORMAT_VERSION};
use super::{METADATA_FILE, WHAT, backup_dir, data_path, metadata_path, root};
use crate::catalog::Destination;
use crate::input::validate_name;
use crate::store::Store;
use crate::{Error, Result};

/// What a location holds under `etcd/`.
#[derive(Debug, Default)]
pub struct EtcdListing {
    /// Committed etcd backups, newest first.
    pub backups: Vec<EtcdBackup>,
    /// Names with files but no metadata: leftovers of interrupted runs (or a run in progress).
    pub incomplete: Vec<String>,
    /// Names whose metadata could not be read, with the reason.
    pub unreadable: Vec<(String, String)>,
}

/// Lists committed etcd backups, reading their metadata concurrently.
pub async fn list(store: &Store) -> Result<EtcdListing> {
    let listed = store.objects().list_with_delimiter(Some(&root())).await.map_err(|e| store.error(e))?;
    let names: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
    let results: Vec<(String, Result<Option<EtcdMetadata>>)> =
        futures::stream::iter(names.into_iter().map(|name| async move {
            let r = read(store, &name).await;
            (name, r)
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut listing = EtcdListing::default();
    for (name, r) in results {
        match r {
            Ok(Some(meta)) => listing.backups.push(meta.backup),
            Ok(None) => listing.incomplete.push(name),
            Err(Error::Corrupt { reason, .. }) => listing.unreadable.push((name, reason)),
            Err(e) => return Err(e),
        }
    }
    listing.backups.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    listing.incomplete.sort();
    Ok(listing)
}

/// The metadata of `name`, checked: `None` when there is none.
async fn read(store: &Store, name: &str) -> Result<Option<EtcdMetadata>> {
    let Some(bytes) = store.get_optional(&metadata_path(name)).await? else {
        return Ok(None);
    };
    let meta: EtcdMetadata =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(store, name, format!("metadata.json is not valid: {e}")))?;
    if meta.format_version > FORMAT_VERSION {
        return Err(corrupt(
            store,
            name,
            format!(
                "format version {} is newer than this tool reads ({FORMAT_VERSION}); upgrade kubectl-backup",
                meta.format_version
            ),
        ));
    }
    if meta.backup.metadata.name != name {
        return Err(corrupt(
            store,
            name,
            format!("metadata.json names another backup ({:?})", meta.backup.metadata.name),
        ));
    }
    let file = &meta.backup.status.file;
    if file.is_empty() || file.contains('/') || file == METADATA_FILE {
        return Err(corrupt(store, name, format!("data file {file:?} is not a file of this backup")));
    }
    Ok(Some(meta))
}

pub(crate) fn corrupt(store: &Store, name: &str, reason: String) -> Error {
    Error::Corrupt { name: name.into(), location: store.url().into(), reason }
}

async fn not_found(store: &Store, name: &str) -> Error {
    let dir = backup_dir(name);
    let leftovers = matches!(store.objects().list(Some(&dir)).next().await, Some(Ok(_)));
    let hint = if leftovers {
        format!(
            " (an interrupted etcd backup left files, or one is running; `kubectl backup etcd delete {name}` removes them)"
        )
    } else {
        " (see `kubectl backup etcd list`)".to_string()
    };
    Error::BackupNotFound { name: name.into(), location: store.url().into(), hint }
}

/// One etcd backup's document.
pub async fn describe(store: &Store, name: &str) -> Result<EtcdBackup> {
    Ok(metadata(store, name).await?.backup)
}

/// One etcd backup's stored metadata; a clear error when there is no such backup.
pub async fn metadata(store: &Store, name: &str) -> Result<EtcdMetadata> {
    validate_name(WHAT, name)?;
    match read(store, name).await? {
        Some(m) => Ok(m),
        None => Err(not_found(store, name).await),
    }
}

pub use crate::commit::Deleted;

/// Deletes an etcd backup: the metadata first (so an interrupted delete leaves an uncommitted
/// leftover, never a listed backup without its data), then every other file under its directory.
pub async fn delete(store: &Store, name: &str) -> Result<Deleted> {
    validate_name(WHAT, name)?;
    match crate::commit::delete(store, &backup_dir(name)).await? {
        Some(d) => Ok(d),
        None => Err(not_found(store, name).await),
    }
}

/// Committed etcd backups whose expiration has passed.
pub fn expired(backups: &[EtcdBackup], now: Timestamp) -> Vec<&EtcdBackup> {
    backups.iter().filter(|b| b.is_expired(now)).collect()
}

/// Downloads an etcd backup's data file (snapshot, zip or JSON), verifying its size and SHA-256.
/// A file destination is written beside the target and renamed only when verified. Returns the
/// bytes written.
pub async fn download(store: &Store, name: &str, dest: Destination<'_>) -> Result<u64> {
    let meta = metadata(store, name).await?;
    match dest {
        Destination::Stdout => {
            let mut out = tokio::io::stdout();
            copy_verified(store, &meta.backup, &mut out, &mut ()).await.map_err(|e| e.at("stdout"))
        }
        Destination::File(file) => write_verified(store, &meta.backup, file, &mut ()).await,
    }
}

/// A check of the data beyond size and SHA-256: sees every chunk, then says yes or no.
pub(crate) trait Inspect {
    fn update(&mut self, chunk: &[u8]);
    fn verify(&mut self) -> Result<()>;
}

impl Inspect for () {
    fn update(&mut self, _: &[u8]) {}
    fn verify(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Writes the data file of `backup` to `file` through a temporary file beside it, renamed once
/// the size, the SHA-256 and `inspect` agree.
pub(crate) async fn write_verified(
    store: &Store,
    backup: &EtcdBackup,
    file: &FsPath,
    inspect: &mut (dyn Inspect + Send),
) -> Result<u64> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(FsPath::new("."));
    let tmp =
        tempfile::Builder::new().prefix(".kubectl-backup-etcd").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut out = tokio::fs::File::from_std(std_file);
    let n = copy_verified(store, backup, &mut out, inspect).await.map_err(|e| e.at(file))?;
    inspect.verify()?;
    out.sync_all().await.map_err(|e| Error::io(file, e))?;
    tmp_path.persist(file).map_err(|e| Error::io(file, e.error))?;
    Ok(n)
}

/// Downloads the data file of `backup` into an anonymous temporary file, verified, and rewinds it.
pub(crate) async fn fetch(store: &Store, backup: &EtcdBackup) -> Result<std::fs::File> {
    let tmp = std::env::temp_dir();
    let file = tempfile::tempfile().map_err(|e| Error::io(&tmp, e))?;
    let mut out = tokio::fs::File::from_std(file);
    copy_verified(store, backup, &mut out, &mut ()).await.map_err(|e| e.at(tmp.as_path()))?;
    let mut file = out.into_std().await;
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io(&tmp, e))?;
    Ok(file)
}

/// Either a store/verification error, or a local write error (which `at` names the file of).
pub(crate) enum CopyError {
    Engine(Error),
    Write(std::io::Error),
}

impl CopyError {
    pub(crate) fn at(self, path: impl AsRef<FsPath>) -> Error {
        match self {
            CopyError::Engine(e) => e,
            CopyError::Write(e) => Error::io(path.as_ref(), e),
        }
    }
}

/// Streams the data file of `backup` into `out`, then checks its size and SHA-256 against the
/// metadata. `inspect` sees every chunk (the snapshot trailer check).
pub(crate) async fn copy_verified(
    store: &Store,
    backup: &EtcdBackup,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    inspect: &mut (dyn Inspect + Send),
) -> Result<u64, CopyError> {
    let name = backup.metadata.name.as_str();
    let s = &backup.status;
    let path = data_path(name, &s.file);
    let got = store.objects().get(&path).await.map_err(|e| {
        CopyError::Engine(match e {
            object_store::Error::NotFound { .. } => {
                corrupt(store, name, format!("its data file {} is missing", s.file))
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
    if size != s.size {
        return Err(CopyError::Engine(corrupt(
            store,
            name,
            format!("{} is {size} bytes, the metadata says {} (truncated?)", s.file, s.size),
        )));
    }
    let got = hex::encode(hasher.finalize());
    if got != s.sha256 {
        return Err(CopyError::Engine(corrupt(
            store,
            name,
            format!("{} has SHA-256 {got}, the metadata says {}", s.file, s.sha256),
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::model::EtcdBackupSpec;

    #[test]
    fn expiry_is_by_expiration_time() {
        let mut a = EtcdBackup::new("a", EtcdBackupSpec::default());
        a.status.expiration = Some("2024-01-02T00:00:00Z".parse().unwrap());
        let b = EtcdBackup::new("b", EtcdBackupSpec::default());
        let now: Timestamp = "2024-01-03T00:00:00Z".parse().unwrap();
        let list = vec![a, b];
        let e = expired(&list, now);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name(), "a");
    }
}
