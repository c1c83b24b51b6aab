//! Continuous backup: every change to the state of a non-ephemeral workspace is backed up. One
//! watch per resource type (cluster-wide) notes which namespaces changed; when a namespace has been
//! quiet for `--debounce`, it is backed up as `<namespace>-<YYYYMMDDhhmmss>` (incrementally by
//! default: only what changed is stored), and its continuous backups are pruned to a time series
//! (`--retention`: every change for 24 h, hourly for 7 days, daily for 30 days), at most
//! `--keep-workspace-backups` of them when that is set.
//!
//! Status-only updates are not changes (a fingerprint of each object without status and
//! server-owned metadata is compared), and objects controllers recreate on restore (Pods,
//! ReplicaSets, Endpoints, ...) are not watched.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;

use crate::metrics::SourceLabel;
use kube::runtime::watcher::{self, Event};
use kubectl_backup_core::collect::{self, Resource};
use kubectl_backup_core::filter::is_ephemeral;
use kubectl_backup_core::input::timestamped_name;
use kubectl_backup_core::model::{BackupSpec, Filters};
use kubectl_backup_core::{EPHEMERAL_LABEL, catalog};

use super::{Context, ObjectRun};

/// Marks continuous backups (in `spec.schedule`), so pruning never touches other backups.
pub const CONTINUOUS: &str = "continuous";

/// Resource types whose changes are controllers at work, not user state.
const IGNORED: &[&str] = &[
    "pods",
    "replicasets.apps",
    "controllerrevisions.apps",
    "endpoints",
    "endpointslices.discovery.k8s.io",
    "leases.coordination.k8s.io",
    "events",
    "events.events.k8s.io",
];

pub struct Continuous {
    pub ctx: Arc<Context>,
    pub debounce: Duration,
    /// At most this many per workspace (0: no limit).
    pub keep: usize,
    pub retention: kubectl_backup_core::retention::Retention,
    pub incremental: bool,
    /// Include the workspace's volume data (`--continuous-include-volumes`).
    pub include_volumes: bool,
}

#[derive(Default)]
struct State {
    /// Namespace -> time of its last change not yet backed up.
    dirty: HashMap<String, Instant>,
    /// Namespaces being backed up now.
    running: HashSet<String>,
}

