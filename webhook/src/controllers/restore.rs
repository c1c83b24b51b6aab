//! The restore worker: restores workspaces the webhook marked with `restore-from`, and catches up on
//! workspaces created while the webhook was down (its `failurePolicy: Ignore` lets them through
//! unmarked).
//!
//! State lives in the cluster: the `restore-status` annotation on each workspace (InProgress, then
//! Completed / PartiallyFailed / Failed) — a restart resumes an InProgress restore — and a
//! ConfigMap in the webhook's namespace recording when the worker last ran, so catch-up looks only
//! at workspaces created since.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};
use kubectl_backup_core::EPHEMERAL_LABEL;
use kubectl_backup_core::input::timestamped_name;
use kubectl_backup_core::model::{ExistingPolicy, Filters, Phase, Restore, RestoreSpec};
use kubectl_backup_core::progress::Quiet;
use kubectl_backup_core::restore;

use super::Context;
use crate::admission::{Decision, RESTORE_FROM_ANNOTATION, RESTORE_STATUS_ANNOTATION, decide};
use crate::metrics::ResultLabel;

/// The ConfigMap (in the webhook's namespace) holding `lastSeen`.
pub const STATE_CONFIGMAP: &str = "backup-webhook-state";
/// How often `lastSeen` is written.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Namespaces created this long before `lastSeen` are reconsidered too (clock skew, heartbeat gap).
const GRACE: Duration = Duration::from_secs(60);

/// The objects a task of the worker is handling (namespaces by name; custom resources by namespace
/// and name): events for them meanwhile are dropped.
type InFlight<K> = Arc<Mutex<HashSet<K>>>;

pub struct RestoreWorker {
    pub ctx: Arc<Context>,
}

impl RestoreWorker {
    /// Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        // Catch-up decides from the index of backups: never before it is loaded.
        while !self.ctx.index.ready() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let cutoff = self.catch_up_cutoff().await;
        tracing::info!(%cutoff, "restore worker started; catching up on workspaces created since");
        let me = self.clone();
        tokio::spawn(async move { me.heartbeat().await });
        for (group, plural) in self.ctx.policy.workspace_resources.clone() {
            let me = self.clone();
            tokio::spawn(async move { me.watch_workspace_resource(group, plural, cutoff).await });
        }

