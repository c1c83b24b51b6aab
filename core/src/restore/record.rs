//! The history of restores, kept in the location beside the backups: `restores/<name>/restore.json`
//! (the document `kubectl backup restore -o json` prints) and `restores/<name>/log.txt`.
//! `kubectl backup restore list|describe` and `kubectl backup logs restore/NAME` read them.
//! Recording is best effort: a restore into the cluster has already happened whether or not its
//! record could be written (e.g. to a ReadOnly location, which is never written).

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::input::validate_name;
use crate::model::Restore;
use crate::runlog::RunLog;
use crate::store::{MAX_DOCUMENT_BYTES, Store};
use crate::{Error, Result};

pub const ROOT: &str = "restores";
pub const RECORD_FILE: &str = "restore.json";

/// The directory of restore `name`.
pub fn dir(name: &str) -> Path {
    Path::from(format!("{ROOT}/{name}"))
}

/// Stores the record of `restore` and its log (ended with the outcome).
pub async fn save(store: &Store, restore: &Restore, log: &RunLog) -> Result<()> {
    let s = &restore.status;
    for w in &s.warnings {
        log.line(format_args!("warning: {w}"));
    }
    for e in &s.errors {
        log.line(format_args!("error: {e}"));
    }
    log.line(format_args!(
        "restore {} of backup {} {}: {}",
        restore.metadata.name,
        restore.spec.backup_name,
        s.phase,
        s.counts.summary()
    ));
    let name = &restore.metadata.name;
    validate_name("restore name", name)?;
    let body = serde_json::to_vec_pretty(restore).map_err(|e| Error::Other(format!("encoding restore {name}: {e}")))?;
    let path = dir(name).join(RECORD_FILE);
    store.objects().put(&path, Bytes::from(body).into()).await.map_err(|e| store.error(e))?;
    log.save(store, &dir(name)).await
}

/// The record of restore `name`, if the location has it.
pub async fn read(store: &Store, name: &str) -> Result<Option<Restore>> {
    validate_name("restore name", name)?;
    let path = dir(name).join(RECORD_FILE);
    let got = match store.objects().get(&path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store.error(e)),
    };
    if got.meta.size > MAX_DOCUMENT_BYTES {
        return Err(Error::Other(format!("{path} in {} is larger than a restore record can be", store.url())));
    }
    let bytes = got.bytes().await.map_err(|e| store.error(e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Other(format!("{path} in {} is not a restore record: {e}", store.url())))
}

/// Every restore recorded in the location, oldest first. Records that cannot be read are
/// returned by name with the reason.
pub async fn list(store: &Store) -> Result<(Vec<Restore>, Vec<(String, String)>)> {
    let listed = store.objects().list_with_delimiter(Some(&Path::from(ROOT))).await.map_err(|e| store.error(e))?;
    let names: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    let mut reads = futures::stream::iter(names.into_iter().map(|n| async move { (n.clone(), read(store, &n).await) }))
        .buffer_unordered(16);
    while let Some((name, got)) = reads.next().await {
        match got {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {}
            Err(e) => unreadable.push((name, e.to_string())),
        }
    }
    records.sort_by_key(|r| (r.status.timing.start_timestamp, r.metadata.name.clone()));
    Ok((records, unreadable))
}
