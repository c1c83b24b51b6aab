//! Deletes backups past their expiration, every `--gc-interval`, in every ReadWrite location (the
//! webhook's own and each BackupLocation). ReadOnly locations are never touched.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kubectl_backup_core::crd::{AccessMode, BackupLocation};
use kubectl_backup_core::locations::{self, Resolved};
use kubectl_backup_core::volume::snapshot;
use kubectl_backup_core::{catalog, etcd};

use super::Context;

pub async fn run(ctx: Arc<Context>, every: Duration) {
    loop {
        let deleted = sweep(&ctx).await;
        if deleted > 0 {
            tracing::info!(deleted, "expired backups deleted");
        }
        tokio::time::sleep(every).await;
    }
}

/// Every location this controller knows, once each.
async fn locations(ctx: &Context) -> Vec<Resolved> {
    let mut out = vec![ctx.location.clone()];
    let api: Api<BackupLocation> = Api::namespaced(ctx.cluster.client.clone(), &ctx.namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            for bl in list.items {
                match locations::open(&ctx.cluster.client, &ctx.namespace, &bl, &Default::default()).await {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::warn!(error = %e, "cannot open a BackupLocation for expiry"),
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "no BackupLocations to sweep"),
    }
    let mut seen = BTreeSet::new();
    // A location is ReadOnly if any registration of its URL says so.
    let read_only: BTreeSet<String> =
        out.iter().filter(|r| r.access == AccessMode::ReadOnly).map(|r| r.store.url().to_string()).collect();
    out.retain(|r| !read_only.contains(r.store.url()) && seen.insert(r.store.url().to_string()));
    out
}

/// One pass. Returns how many backups were deleted.
pub async fn sweep(ctx: &Context) -> u64 {
    let now = Timestamp::now();
    let mut deleted = 0;
    for loc in locations(ctx).await {
        match catalog::list(&loc.store).await {
            Ok(listing) => {
                for b in catalog::expired(&listing.backups, now) {
                    // Its CSI snapshots first; one that cannot be deleted keeps the backup (next pass).
                    // Not waited for: the CSI snapshotter finishes on its own, and a sweep never stalls.
                    let snapshots = snapshot::of_backup(b);
                    match snapshot::delete_all(&ctx.cluster, &b.metadata.name, &snapshots, None).await {
                        Ok(done) => {
                            for (s, d) in snapshots.iter().zip(done) {
                                if let snapshot::Deleted::NotHere(why) = d {
                                    tracing::info!(backup = %b.metadata.name, handle = %s.handle, %why, "CSI snapshot of an expired backup left in the storage system");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(backup = %b.metadata.name, error = %e, "could not delete an expired backup's CSI snapshots; kept");
                            continue;
                        }
                    }
                    match catalog::delete(&loc.store, &b.metadata.name).await {
                        Ok(_) => {
                            deleted += 1;
                            ctx.metrics.expired_deleted.inc();
                            tracing::info!(backup = %b.metadata.name, location = %loc.display(), "deleted expired backup");
                        }
                        Err(e) => {
                            tracing::warn!(backup = %b.metadata.name, error = %e, "could not delete an expired backup")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(location = %loc.display(), error = %e, "cannot list backups for expiry"),
        }
        match etcd::list(&loc.store).await {
            Ok(listing) => {
                for b in etcd::expired(&listing.backups, now) {
                    if etcd::delete(&loc.store, &b.metadata.name).await.is_ok() {
                        deleted += 1;
                        ctx.metrics.expired_deleted.inc();
                        tracing::info!(etcd_backup = %b.metadata.name, location = %loc.display(), "deleted expired etcd backup");
                    }
                }
            }
            Err(e) => tracing::debug!(location = %loc.display(), error = %e, "cannot list etcd backups for expiry"),
        }
    }
    deleted
}