impl Continuous {
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.ctx.location.ensure_writable() {
            tracing::warn!(error = %e, "continuous backup is off");
            return;
        }
        let discovered = match collect::discover(&self.ctx.cluster.client, &self.ctx.cluster.throttle).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "continuous backup is off: discovery failed");
                return;
            }
        };
        let state = Arc::new(Mutex::new(State::default()));
        let mut watched = 0;
        for r in discovered.resources.into_iter().filter(watchable) {
            watched += 1;
            tokio::spawn(watch(self.ctx.clone(), r, state.clone()));
        }
        tracing::info!(resource_types = watched, debounce = ?self.debounce, retention = %self.retention, keep = self.keep, incremental = self.incremental, "continuous backup watching workspaces");
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let due: Vec<String> = {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                let due: Vec<String> = s
                    .dirty
                    .iter()
                    .filter(|(ns, at)| at.elapsed() >= self.debounce && !s.running.contains(*ns))
                    .map(|(ns, _)| ns.clone())
                    .collect();
                for ns in &due {
                    s.dirty.remove(ns);
                    s.running.insert(ns.clone());
                }
                due
            };
            for ns in due {
                let (me, state) = (self.clone(), state.clone());
                tokio::spawn(async move {
                    me.backup(&ns).await;
                    state.lock().unwrap_or_else(|p| p.into_inner()).running.remove(&ns);
                });
            }
        }
    }

    /// Whether `ns` is a workspace whose state is backed up.
    async fn is_workspace(&self, ns: &str) -> bool {
        if self.ctx.policy.excluded.contains(ns) {
            return false;
        }
        let api: Api<Namespace> = Api::all(self.ctx.cluster.client.clone());
        match api.get_opt(ns).await {
            Ok(Some(n)) => {
                n.metadata.deletion_timestamp.is_none()
                    && !is_ephemeral(n.labels())
                    && !self.ctx.policy.ephemeral.iter().any(|p| p.matches(ns))
                    && self.ctx.policy.selector.as_ref().is_none_or(|s| s.matches(n.labels()))
            }
            _ => false,
        }
    }

    async fn backup(&self, ns: &str) {
        if !self.is_workspace(ns).await {
            return;
        }
        let prefix: String = ns.chars().take(48).collect::<String>().trim_end_matches('-').to_string();
        let name = timestamped_name(&prefix, Timestamp::now());
        let spec = BackupSpec {
            filters: Filters { included_namespaces: vec![ns.to_string()], ..Default::default() },
            ttl: None,
            storage_location: Some(self.ctx.location.display()),
            schedule: Some(CONTINUOUS.into()),
            incremental: self.incremental,
            include_volumes: self.include_volumes,
            ..Default::default()
        };
        let reference = Context::namespace_reference(ns);
        match self
            .ctx
            .backup(ObjectRun {
                location: &self.ctx.location,
                name: &name,
                spec,
                trigger: CONTINUOUS,
                source: Some(&SourceLabel::workspace(ns)),
                reference: &reference,
                observer: None,
                requester: None,
            })
            .await
        {
            Ok(_) => self.prune(ns).await,
            Err(e) => tracing::warn!(namespace = %ns, backup = %name, error = %e, "continuous backup failed"),
        }
    }

    /// Prunes the continuous backups of `ns` to the retention's time series (and to `keep`).
    async fn prune(&self, ns: &str) {
        let store = &self.ctx.location.store;
        let Ok(listing) = catalog::list(store).await else { return };
        // Newest first, as listed.
        let mine: Vec<_> = listing
            .backups
            .iter()
            .filter(|b| b.spec.schedule.as_deref() == Some(CONTINUOUS) && b.spec.filters.included_namespaces == [ns])
            .collect();
        let times: Vec<Timestamp> =
            mine.iter().map(|b| b.metadata.creation_timestamp.unwrap_or(Timestamp::UNIX_EPOCH)).collect();
        let kept = self.retention.keep(&times, Timestamp::now());
        let limit = if self.keep == 0 { usize::MAX } else { self.keep };
        let surplus = mine.iter().enumerate().filter(|(i, _)| !kept.contains(i) || *i >= limit).map(|(_, b)| b);
        for old in surplus {
            match catalog::delete(store, &old.metadata.name).await {
                Ok(_) => {
                    tracing::info!(namespace = %ns, backup = %old.metadata.name, "pruned an old continuous backup")
                }
                Err(e) => {
                    tracing::warn!(backup = %old.metadata.name, error = %e, "could not prune a continuous backup")
                }
            }
        }
    }
}

fn watchable(r: &Resource) -> bool {
    r.namespaced
        && r.supports("list")
        && r.supports("watch")
        && collect::never_backed_up(&r.key).is_none()
        && !IGNORED.contains(&r.key.as_str())
}

/// What counts as a change: the object without status and server-owned metadata.
fn fingerprint(obj: &DynamicObject) -> u64 {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for k in ["resourceVersion", "managedFields", "generation", "uid", "creationTimestamp"] {
                m.remove(k);
            }
            if let Some(l) = m.get_mut("labels").and_then(|l| l.as_object_mut()) {
                l.remove(EPHEMERAL_LABEL);
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

async fn watch(ctx: Arc<Context>, r: Resource, state: Arc<Mutex<State>>) {
    let api: Api<DynamicObject> = Api::all_with(ctx.cluster.client.clone(), &r.ar);
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut initialized = false;
    // The runtime's backoff between failed watch attempts (exponential, jittered).
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mark = |ns: &str| {
        state.lock().unwrap_or_else(|p| p.into_inner()).dirty.insert(ns.to_string(), Instant::now());
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => {}
            Ok(Event::InitApply(obj)) | Ok(Event::Apply(obj)) => {
                let Some(ns) = obj.namespace() else { continue };
                let key = (ns.clone(), obj.name_any());
                let fp = fingerprint(&obj);
                let before = seen.insert(key, fp);
                if initialized && before != Some(fp) {
                    mark(&ns);
                }
            }
            Ok(Event::InitDone) => initialized = true,
            Ok(Event::Delete(obj)) => {
                if let Some(ns) = obj.namespace() {
                    seen.remove(&(ns.clone(), obj.name_any()));
                    mark(&ns);
                }
            }
            Err(e) => tracing::debug!(resource = %r.key, error = %e, "watch error; the watcher retries with backoff"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn status_and_server_fields_are_not_changes() {
        let a = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n", "resourceVersion": "1"}, "data": {"k": "v"}}),
        );
        let b = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n", "resourceVersion": "2", "managedFields": []}, "data": {"k": "v"}, "status": {"x": 1}}),
        );
        let c = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n", "resourceVersion": "3"}, "data": {"k": "changed"}}),
        );
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