        let in_flight: InFlight<String> = Arc::default();
        let api: Api<Namespace> = Api::all(self.ctx.cluster.client.clone());
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(next) = events.next().await {
            let ns = match next {
                Ok(ns) => ns,
                Err(e) => {
                    tracing::warn!(error = %e, "namespace watch error; retrying");
                    continue;
                }
            };
            let name = ns.name_any();
            if !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone()) {
                continue; // already being handled
            }
            let me = self.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                me.handle(ns, cutoff).await;
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            });
        }
    }

    async fn handle(&self, ns: Namespace, cutoff: Timestamp) {
        let name = ns.name_any();
        if ns.metadata.deletion_timestamp.is_some() || self.ctx.policy.excluded.contains(&name) {
            return;
        }
        // A watch event can be older than what an earlier task of ours already wrote (it was
        // queued while that task held the namespace): decide from the namespace as it is now.
        let api: Api<Namespace> = Api::all(self.ctx.cluster.client.clone());
        let ns = match api.get_opt(&name).await {
            Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_none() => ns,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(namespace = %name, error = %e, "could not read the namespace");
                return;
            }
        };
        let target = Target::namespace(&self.ctx, &name);
        if let Some(backup) = self.backup_for(&target, &ns.metadata, cutoff).await {
            self.restore(&target, &backup).await;
        }
    }

    /// The backup to restore a workspace from: the one the webhook marked it with, unless its
    /// restore has finished or it is ephemeral or being deleted; for an unmarked workspace, what
    /// catch-up decides.
    async fn backup_for(&self, target: &Target, meta: &ObjectMeta, cutoff: Timestamp) -> Option<String> {
        if !candidate(meta) {
            return None;
        }
        match meta.annotations.as_ref().and_then(|a| a.get(RESTORE_FROM_ANNOTATION)) {
            Some(marked) => Some(marked.clone()),
            // Not marked: a workspace the webhook did not see (it was down), if new enough.
            None => self.catch_up(target, meta, cutoff).await,
        }
    }

    /// A workspace the webhook did not see (it was down, and `failurePolicy: Ignore` let the
    /// creation through), already known to be a `candidate`: if it was created since the worker
    /// last ran and carries none of our marks, decide as the webhook would and mark it. Returns the backup to restore from.
    ///
    /// The caller restores rather than the watch event of the patch: that event arrives while the
    /// caller's task still holds the object and would be dropped.
    async fn catch_up(&self, target: &Target, meta: &ObjectMeta, cutoff: Timestamp) -> Option<String> {
        let labels = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.clone().unwrap_or_default();
        let created = meta.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        if created < cutoff
            || annotations.contains_key(RESTORE_STATUS_ANNOTATION)
            || annotations.contains_key(RESTORE_FROM_ANNOTATION)
            // created by a restore
            || labels.contains_key(kubectl_backup_core::RESTORED_FROM_LABEL)
        {
            return None;
        }
        let patch = match decide(&self.ctx.policy, &target.name, &labels, &annotations, &self.ctx.index) {
            Decision::Ephemeral => serde_json::json!({"metadata": {"labels": {EPHEMERAL_LABEL: "true"}}}),
            Decision::Restore(backup) => {
                serde_json::json!({"metadata": {"annotations": {RESTORE_FROM_ANNOTATION: backup}}})
            }
            Decision::Nothing | Decision::NotAWorkspace => return None,
        };
        let kind = target.reference.kind.as_deref().unwrap_or("");
        tracing::info!(workspace = %target.name, %kind, "catching up on a workspace created while the webhook was down");
        match target.api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(marked) => marked.annotations().get(RESTORE_FROM_ANNOTATION).cloned(),
            Err(e) => {
                tracing::warn!(workspace = %target.name, %kind, error = %e, "could not mark the workspace");
                None
            }
        }
    }

    /// Restores the namespace `target.name` from `backup`, recording progress on the target object.
    async fn restore(&self, target: &Target, backup: &str) {
        let name = &target.name;
        if let Err(e) = target.set_status("InProgress").await {
            tracing::warn!(workspace = %name, error = %e, "could not mark the restore as started");
            return;
        }
        self.ctx
            .event(
                &target.reference,
                EventType::Normal,
                "RestoreStarted",
                format!("restoring namespace {name} from backup {backup}"),
            )
            .await;
        let spec = RestoreSpec {
            backup_name: backup.to_string(),
            filters: Filters { included_namespaces: vec![name.clone()], ..Default::default() },
            existing_resource_policy: ExistingPolicy::Skip,
            ..Default::default()
        };
        let restore_name = timestamped_name(backup, Timestamp::now());
        let result =
            restore::run(&self.ctx.cluster, &self.ctx.location.store, &restore_name, spec, Arc::new(Quiet)).await;
        let (phase, note) = match &result {
            Ok(r) => (r.status.phase, summary(r)),
            Err(e) => (Phase::Failed, format!("restore of {name} from {backup} failed: {e}")),
        };
        self.ctx.metrics.restores.get_or_create(&ResultLabel { result: phase.to_string() }).inc();
        let (kind, reason) = match phase {
            Phase::Completed => (EventType::Normal, "RestoreCompleted"),
            Phase::PartiallyFailed => (EventType::Warning, "RestoreCompleted"),
            _ => (EventType::Warning, "RestoreFailed"),
        };
        tracing::info!(workspace = %name, %backup, %phase, "{note}");
        self.ctx.event(&target.reference, kind, reason, note).await;
        if let Err(e) = target.set_status(&phase.to_string()).await {
            tracing::warn!(workspace = %name, error = %e, "could not record the restore result");
        }
    }

    /// Workspace custom resources (`--workspace-resource`): the webhook marks a new one named N with
    /// `restore-from`; this restores namespace N from that backup and records the result on the
    /// custom resource. One created while the webhook was down is caught up as a namespace is.
    async fn watch_workspace_resource(self: Arc<Self>, group: String, plural: String, cutoff: Timestamp) {
        let client = self.ctx.cluster.client.clone();
        let ar = loop {
            match kube::discovery::group(&client, &group).await {
                Ok(g) => {
                    if let Some((ar, _)) = g.recommended_resources().into_iter().find(|(ar, _)| ar.plural == plural) {
                        break ar;
                    }
                    tracing::info!(%group, %plural, "workspace resource not served yet; waiting");
                }
                Err(e) => tracing::info!(%group, %plural, error = %e, "workspace resource not served yet; waiting"),
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        };
        tracing::info!(%group, %plural, "watching workspace resources");
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let in_flight: InFlight<(Option<String>, String)> = Arc::default();
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(next) = events.next().await {
            let obj = match next {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, %plural, "workspace resource watch error; retrying");
                    continue;
                }
            };
            let key = (obj.namespace(), obj.name_any());
            if !candidate(&obj.metadata) || !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
                continue;
            }
            let (me, ar, in_flight) = (self.clone(), ar.clone(), in_flight.clone());
            tokio::spawn(async move {
                let api: Api<DynamicObject> = match &key.0 {
                    Some(ns) => Api::namespaced_with(me.ctx.cluster.client.clone(), ns, &ar),
                    None => Api::all_with(me.ctx.cluster.client.clone(), &ar),
                };
                // Decide from the object as it is now (see `handle`).
                if let Ok(Some(obj)) = api.get_opt(&key.1).await {
                    let reference = ObjectReference {
                        api_version: Some(ar.api_version.clone()),
                        kind: Some(ar.kind.clone()),
                        name: Some(key.1.clone()),
                        namespace: key.0.clone(),
                        uid: obj.uid(),
                        ..Default::default()
                    };
                    let target = Target { name: key.1.clone(), api, reference };
                    if let Some(backup) = me.backup_for(&target, &obj.metadata, cutoff).await {
                        me.restore(&target, &backup).await;
                    }
                }
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            });
        }
    }

    /// Namespaces created after this are candidates for catch-up.
    async fn catch_up_cutoff(&self) -> Timestamp {
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.cluster.client.clone(), &self.ctx.namespace);
        let last = match api.get_opt(STATE_CONFIGMAP).await {
            Ok(Some(cm)) => cm.data.and_then(|d| d.get("lastSeen").and_then(|t| t.parse::<Timestamp>().ok())),
            _ => None,
        };
        match last {
            Some(t) => t.checked_sub(jiff::SignedDuration::try_from(GRACE).unwrap_or_default()).unwrap_or(t),
            // First run: nothing was missed.
            None => Timestamp::now(),
        }
    }

    async fn heartbeat(&self) {
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.cluster.client.clone(), &self.ctx.namespace);
        loop {
            let data: BTreeMap<String, String> = [("lastSeen".to_string(), Timestamp::now().to_string())].into();
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta { name: Some(STATE_CONFIGMAP.into()), ..Default::default() },
                data: Some(data),
                ..Default::default()
            };
            let pp = PatchParams::apply(kubectl_backup_core::FIELD_MANAGER).force();
            if let Err(e) = api.patch(STATE_CONFIGMAP, &pp, &Patch::Apply(&cm)).await {
                if let kube::Error::Api(s) = &e
                    && s.code == 404
                {
                    // Older servers need the object to exist for apply; create it.
                    let _ = api.create(&PostParams::default(), &cm).await;
                } else {
                    tracing::warn!(error = %e, "could not record the worker heartbeat");
                }
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    }
}

