//! The committed backups in a location: list, read, delete, download, newest per namespace, expired.
//!
//! A backup exists when its `metadata.json` does. Reading never trusts the archive without the
//! digests the metadata holds.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use futures::StreamExt;
use jiff::Timestamp;
use object_store::ObjectStoreExt;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::backup::{
    HEARTBEAT, METADATA_FILE, archive_path, backup_dir, backups_root, in_progress_path, metadata_path,
};
use crate::model::{Backup, BackupMetadata, BackupMetadataHead, FORMAT_VERSION};
use crate::store::Store;
use crate::{Error, Result};

/// What a location holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// Committed backups, newest first.
    pub backups: Vec<Backup>,
    /// Runs in progress (their marker is fresh).
    pub in_progress: Vec<Backup>,
    /// Names with files but no metadata and no live run: leftovers of interrupted runs.
    pub incomplete: Vec<String>,
    /// Names whose metadata could not be read, with the reason.
    pub unreadable: Vec<(String, String)>,
}

/// Lists committed backups. Reads each metadata document concurrently, skipping per-object digests.
pub async fn list(store: &Store) -> Result<Listing> {
    let root = backups_root();
    let listed = store.objects().list_with_delimiter(Some(&root)).await.map_err(|e| store.error(e))?;
    let names: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
    let results: Vec<(String, Result<Option<BackupMetadataHead>>)> =
        futures::stream::iter(names.into_iter().map(|name| async move {
            let r = read_head(store, &name).await;
            (name, r)
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut listing = Listing::default();
    for (name, r) in results {
        match r {
            Ok(Some(head)) => listing.backups.push(head.backup),
            Ok(None) => match in_progress(store, &name).await? {
                Some((b, false)) => listing.in_progress.push(b),
                _ => listing.incomplete.push(name),
            },
            Err(Error::Corrupt { reason, .. }) => listing.unreadable.push((name, reason)),
            Err(e) => return Err(e),
        }
    }
    sort_newest_first(&mut listing.backups);
    listing.incomplete.sort();
    Ok(listing)
}

pub fn sort_newest_first(backups: &mut [Backup]) {
    backups.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

async fn read_head(store: &Store, name: &str) -> Result<Option<BackupMetadataHead>> {
    let Some(bytes) = store.get_optional(&metadata_path(name)).await? else {
        return Ok(None);
    };
    let head: BackupMetadataHead =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(store, name, format!("metadata.json is not valid: {e}")))?;
    Ok(Some(head))
}

fn corrupt(store: &Store, name: &str, reason: String) -> Error {
    Error::Corrupt { name: name.into(), location: store.url().into(), reason }
}

async fn not_found(store: &Store, name: &str) -> Error {
    let leftovers = has_files(store, name).await;
    let hint = if leftovers {
        format!(" (an interrupted backup left files; `kubectl backup delete {name}` removes them)")
    } else {
        " (see `kubectl backup list`)".to_string()
    };
    Error::BackupNotFound { name: name.into(), location: store.url().into(), hint }
}

async fn has_files(store: &Store, name: &str) -> bool {
    let dir = backup_dir(name);
    matches!(store.objects().list(Some(&dir)).next().await, Some(Ok(_)))
}

/// Reads one backup's `Backup` document (without the per-object digests). A run still in progress
/// is described from its marker, with phase `InProgress` (and a warning when it has gone quiet).
pub async fn describe(store: &Store, name: &str) -> Result<Backup> {
    crate::input::validate_name("backup name", name)?;
    if let Some(head) = read_head(store, name).await? {
        return Ok(head.backup);
    }
    match in_progress(store, name).await? {
        Some((b, _)) => Ok(b),
        None => Err(not_found(store, name).await),
    }
}

/// The in-progress marker of `name`, and whether it is stale (no refresh for 6 heartbeats).
async fn in_progress(store: &Store, name: &str) -> Result<Option<(Backup, bool)>> {
    let got = match store.objects().get(&in_progress_path(name)).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store.error(e)),
    };
    let modified = got.meta.last_modified;
    let bytes = got.bytes().await.map_err(|e| store.error(e))?;
    let Ok(mut backup) = serde_json::from_slice::<Backup>(&bytes) else {
        return Ok(None);
    };
    backup.status.phase = crate::model::Phase::InProgress;
    let age = chrono_age(modified);
    let stale = age > HEARTBEAT * 6;
    if stale {
        backup.status.warnings.push(format!(
            "no progress for {}s: the run was probably interrupted; `kubectl backup delete {name}` removes what it left",
            age.as_secs()
        ));
    }
    Ok(Some((backup, stale)))
}

fn chrono_age(modified: chrono::DateTime<chrono::Utc>) -> std::time::Duration {
    (chrono::Utc::now() - modified).to_std().unwrap_or_default()
}

/// Reads a backup's full metadata, checking that this version of the tool can read it.
pub async fn metadata(store: &Store, name: &str) -> Result<BackupMetadata> {
    let Some(bytes) = store.get_optional(&metadata_path(name)).await? else {
        return Err(not_found(store, name).await);
    };
    let meta: BackupMetadata =
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
    let archive = meta
        .backup
        .status
        .archive
        .as_ref()
        .ok_or_else(|| corrupt(store, name, "metadata.json names no archive".into()))?;
    if archive.encryption.is_some() {
        return Err(corrupt(store, name, "the archive is encrypted and this version cannot decrypt it".into()));
    }
    if archive.key.contains('/') || archive.key == METADATA_FILE || archive.key.is_empty() {
        return Err(corrupt(store, name, format!("archive key {:?} is not a file of this backup", archive.key)));
    }
    Ok(meta)
}

pub use crate::commit::Deleted;

/// Deletes a backup: the metadata first (so an interrupted delete leaves an uncommitted leftover,
/// never a listed backup without its archive), then every other file under its directory.
pub async fn delete(store: &Store, name: &str) -> Result<Deleted> {
    crate::input::validate_name("backup name", name)?;
    match crate::commit::delete(store, &backup_dir(name)).await? {
        Some(d) => Ok(d),
        None => Err(not_found(store, name).await),
    }
}

/// Where a download goes.
pub enum Destination<'a> {
    File(&'a FsPath),
    Stdout,
}

/// Downloads a backup's archive, verifying its size and SHA-256. A file destination is written to a
/// temporary file beside it and renamed only when verified, so a failed download never leaves a
/// partial archive under the requested name. Returns the bytes written.
pub async fn download(store: &Store, name: &str, dest: Destination<'_>) -> Result<u64> {
    let meta = metadata(store, name).await?;
    match dest {
        Destination::Stdout => {
            let mut out = tokio::io::stdout();
            copy_verified(store, &meta, &mut out).await.map_err(|e| e.at("stdout"))
        }
        Destination::File(file) => {
            let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(FsPath::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(".kubectl-backup-download")
                .tempfile_in(dir)
                .map_err(|e| Error::io(dir, e))?;
            let (std_file, tmp_path) = tmp.into_parts();
            let mut out = tokio::fs::File::from_std(std_file);
            let n = copy_verified(store, &meta, &mut out).await.map_err(|e| e.at(file))?;
            out.sync_all().await.map_err(|e| Error::io(file, e))?;
            tmp_path.persist(file).map_err(|e| Error::io(file, e.error))?;
            Ok(n)
        }
    }
}

/// Downloads a backup's archive into an anonymous temporary file, verified, and rewinds it.
pub async fn fetch(store: &Store, meta: &BackupMetadata) -> Result<std::fs::File> {
    let file = tempfile::tempfile().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut out = tokio::fs::File::from_std(file);
    copy_verified(store, meta, &mut out).await.map_err(|e| e.at(std::env::temp_dir().as_path()))?;
    out.flush().await.map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut file = out.into_std().await;
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io(std::env::temp_dir(), e))?;
    Ok(file)
}

/// Either a store/verification error, or a local write error (which `at` names the file of).
enum CopyError {
    Engine(Error),
    Write(std::io::Error),
}

impl CopyError {
    fn at(self, path: impl AsRef<FsPath>) -> Error {
        match self {
            CopyError::Engine(e) => e,
            CopyError::Write(e) => Error::io(path.as_ref(), e),
        }
    }
}

/// Streams the archive of `meta` into `out`, then checks its size and SHA-256 against the metadata.
async fn copy_verified(
    store: &Store,
    meta: &BackupMetadata,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<u64, CopyError> {
    let name = meta.backup.metadata.name.as_str();
    let archive = meta
        .backup
        .status
        .archive
        .as_ref()
        .ok_or_else(|| CopyError::Engine(corrupt(store, name, "no archive".into())))?;
    let path = archive_path(name, &archive.key);
    let got = store.objects().get(&path).await.map_err(|e| {
        CopyError::Engine(match e {
            object_store::Error::NotFound { .. } => {
                corrupt(store, name, format!("its archive {} is missing", archive.key))
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
        size += chunk.len() as u64;
        out.write_all(&chunk).await.map_err(CopyError::Write)?;
    }
    out.flush().await.map_err(CopyError::Write)?;
    check_digest(store, name, size, &hex::encode(hasher.finalize()), &archive.sha256, archive.size)
        .map_err(CopyError::Engine)?;
    Ok(size)
}

fn check_digest(store: &Store, name: &str, size: u64, got: &str, want: &str, want_size: u64) -> Result<()> {
    if size != want_size {
        return Err(corrupt(
            store,
            name,
            format!("archive is {size} bytes, the metadata says {want_size} (truncated?)"),
        ));
    }
    if got != want {
        return Err(corrupt(store, name, format!("archive SHA-256 {got} does not match {want} in the metadata")));
    }
    Ok(())
}

/// The newest committed backup containing each namespace, by creation time.
pub fn newest_per_namespace(backups: &[Backup]) -> BTreeMap<String, Backup> {
    let mut out: BTreeMap<String, Backup> = BTreeMap::new();
    for b in backups {
        if b.status.phase == crate::model::Phase::Failed {
            continue;
        }
        for ns in &b.status.namespaces {
            let newer = out.get(ns).is_none_or(|cur| b.metadata.creation_timestamp > cur.metadata.creation_timestamp);
            if newer {
                out.insert(ns.clone(), b.clone());
            }
        }
    }
    out
}

/// Committed backups whose expiration has passed.
pub fn expired(backups: &[Backup], now: Timestamp) -> Vec<&Backup> {
    backups.iter().filter(|b| b.is_expired(now)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupSpec, Phase};

    fn backup(name: &str, at: &str, namespaces: &[&str]) -> Backup {
        let mut b = Backup::new(name, BackupSpec::default());
        b.metadata.creation_timestamp = Some(at.parse().unwrap());
        b.status.phase = Phase::Completed;
        b.status.namespaces = namespaces.iter().map(|s| s.to_string()).collect();
        b
    }

    #[test]
    fn newest_backup_per_namespace_wins() {
        let list =
            vec![backup("old", "2024-01-01T00:00:00Z", &["a", "b"]), backup("new", "2024-02-01T00:00:00Z", &["a"])];
        let idx = newest_per_namespace(&list);
        assert_eq!(idx["a"].metadata.name, "new");
        assert_eq!(idx["b"].metadata.name, "old");
        assert!(!idx.contains_key("c"));
    }

    #[test]
    fn expiry_is_by_expiration_time() {
        let mut a = backup("a", "2024-01-01T00:00:00Z", &[]);
        a.status.expiration = Some("2024-01-02T00:00:00Z".parse().unwrap());
        let b = backup("b", "2024-01-01T00:00:00Z", &[]);
        let now: Timestamp = "2024-01-03T00:00:00Z".parse().unwrap();
        let list = vec![a, b];
        let e = expired(&list, now);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].metadata.name, "a");
    }
}
