//! The commit protocol every kind of backup follows (objects under `backups/`, etcd under `etcd/`):
//!
//! - a run uploads its data under a key unique to the run, then puts `metadata.json` only if
//!   absent — that put is the commit, and exactly one run commits a name;
//! - after committing, the rest of the backup's directory (leftovers of interrupted runs) goes;
//! - a delete removes `metadata.json` first, so an interrupted delete leaves an uncommitted
//!   leftover, never a listed backup without its data.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::store::Store;
use crate::{Error, Result};

/// The name of the commit document in a backup's directory.
pub const METADATA_FILE: &str = "metadata.json";

/// Checks the store holds exactly `size` bytes at `data`; removes `data` when it holds another size.
pub async fn check_uploaded(store: &Store, data: &Path, size: u64) -> Result<()> {
    match store.objects().head(data).await {
        Ok(meta) if meta.size == size => Ok(()),
        Ok(meta) => {
            store.remove_quietly(data).await;
            Err(Error::Other(format!(
                "upload of {data} is incomplete: the store holds {} bytes, {} were written",
                meta.size, size
            )))
        }
        Err(e) => Err(store.error(e)),
    }
}

/// Commits: puts `body` at `<dir>/metadata.json` if absent, then removes every other file of `dir`
/// but `keep` (this run's data files). If the name is already committed, removes `keep` and
/// returns `BackupExists`.
///
/// A put whose answer was lost may have been stored all the same, and the client's retry of it
/// then finds the name taken. So when the put fails, or finds a document there, the document is
/// read back: this run's own bytes mean it committed. Only another run's document removes `keep`;
/// when it cannot be read, `keep` stays ([`Error::CommitUnknown`]).
pub async fn commit(store: &Store, dir: &Path, name: &str, body: Bytes, keep: &[Path]) -> Result<()> {
    let meta = dir.clone().join(METADATA_FILE);
    let unknown = |reason: String| Error::CommitUnknown { name: name.into(), location: store.url().into(), reason };
    let committed = match store.put_if_absent(&meta, body.clone()).await {
        Ok(true) => true,
        Ok(false) => match store.get_optional(&meta).await {
            Ok(Some(stored)) => stored == body,
            Ok(None) => false,
            Err(e) => return Err(unknown(format!("the name was taken, and reading it back failed: {e}"))),
        },
        Err(put) => match store.get_optional(&meta).await {
            Ok(Some(stored)) if stored == body => true,
            Ok(Some(_)) => false,
            Ok(None) => return Err(put),
            Err(e) => return Err(unknown(format!("{put}; reading it back: {e}"))),
        },
    };
    if !committed {
        for data in keep {
            store.remove_quietly(data).await;
        }
        return Err(Error::BackupExists { name: name.into(), location: store.url().into() });
    }
    store.remove_staging_files(dir);
    let Ok(listed) = store.objects().list(Some(dir)).try_collect::<Vec<_>>().await else { return Ok(()) };
    for m in listed {
        let file = m.location.filename().unwrap_or_default();
        if file != METADATA_FILE && !keep.iter().any(|k| k.filename() == Some(file)) {
            store.remove_quietly(&m.location).await;
        }
    }
    Ok(())
}

/// What a delete removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// A committed backup was removed (false: only an interrupted run's leftovers).
    pub committed: bool,
    pub files: usize,
    /// For a backup that shared packs: what garbage collection did next, or why it failed.
    pub collected: Option<std::result::Result<crate::packs::Collected, String>>,
}

/// Deletes the backup in `dir`: `metadata.json` first, then every other file (and the staging
/// files of interrupted uploads to a local directory). `Ok(None)` when there was nothing at all.
pub async fn delete(store: &Store, dir: &Path) -> Result<Option<Deleted>> {
    let meta = dir.clone().join(METADATA_FILE);
    let committed = match store.objects().head(&meta).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => return Err(store.error(e)),
    };
    if committed {
        match store.objects().delete(&meta).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store.error(e)),
        }
    }
    let files: Vec<Path> =
        store.objects().list(Some(dir)).map_ok(|m| m.location).try_collect().await.map_err(|e| store.error(e))?;
    let n = files.len();
    let mut stream = store.objects().delete_stream(futures::stream::iter(files.into_iter().map(Ok)).boxed());
    while let Some(r) = stream.next().await {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store.error(e)),
        }
    }
    let staging = store.remove_staging_files(dir);
    if !committed && n + staging == 0 {
        return Ok(None);
    }
    Ok(Some(Deleted { committed, files: n + staging + usize::from(committed), collected: None }))
}
