//! etcd backups: snapshot, keys and keys-json, stored under `<prefix>/etcd/<name>/` with a metadata
//! document written last (the same commit rule as object backups).
//!
//! Layout under the location: `etcd/<name>/<type>-<run>.<ext>` (one data file, its key unique per
//! run) and `etcd/<name>/metadata.json` (the [`EtcdMetadata`], put only if absent). Two runs racing
//! for one name never write the same object and exactly one commits; a run that stops early leaves
//! files without metadata, which are never listed and are removed by `delete` or by the next
//! successful run of that name.
//!
//! Each module does one step:
//! - [`connect`]: TLS files and endpoints checked, the member with the highest revision chosen
//! - [`backup`]: the snapshot stream or paged key ranges -> multipart upload -> metadata (the commit)
//! - [`snapshot`]: the snapshot stream's SHA-256 trailer, checked while streaming
//! - [`keys`]: the `keys` (zip) and `keys-json` formats, written and read as streams
//! - [`escape`]: keys as safe zip entry names and back
//! - [`catalog`]: list / describe / delete / download committed etcd backups
//! - [`restore`]: a snapshot into a directory for `etcdutl snapshot restore`, or keys into an etcd
//! - [`model`]: the `EtcdBackup`, `EtcdBackupList`, `EtcdRestore` and `EtcdSource` documents

pub mod backup;
pub mod catalog;
pub mod connect;
pub mod escape;
pub mod keys;
pub mod model;
pub mod restore;
pub mod snapshot;

pub use backup::{run, run_with};
pub use catalog::{EtcdListing, delete, describe, download, expired, list, metadata};
pub use model::{
    EtcdBackup, EtcdBackupList, EtcdBackupSpec, EtcdBackupStatus, EtcdBackupType, EtcdMetadata, EtcdRestore,
    EtcdRestoreCounts, EtcdRestoreSpec, EtcdRestoreStatus, EtcdSource,
};
pub use restore::{restore_keys, restore_snapshot};

pub use crate::commit::METADATA_FILE;
/// The file `restore --data-dir` writes.
pub const SNAPSHOT_FILE: &str = "snapshot.db";
/// What the user-facing messages call a name.
pub(crate) const WHAT: &str = <catalog::Etcd as crate::committed::Kind>::WHAT;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::Destination;
    use crate::progress::Quiet;
    use crate::store::Store;

    fn send<T: Send>(_: T) {}

    /// The scheduler and the webhook run these on tokio tasks: their futures must be `Send`.
    #[test]
    fn engine_futures_are_send() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_url(&format!("file://{}", dir.path().display()), &Default::default()).unwrap();
        let source = EtcdSource::default();
        let quiet: Arc<dyn crate::progress::Observer> = Arc::new(Quiet);
        send(run(&source, &store, "n", EtcdBackupType::Snapshot, None, quiet.clone()));
        send(list(&store));
        send(describe(&store, "n"));
        send(delete(&store, "n"));
        send(download(&store, "n", Destination::Stdout));
        send(restore_snapshot(&store, "n", std::path::Path::new("/tmp/x"), false, quiet.clone()));
        send(restore_keys(&store, "n", &source, true, quiet));
    }
}
