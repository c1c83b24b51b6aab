//! The committed backups of each namespace, newest first, in memory, so an admission answer never
//! waits on the object store. Refreshed from the location periodically, after each backup this
//! process makes, and by the restore worker right before it picks a backup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use jiff::Timestamp;
use kubectl_backup_core::catalog;
use kubectl_backup_core::store::Store;

/// `(creation time, backup name)`, newest first.
type Backups = Vec<(Timestamp, String)>;

#[derive(Default)]
pub struct Index {
    by_namespace: ArcSwap<BTreeMap<String, Backups>>,
    loaded: AtomicBool,
    backups: AtomicU64,
}

impl Index {
    /// The newest committed backup containing `namespace`.
    pub fn newest(&self, namespace: &str) -> Option<String> {
        self.by_namespace.load().get(namespace).and_then(|b| b.first()).map(|(_, n)| n.clone())
    }

    /// The newest committed backup containing `namespace` that was started before `at`: what a
    /// workspace created at `at` is restored from (never a backup of the new workspace itself).
    pub fn newest_before(&self, namespace: &str, at: Timestamp) -> Option<String> {
        let map = self.by_namespace.load();
        map.get(namespace)?.iter().find(|(t, _)| *t < at).map(|(_, n)| n.clone())
    }

    /// True once the index has been loaded at least once.
    pub fn ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn backups(&self) -> u64 {
        self.backups.load(Ordering::Relaxed)
    }

    /// Replaces the index with these `(namespace, created, backup)` rows.
    pub fn replace(&self, rows: impl IntoIterator<Item = (String, Timestamp, String)>) {
        let mut map: BTreeMap<String, Backups> = BTreeMap::new();
        for (ns, t, b) in rows {
            map.entry(ns).or_default().push((t, b));
        }
        for v in map.values_mut() {
            v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        }
        self.by_namespace.store(Arc::new(map));
        self.loaded.store(true, Ordering::Release);
    }

    /// Reloads from the location. On error the previous index stays.
    pub async fn refresh(&self, store: &Store) -> kubectl_backup_core::Result<()> {
        self.load(&catalog::list(store).await?);
        Ok(())
    }

    /// Replaces the index with what `listing` (the location, just listed) holds.
    pub fn load(&self, listing: &catalog::Listing) {
        self.backups.store(listing.backups.len() as u64, Ordering::Relaxed);
        let rows = listing
            .backups
            .iter()
            .filter(|b| b.status.phase != kubectl_backup_core::model::Phase::Failed)
            .flat_map(|b| {
                let t = b.metadata.creation_timestamp.unwrap_or(Timestamp::UNIX_EPOCH);
                b.status.namespaces.iter().map(move |ns| (ns.clone(), t, b.metadata.name.clone()))
            })
            .collect::<Vec<_>>();
        self.replace(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_backup_before_a_time_wins() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let i = Index::default();
        i.replace([
            ("shop".into(), t("2026-12-01T10:00:00Z"), "old".into()),
            ("shop".into(), t("2026-12-01T11:00:00Z"), "new".into()),
            ("shop".into(), t("2026-12-01T12:00:00Z"), "after".into()),
            ("bank".into(), t("2026-12-01T09:00:00Z"), "b".into()),
        ]);
        assert_eq!(i.newest("shop").as_deref(), Some("after"));
        assert_eq!(i.newest_before("shop", t("2026-12-01T11:30:00Z")).as_deref(), Some("new"));
        assert_eq!(i.newest_before("shop", t("2026-12-01T09:30:00Z")), None);
        assert_eq!(i.newest_before("nope", t("2026-12-01T11:30:00Z")), None);
    }
}
