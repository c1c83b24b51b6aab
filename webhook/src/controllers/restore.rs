//! The restore worker: restores workspaces the webhook marked with `restore-from`, and catches up on
//! workspaces created while the webhook was down (its `failurePolicy: Ignore` lets them through
//! unmarked).
//!
//! State lives in the cluster: the `restore-status` annotation on each namespace (InProgress, then
//! Completed / PartiallyFailed / Failed) — a restart resumes an InProgress restore — and a
//! ConfigMap in the webhook's namespace recording when the worker last ran, so catch-up looks only
//! at namespaces created since.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
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

        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
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
        let labels = ns.labels().clone();
        let annotations = ns.annotations().clone();
        let ephemeral = labels.get(EPHEMERAL_LABEL).is_some_and(|v| v == "true");
        if let Some(backup) = annotations.get(RESTORE_FROM_ANNOTATION) {
            let status = annotations.get(RESTORE_STATUS_ANNOTATION).map(String::as_str);
            if ephemeral || !matches!(status, None | Some("InProgress")) {
                return;
            }
            self.restore(&ns, backup).await;
            return;
        }
        // Not marked: a workspace the webhook did not see (it was down), if new enough.
        let created = ns.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        if created < cutoff || annotations.contains_key(RESTORE_STATUS_ANNOTATION) || ephemeral {
            return;
        }
        if labels.contains_key(kubectl_backup_core::RESTORED_FROM_LABEL) {
            return; // created by a restore
        }
        let patch = match decide(&self.ctx.policy, &name, &labels, &annotations, &self.ctx.index) {
            Decision::Ephemeral => serde_json::json!({"metadata": {"labels": {EPHEMERAL_LABEL: "true"}}}),
            Decision::Restore(backup) => {
                serde_json::json!({"metadata": {"annotations": {RESTORE_FROM_ANNOTATION: backup}}})
            }
            Decision::Nothing | Decision::NotAWorkspace => return,
        };
        tracing::info!(namespace = %name, "catching up on a workspace created while the webhook was down");
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            // Restore here rather than from the patch's watch event: that event arrives while this
            // task still holds the namespace and would be dropped.
            Ok(marked) => {
                if let Some(backup) = marked.annotations().get(RESTORE_FROM_ANNOTATION).cloned() {
                    self.restore(&marked, &backup).await;
                }
            }
            Err(e) => tracing::warn!(namespace = %name, error = %e, "could not mark the workspace"),
        }
    }

    async fn restore(&self, ns: &Namespace, backup: &str) {
        let name = ns.name_any();
        let api: Api<Namespace> = Api::all(self.ctx.cluster.client.clone());
        if let Err(e) = set_status(&api, &name, "InProgress").await {
            tracing::warn!(namespace = %name, error = %e, "could not mark the restore as started");
            return;
        }
        self.event(
            &name,
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
        tracing::info!(namespace = %name, %backup, %phase, "{note}");
        self.event(&name, kind, reason, note).await;
        if let Err(e) = set_status(&api, &name, &phase.to_string()).await {
            tracing::warn!(namespace = %name, error = %e, "could not record the restore result");
        }
    }

    async fn event(&self, namespace: &str, type_: EventType, reason: &str, note: String) {
        self.ctx.event(&Context::namespace_reference(namespace), type_, reason, note).await;
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

async fn set_status(api: &Api<Namespace>, name: &str, status: &str) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"metadata": {"annotations": {RESTORE_STATUS_ANNOTATION: status}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
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
