//! The committed etcd backups in a location: the etcd kind of [`committed`] (list, describe,
//! delete, download, expired). An etcd backup exists when its `metadata.json` does; its data file
//! is never handed out without checking its size and SHA-256 against the metadata first.

use std::path::Path as FsPath;

use jiff::Timestamp;

use super::model::{EtcdBackup, EtcdBackupSpec, EtcdBackupStatus, EtcdMetadata, FORMAT_VERSION};
use crate::committed::{self, DataFile, Kind};
use crate::store::Store;
use crate::{Error, Result};

pub use crate::committed::{Deleted, Destination, Inspect};

/// etcd backups: `etcd/<name>/` with a snapshot, a keys zip or a keys JSON document.
pub struct Etcd;

impl Kind for Etcd {
    const ROOT: &'static str = "etcd";
    const FORMAT_VERSION: u32 = FORMAT_VERSION;
    const WHAT: &'static str = "etcd backup name";
    const COMMAND: &'static str = " etcd";
    type Head = EtcdMetadata;
    type Metadata = EtcdMetadata;
    type Spec = EtcdBackupSpec;
    type Status = EtcdBackupStatus;
    fn backup(head: EtcdMetadata) -> EtcdBackup {
        head.backup
    }
}

committed::commit_document!(EtcdMetadata);

/// What a location holds under `etcd/`.
pub type EtcdListing = committed::Listing<EtcdBackup>;

/// Lists committed etcd backups, reading their metadata concurrently.
pub async fn list(store: &Store) -> Result<EtcdListing> {
    committed::list::<Etcd>(store).await
}

pub(crate) fn corrupt(store: &Store, name: &str, reason: String) -> Error {
    committed::corrupt(store, name, reason)
}

/// One etcd backup's document.
pub async fn describe(store: &Store, name: &str) -> Result<EtcdBackup> {
    Ok(metadata(store, name).await?.backup)
}

/// One etcd backup's stored metadata; a clear error when there is no such backup.
pub async fn metadata(store: &Store, name: &str) -> Result<EtcdMetadata> {
    committed::metadata::<Etcd>(store, name).await
}

/// Deletes an etcd backup: the metadata first, then every other file under its directory.
pub async fn delete(store: &Store, name: &str) -> Result<Deleted> {
    committed::delete::<Etcd>(store, name).await
}

/// Committed etcd backups whose expiration has passed.
pub fn expired(backups: &[EtcdBackup], now: Timestamp) -> Vec<&EtcdBackup> {
    backups.iter().filter(|b| b.is_expired(now)).collect()
}

/// Downloads an etcd backup's data file (snapshot, zip or JSON), verifying its size and SHA-256.
pub async fn download(store: &Store, name: &str, dest: Destination<'_>) -> Result<u64> {
    committed::download::<Etcd>(store, name, dest).await
}

fn data_of<'a>(store: &Store, backup: &'a EtcdBackup) -> Result<DataFile<'a>> {
    committed::data_file(backup.status.archive.as_ref()).map_err(|reason| corrupt(store, backup.name(), reason))
}

/// Writes the data file of `backup` to `file` through a temporary file beside it, renamed once
/// the size, the SHA-256 and `inspect` agree.
pub(crate) async fn write_verified(
    store: &Store,
    backup: &EtcdBackup,
    file: &FsPath,
    inspect: &mut (dyn Inspect + Send),
) -> Result<u64> {
    let name = backup.name();
    let data = data_of(store, backup)?;
    committed::write_plaintext(store, name, &committed::data_path::<Etcd>(name, data.key), data, file, inspect).await
}

/// Downloads the data file of `backup` into an anonymous temporary file, verified, and rewinds it.
pub(crate) async fn fetch(store: &Store, backup: &EtcdBackup) -> Result<std::fs::File> {
    let name = backup.name();
    let data = data_of(store, backup)?;
    committed::fetch_plaintext(store, name, &committed::data_path::<Etcd>(name, data.key), data).await
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
