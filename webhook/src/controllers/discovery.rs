//! The discovery the controller's backups share ([`SharedDiscovery`]): each continuous backup of a
//! workspace would otherwise ask the API server for every API group again (about 25 requests on
//! 1.20, more than half of what a continuous backup taken from the watches asks). It stays good
//! while nothing changes what the server serves: this task watches the metadata of
//! CustomResourceDefinitions and APIServices, and any event of either is a change. While either
//! watch is not running (before its first LIST is done, after a failure until it has listed again)
//! the discovery is not reused.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubectl_backup_core::collect::SharedDiscovery;

use super::Context;

/// How long one discovery may be reused at most, changes seen or not.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

pub async fn run(ctx: Arc<Context>) {
    let Some(shared) = ctx.cluster.discovery.clone() else { return };
    let client = ctx.cluster.client.clone();
    let crds =
        watcher::watcher(Api::<PartialObjectMeta<CustomResourceDefinition>>::all(client.clone()), Default::default())
            .default_backoff()
            .map(|e| (0, e.map(|ev| state(&ev))))
            .boxed();
    let apiservices = watcher::watcher(Api::<PartialObjectMeta<APIService>>::all(client), Default::default())
        .default_backoff()
        .map(|e| (1, e.map(|ev| state(&ev))))
        .boxed();
    let mut events = futures::stream::select(crds, apiservices);
    let mut listed = [false, false];
    shared.watching(false);
    while let Some((i, ev)) = events.next().await {
        match ev {
            Ok(Some(done)) => {
                listed[i] = done;
                shared.watching(listed.iter().all(|l| *l));
            }
            Ok(None) => shared.changed(),
            Err(e) => {
                listed[i] = false;
                shared.watching(false);
                tracing::debug!(error = %e, "a watch of what the server serves failed; backups discover the API themselves until it has listed again");
            }
        }
    }
    shared.watching(false);
}

/// `Some(true)`: the watch has listed; `Some(false)`: it lists (again); `None`: an object changed.
fn state<K>(ev: &Event<K>) -> Option<bool> {
    match ev {
        Event::InitDone => Some(true),
        Event::Init => Some(false),
        Event::InitApply(_) | Event::Apply(_) | Event::Delete(_) => None,
    }
}

/// The shared discovery a controller's cluster starts with.
pub fn shared() -> Arc<SharedDiscovery> {
    Arc::new(SharedDiscovery::new(MAX_AGE))
}
