//! The committed object backups in a location: list, describe, read, delete, download, newest per
//! namespace, expired — the object kind of [`committed`], plus what only object backups have (runs
//! in progress with a heartbeat marker).
//!
//! A backup exists when its `metadata.json` does. Reading never trusts the archive without the
//! digests the metadata holds.

use std::collections::BTreeMap;

use jiff::Timestamp;
use object_store::ObjectStoreExt;

use crate::Result;
use crate::backup::{HEARTBEAT, in_progress_path};
use crate::committed::{self, Document, Kind};
use crate::model::{Backup, BackupMetadata, BackupMetadataHead, BackupSpec, BackupStatus, FORMAT_VERSION};
use crate::store::Store;

pub use crate::committed::{Deleted, Destination};

/// Object backups: `backups/<name>/` with a tar+zstd archive.
pub struct Objects;

impl Kind for Objects {
    const ROOT: &'static str = "backups";
    const FORMAT_VERSION: u32 = FORMAT_VERSION;
    const WHAT: &'static str = "backup name";
    const COMMAND: &'static str = "";
    type Head = BackupMetadataHead;
    type Metadata = BackupMetadata;
    type Spec = BackupSpec;
    type Status = BackupStatus;
    fn backup(head: BackupMetadataHead) -> Backup {
        head.backup
    }
}

committed::commit_document!(BackupMetadataHead, BackupMetadata);

/// What a location holds of object backups.
pub type Listing = committed::Listing<Backup>;

/// Lists committed backups (reading each metadata document concurrently, skipping per-object
/// digests) and runs in progress.
pub async fn list(store: &Store) -> Result<Listing> {
    let mut listing = committed::list::<Objects>(store).await?;
    let mut incomplete: Vec<String> = Vec::new();
    for name in std::mem::take(&mut listing.incomplete) {
        match in_progress(store, &name).await? {
            Some((b, false)) => listing.in_progress.push(b),
            _ => incomplete.push(name),
        }
    }
    listing.incomplete = incomplete;
    Ok(listing)
}

/// Reads one backup's `Backup` document (without the per-object digests). A run still in progress
/// is described from its marker, with phase `InProgress` (and a warning when it has gone quiet).
pub async fn describe(store: &Store, name: &str) -> Result<Backup> {
    crate::input::validate_name(Objects::WHAT, name)?;
    if let Some(head) = committed::read::<Objects, BackupMetadataHead>(store, name).await? {
        return Ok(head.backup);
    }
    match in_progress(store, name).await? {
        Some((b, _)) => Ok(b),
        None => Err(committed::not_found::<Objects>(store, name).await),
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
    let age = (chrono::Utc::now() - modified).to_std().unwrap_or_default();
    let stale = age > HEARTBEAT * 6;
    if stale {
        backup.status.warnings.push(format!(
            "no progress for {}s: the run was probably interrupted; `kubectl backup delete {name}` removes what it left",
            age.as_secs()
        ));
    }
    Ok(Some((backup, stale)))
}

/// Reads a backup's full metadata, checking that this version of the tool can read it.
pub async fn metadata(store: &Store, name: &str) -> Result<BackupMetadata> {
    committed::metadata::<Objects>(store, name).await
}

/// Deletes a backup: the metadata first, then every other file under its directory.
pub async fn delete(store: &Store, name: &str) -> Result<Deleted> {
    committed::delete::<Objects>(store, name).await
}

/// Downloads a backup's archive, verifying its size and SHA-256 (see [`committed::download`]).
pub async fn download(store: &Store, name: &str, dest: Destination<'_>) -> Result<u64> {
    committed::download::<Objects>(store, name, dest).await
}

/// Downloads a backup's archive into an anonymous temporary file, verified, and rewinds it.
pub async fn fetch(store: &Store, meta: &BackupMetadata) -> Result<std::fs::File> {
    let name = meta.name();
    let data = meta.data().map_err(|reason| committed::corrupt(store, name, reason))?;
    committed::fetch(store, name, &committed::data_path::<Objects>(name, data.key), data).await
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
