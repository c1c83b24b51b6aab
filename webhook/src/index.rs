//! The newest backup per namespace, in memory, so an admission answer never waits on the object
//! store. Refreshed from the location periodically and after each backup this process makes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use kubectl_backup_core::catalog;
use kubectl_backup_core::store::Store;

#[derive(Default)]
pub struct Index {
    newest: ArcSwap<BTreeMap<String, String>>,
    loaded: AtomicBool,
    backups: AtomicU64,
}

impl Index {
    /// The newest committed backup containing `namespace`.
    pub fn newest(&self, namespace: &str) -> Option<String> {
        self.newest.load().get(namespace).cloned()
    }

    /// True once the index has been loaded at least once.
    pub fn ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn backups(&self) -> u64 {
        self.backups.load(Ordering::Relaxed)
    }

    pub fn replace(&self, map: BTreeMap<String, String>) {
        self.newest.store(Arc::new(map));
        self.loaded.store(true, Ordering::Release);
    }

    /// Reloads from the location. On error the previous index stays.
    pub async fn refresh(&self, store: &Store) -> kubectl_backup_core::Result<()> {
        let listing = catalog::list(store).await?;
        self.backups.store(listing.backups.len() as u64, Ordering::Relaxed);
        let map =
            catalog::newest_per_namespace(&listing.backups).into_iter().map(|(ns, b)| (ns, b.metadata.name)).collect();
        self.replace(map);
        Ok(())
    }
}