/// A workspace the worker may have to handle: not being deleted, not ephemeral, and not restored
/// yet (marked and unfinished, or unmarked — a catch-up candidate).
fn candidate(meta: &ObjectMeta) -> bool {
    let status = meta.annotations.as_ref().and_then(|a| a.get(RESTORE_STATUS_ANNOTATION)).map(String::as_str);
    meta.deletion_timestamp.is_none()
        && matches!(status, None | Some("InProgress"))
        && meta.labels.as_ref().and_then(|l| l.get(EPHEMERAL_LABEL)).is_none_or(|v| v != "true")
}

/// What a restore is recorded on: the namespace itself, or a workspace custom resource.
struct Target {
    /// The workspace, i.e. the namespace restored.
    name: String,
    /// Where the object carrying the `restore-status` annotation lives.
    api: Api<DynamicObject>,
    /// The object Events are recorded on.
    reference: ObjectReference,
}

impl Target {
    fn namespace(ctx: &Context, name: &str) -> Target {
        let ar = ApiResource::erase::<Namespace>(&());
        Target {
            name: name.to_string(),
            api: Api::all_with(ctx.cluster.client.clone(), &ar),
            reference: Context::namespace_reference(name),
        }
    }

    async fn set_status(&self, status: &str) -> Result<(), kube::Error> {
        let patch = serde_json::json!({"metadata": {"annotations": {RESTORE_STATUS_ANNOTATION: status}}});
        self.api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }
}

fn summary(r: &Restore) -> String {
    let c = &r.status.counts;
    let mut s = format!(
        "restore {} of backup {}: {}; created {}, skipped (exists) {}, skipped (policy) {}, failed {}",
        r.metadata.name, r.spec.backup_name, r.status.phase, c.created, c.skipped_exists, c.skipped_policy, c.failed
    );
    if let Some(first) = r.status.errors.first() {
        s.push_str(&format!("; first failure: {first}"));
    }
    s
}
