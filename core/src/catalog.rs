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

impl committed::Document for BackupMetadataHead {
    fn format_version(&self) -> u32 {
        self.format_version
    }
    fn name(&self) -> &str {
        &self.backup.metadata.name
    }
    fn files(&self) -> std::result::Result<Vec<committed::DataFile<'_>>, String> {
        own_files(&self.backup.status, None, self.format_version)
    }
    fn data(&self) -> std::result::Result<committed::DataFile<'_>, String> {
        archive(&self.backup.status)
    }
    fn shares_packs(&self) -> bool {
        self.backup.status.incremental.is_some()
    }
}

impl committed::Document for BackupMetadata {
    fn format_version(&self) -> u32 {
        self.format_version
    }
    fn name(&self) -> &str {
        &self.backup.metadata.name
    }
    fn files(&self) -> std::result::Result<Vec<committed::DataFile<'_>>, String> {
        let contents = self.contents.as_ref();
        if self.format_version >= 2 {
            let c = contents.ok_or("metadata.json has no contents")?;
            if self.backup.status.archive.is_some() && c.file.is_none() {
                return Err("metadata.json names an archive but no contents file".into());
            }
            if self.backup.status.incremental.is_some() && (self.packs.is_empty() && c.entries > 0) {
                return Err("metadata.json names no packs for its objects".into());
            }
        }
        own_files(&self.backup.status, contents.and_then(|c| c.file.as_ref()), self.format_version)
    }
    fn data(&self) -> std::result::Result<committed::DataFile<'_>, String> {
        archive(&self.backup.status)
    }
}

/// The archive: an incremental backup has none (its volume parts are not its data file).
fn archive(status: &BackupStatus) -> std::result::Result<committed::DataFile<'_>, String> {
    match (&status.archive, &status.incremental) {
        (None, Some(_)) => {
            Err("it is an incremental backup: its objects are in the location's packs, not in a data file of its own"
                .into())
        }
        (archive, _) => committed::data_file(archive.as_ref()),
    }
}

/// A backup's own files: a plain backup's archive, then its contents file (none for an
/// incremental one), then the parts of the volume data it holds.
fn own_files<'a>(
    status: &'a BackupStatus,
    contents: Option<&'a crate::model::StoredFile>,
    format_version: u32,
) -> std::result::Result<Vec<committed::DataFile<'a>>, String> {
    let mut files = Vec::new();
    if !(status.archive.is_none() && status.incremental.is_some() && format_version >= 2) {
        files.push(committed::data_file(status.archive.as_ref())?);
        files.extend(contents.map(|c| committed::data_file(Some(c))).transpose()?);
    }
    for v in &status.volumes {
        for p in &v.parts {
            files.push(committed::data_file(Some(p))?);
        }
    }
    Ok(files)
}

/// What a location holds of object backups.
pub type Listing = committed::Listing<Backup>;

/// Lists committed backups (reading each metadata document concurrently, skipping per-object
/// digests) and runs in progress.
pub async fn list(store: &Store) -> Result<Listing> {
    list_named(store, |_| true).await
}

/// [`list`] of the backups whose name `wanted` accepts; the others' documents are not read.
pub async fn list_named(store: &Store, wanted: impl Fn(&str) -> bool) -> Result<Listing> {
    let mut listing = committed::list_named::<Objects>(store, wanted).await?;
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
/// An incremental backup has no archive of its own: the same tar+zstd archive is built from its
/// packs, every object verified by SHA-256, and sealed to the same recipients when the packs are
/// encrypted — so `download` gives the file a plain backup would have.
pub async fn download(store: &Store, name: &str, dest: Destination<'_>) -> Result<u64> {
    let meta = metadata(store, name).await?;
    if meta.backup.status.archive.is_some() || meta.backup.status.incremental.is_none() {
        return committed::download::<Objects>(store, name, dest).await;
    }
    let local = crate::packs::Local::fetch(store, &meta).await?;
    let seal = local.encryption().map(|e| crate::crypto::Seal::Recipients(e.recipients.clone()));
    let contents = meta.contents.clone().unwrap_or_default();
    let mtime = meta.backup.metadata.creation_timestamp.map_or(0, |t| t.as_second().max(0) as u64);
    let file = match dest {
        Destination::File(f) => Some(f.to_path_buf()),
        Destination::Stdout => None,
    };
    let corrupt = |reason: String| committed::corrupt(store, name, reason);
    let written = tokio::task::spawn_blocking(move || -> Result<std::result::Result<u64, String>> {
        let (out, persist): (Box<dyn std::io::Write>, _) = match &file {
            Some(f) => {
                let (tmp, path) = committed::temp_beside(f)?;
                (Box::new(std::io::BufWriter::new(tmp)), Some((path, f.clone())))
            }
            None => (Box::new(std::io::stdout().lock()), None),
        };
        let io = |e: std::io::Error| crate::Error::Other(format!("writing the archive: {e}"));
        let mut w = crate::archive::ArchiveWriter::new(out, mtime, seal.as_ref()).map_err(io)?;
        let read = crate::packs::read_verified(&local, &contents, |e| {
            w.append_raw(&e.raw_path, &e.json).map(|_| ()).map_err(|e| format!("writing the archive: {e}"))
        });
        if let Err(reason) = read {
            return Ok(Err(reason));
        }
        let (_, written) = w.finish().map_err(io)?;
        if let Some((path, f)) = persist {
            path.persist(&f).map_err(|e| crate::Error::io(&f, e.error))?;
        }
        Ok(Ok(written.size))
    })
    .await
    .map_err(|e| crate::Error::Other(format!("building the archive: {e}")))??;
    written.map_err(corrupt)
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

/// The backups holding `namespace` (not Failed), newest first: the workspace's history.
pub fn history<'a>(backups: &'a [Backup], namespace: &str) -> Vec<&'a Backup> {
    let mut out: Vec<&Backup> = backups
        .iter()
        .filter(|b| b.status.phase != crate::model::Phase::Failed && b.status.namespaces.iter().any(|n| n == namespace))
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.metadata.creation_timestamp));
    out
}

/// The newest backup holding `namespace` taken at or before `at`: the workspace as it was then.
pub fn at<'a>(backups: &'a [Backup], namespace: &str, at: Timestamp) -> Option<&'a Backup> {
    history(backups, namespace).into_iter().find(|b| b.metadata.creation_timestamp.is_some_and(|t| t <= at))
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
    fn a_point_in_time_picks_the_newest_backup_before_it() {
        let mut failed = backup("failed", "2026-12-01T09:30:00Z", &["shop"]);
        failed.status.phase = Phase::Failed;
        let list = vec![
            backup("b9", "2026-12-01T09:00:00Z", &["shop"]),
            failed,
            backup("b10", "2026-12-01T10:00:00Z", &["shop"]),
            backup("other", "2026-12-01T09:50:00Z", &["bank"]),
            backup("b11", "2026-12-01T11:00:00Z", &["shop", "bank"]),
        ];
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let names = |v: Vec<&Backup>| v.iter().map(|b| b.metadata.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(history(&list, "shop")), ["b11", "b10", "b9"]);
        assert_eq!(at(&list, "shop", t("2026-12-01T10:00Z")).unwrap().metadata.name, "b10");
        assert_eq!(at(&list, "shop", t("2026-12-01T09:59:59Z")).unwrap().metadata.name, "b9");
        assert_eq!(at(&list, "bank", t("2026-12-01T10:30:00Z")).unwrap().metadata.name, "other");
        assert!(at(&list, "shop", t("2026-12-01T08:00:00Z")).is_none());
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
