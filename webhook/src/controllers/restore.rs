//! The restore worker: restores workspaces that carry the webhook's signed [`Mark`], as the person
//! the mark names (impersonation), from the newest backup made before the workspace was created —
//! read from the location right before the restore, so a backup seconds old counts. Workspaces
//! created while the webhook was down (its `failurePolicy: Ignore` lets them through unmarked) have
//! no verified creator: they are marked `Pending` with an Event saying who may restore them, unless
//! an admin named an identity for such restores (`--catch-up-identity`).
//!
//! Every decision is [`plan`]: a pure function of the workspace's metadata, the policy and the key.
//!
//! Why its own loop rather than kube's runtime `Controller`: a workspace being restored is held in
//! an in-flight set and further events for it are dropped, not queued (its own restore patches it
//! several times); retries are counted on the object (`restore-attempts`, so a crash loop ends in
//! `Failed` across restarts) rather than in an in-memory backoff; and one namespace watch drives
//! both marked restores and catch-up. The watch itself is the runtime's, with its backoff.
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
use kubectl_backup_core::model::{ExistingPolicy, Filters, ItemAction, Phase, Restore, RestoreSpec};
use kubectl_backup_core::progress::Quiet;
use kubectl_backup_core::restore::{self, record};
use kubectl_backup_core::runlog::RunLog;

use super::Context;
use crate::admission::{
    Decision, Policy, RESTORE_ATTEMPTS_ANNOTATION, RESTORE_FROM_ANNOTATION, RESTORE_STATUS_ANNOTATION, decide,
};
use crate::mark::{Key, Requester};
use crate::metrics::ResultLabel;

/// The ConfigMap (in the webhook's namespace) holding `lastSeen`.
pub const STATE_CONFIGMAP: &str = kubectl_backup_core::install::STATE_CONFIGMAP;
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
        // Owned: if this run ends (or panics), they are stopped with it, and the supervisor's
        // restart does not leave a second heartbeat or watcher behind.
        let mut helpers = tokio::task::JoinSet::new();
        let me = self.clone();
        helpers.spawn(async move { me.heartbeat().await });
        for (group, plural) in self.ctx.policy.workspace_resources.clone() {
            let me = self.clone();
            helpers.spawn(async move { me.watch_workspace_resource(group, plural, cutoff).await });
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
        self.act(&target, &ns.metadata, cutoff).await;
    }

    /// Carries out the [`plan`] for one workspace.
    async fn act(&self, target: &Target, meta: &ObjectMeta, cutoff: Timestamp) {
        match plan(
            &self.ctx.policy,
            &self.ctx.key,
            meta,
            &target.kind,
            target.namespace.as_deref(),
            &target.name,
            cutoff,
        ) {
            Plan::Skip => {}
            Plan::Restore { requester, at, ignored } => {
                let tries = attempts(meta.annotations.as_ref().unwrap_or(&BTreeMap::new()));
                self.restore(target, &requester, at, &ignored, tries).await
            }
            Plan::Refuse(why) => {
                tracing::warn!(workspace = %target.name, %why, "refusing a restore mark");
                self.ctx
                    .event(&target.reference, EventType::Warning, "RestoreRefused", format!("not restored: {why}"))
                    .await;
                self.set_status(target, "Refused").await;
            }
            Plan::GiveUp(attempts) => {
                let note = format!(
                    "restore of {} abandoned after {attempts} attempts that did not finish (see the webhook's log); restore it by hand with `kubectl backup restore`",
                    target.name
                );
                self.ctx.event(&target.reference, EventType::Warning, "RestoreFailed", note).await;
                self.ctx.metrics.restores.get_or_create(&ResultLabel { result: "Failed".into() }).inc();
                self.set_status(target, "Failed").await;
            }
            Plan::CatchUp => self.catch_up(target, meta).await,
        }
    }

    /// A workspace the webhook did not see (it was down, and `failurePolicy: Ignore` let the
    /// creation through), created since the worker last ran. Ephemeral ones get their label. One
    /// with a backup is restored only as the admin-chosen `--catch-up-identity`: without it nobody
    /// vouches for who created it, so it is marked `Pending` and an Event says how to restore it.
    async fn catch_up(&self, target: &Target, meta: &ObjectMeta) {
        let labels = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.clone().unwrap_or_default();
        let kind = target.reference.kind.as_deref().unwrap_or("");
        match decide(&self.ctx.policy, &target.name, &labels, &annotations, &self.ctx.index) {
            Decision::Ephemeral => {
                tracing::info!(workspace = %target.name, %kind, "catching up: ephemeral");
                let patch = serde_json::json!({"metadata": {"labels": {EPHEMERAL_LABEL: "true"}}});
                if let Err(e) = target.api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    tracing::warn!(workspace = %target.name, error = %e, "could not label the workspace ephemeral");
                }
            }
            Decision::Restore(backup) => {
                let created = meta.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
                match &self.ctx.catch_up_identity {
                    Some(user) => {
                        tracing::info!(workspace = %target.name, %kind, %user, "catching up: restoring as the catch-up identity");
                        let requester = Requester { user: user.clone(), ..Default::default() };
                        self.restore(target, &requester, created, &[], 0).await;
                    }
                    None => {
                        let note = format!(
                            "{kind} {} was created while the webhook was not answering, so who created it is not known and it was not restored automatically. Backup {backup} has it: someone allowed to restore it runs `kubectl backup restore {backup} --include-namespaces {}` (or the admin sets --catch-up-identity)",
                            target.name, target.name
                        );
                        self.ctx.event(&target.reference, EventType::Warning, "RestorePending", note).await;
                        let patch = serde_json::json!({"metadata": {"annotations": {RESTORE_FROM_ANNOTATION: backup, RESTORE_STATUS_ANNOTATION: "Pending"}}});
                        if let Err(e) =
                            target.api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await
                        {
                            tracing::warn!(workspace = %target.name, error = %e, "could not mark the workspace Pending");
                        }
                    }
                }
            }
            Decision::Nothing | Decision::NotAWorkspace | Decision::Request => {}
        }
    }

    async fn set_status(&self, target: &Target, status: &str) {
        if let Err(e) = target.set_status(status).await {
            tracing::warn!(workspace = %target.name, error = %e, "could not record restore-status {status}");
        }
    }

    /// Restores namespace `target.name` as `requester` from the newest backup made before `at`,
    /// recording progress on the target object. `tries` is how many attempts the object records.
    async fn restore(&self, target: &Target, requester: &Requester, at: Timestamp, ignored: &[String], tries: u32) {
        let name = &target.name;
        let user = &requester.user;
        if !ignored.is_empty() {
            let note = format!(
                "{user} set {} on {name}; only the webhook decides what is restored, so it was removed. To restore a chosen backup, run `kubectl backup restore BACKUP --include-namespaces {name}` with your own rights",
                ignored.join(", ")
            );
            self.ctx.event(&target.reference, EventType::Warning, "MarkIgnored", note).await;
        }
        // The newest backup, even one committed seconds ago: read the location now.
        if let Err(e) = self.ctx.index.refresh(&self.ctx.location.store).await {
            tracing::warn!(workspace = %name, error = %e, "could not re-read the location; deciding from the last index");
        }
        let Some(backup) = self.ctx.index.newest_before(name, at) else {
            tracing::debug!(workspace = %name, "no backup of this workspace");
            self.set_status(target, "NoBackup").await;
            return;
        };
        let attempts = tries + 1;
        let patch = serde_json::json!({"metadata": {"annotations": {
            RESTORE_FROM_ANNOTATION: backup, RESTORE_STATUS_ANNOTATION: "InProgress",
            RESTORE_ATTEMPTS_ANNOTATION: attempts.to_string()}}});
        if let Err(e) = target.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::warn!(workspace = %name, error = %e, "could not mark the restore as started");
            return;
        }
        self.ctx
            .event(
                &target.reference,
                EventType::Normal,
                "RestoreStarted",
                format!("restoring namespace {name} from backup {backup} as {user}"),
            )
            .await;
        let spec = RestoreSpec {
            backup_name: backup.clone(),
            filters: Filters { included_namespaces: vec![name.clone()], ..Default::default() },
            existing_resource_policy: ExistingPolicy::Skip,
            // Volume data is restored by the plugin only, for now (docs/volumes.md): the controller
            // restores the objects.
            skip_volume_data: true,
            ..Default::default()
        };
        let restore_name = timestamped_name(&backup, Timestamp::now());
        let log = RunLog::new(Arc::new(Quiet));
        log.line(format_args!("automatic restore of workspace {name} from backup {backup} as {user}"));
        let store = &self.ctx.location.store;
        let result = match self.ctx.acting_as(requester) {
            Ok(cluster) => restore::run(&cluster, store, &restore_name, spec, log.clone()).await,
            Err(e) => Err(e),
        };
        // The history (`kubectl backup restore list`), in a location the controller may write.
        if let Ok(r) = &result
            && self.ctx.location.ensure_writable().is_ok()
            && let Err(e) = record::save(store, r, &log).await
        {
            tracing::warn!(workspace = %name, error = %e, "could not record the restore in the location");
        }
        let (phase, note) = match &result {
            Ok(r) => (r.status.phase, summary(r, user)),
            Err(e) => (
                Phase::Failed,
                format!(
                    "restore of {name} from {backup} as {user} failed: {}",
                    kubectl_backup_core::error::redact(&e.to_string())
                ),
            ),
        };
        self.ctx.metrics.restores.get_or_create(&ResultLabel { result: phase.to_string() }).inc();
        let (kind, reason) = match phase {
            Phase::Completed => (EventType::Normal, "RestoreCompleted"),
            Phase::PartiallyFailed => (EventType::Warning, "RestoreCompleted"),
            _ => (EventType::Warning, "RestoreFailed"),
        };
        tracing::info!(workspace = %name, %backup, %user, %phase, "{note}");
        self.ctx.event(&target.reference, kind, reason, note).await;
        self.set_status(target, &phase.to_string()).await;
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
            if !worth_a_look(&obj.metadata) || !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone())
            {
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
                    let target = Target {
                        name: key.1.clone(),
                        kind: format!("{}.{}", ar.plural, ar.group),
                        namespace: key.0.clone(),
                        api,
                        reference,
                    };
                    me.act(&target, &obj.metadata, cutoff).await;
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

/// What the worker does with one workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: not a workspace, ephemeral, being deleted, already handled, or older than the
    /// worker's last run and unmarked.
    Skip,
    /// The webhook's mark is valid: restore as its requester, from the newest backup before `at`.
    Restore { requester: Requester, at: Timestamp, ignored: Vec<String> },
    /// A mark that is not the webhook's, or not for this object: restore nothing, say why.
    Refuse(String),
    /// Earlier attempts never finished (the process died each time): stop trying.
    GiveUp(u32),
    /// Unmarked and created since the worker last ran: the webhook was down.
    CatchUp,
}

/// A cheap filter before [`plan`]: not being deleted and not finished.
fn worth_a_look(meta: &ObjectMeta) -> bool {
    let status = meta.annotations.as_ref().and_then(|a| a.get(RESTORE_STATUS_ANNOTATION)).map(String::as_str);
    meta.deletion_timestamp.is_none() && matches!(status, None | Some("InProgress"))
}

/// Restores started this many times without finishing are abandoned (`Failed`).
pub const MAX_ATTEMPTS: u32 = 3;

/// The decision for a workspace of `kind` (`namespaces` or `<plural>.<group>`) named `name`.
pub fn plan(
    policy: &Policy,
    key: &Key,
    meta: &ObjectMeta,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    cutoff: Timestamp,
) -> Plan {
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let status = annotations.get(RESTORE_STATUS_ANNOTATION).map(String::as_str);
    if meta.deletion_timestamp.is_some()
        || !matches!(status, None | Some("InProgress"))
        || labels.get(EPHEMERAL_LABEL).is_some_and(|v| v == "true")
        // The same checks as admission: system and own namespaces, the workspace selector.
        || policy.excluded.contains(name)
        || policy.selector.as_ref().is_some_and(|s| !s.matches(&labels))
    {
        return Plan::Skip;
    }
    let tries = attempts(&annotations);
    if status == Some("InProgress") && tries >= MAX_ATTEMPTS {
        return Plan::GiveUp(tries);
    }
    match key.verify(meta, kind, namespace, name) {
        Ok(Some(mark)) => Plan::Restore { requester: mark.requester, at: mark.at, ignored: mark.ignored },
        Err(why) => Plan::Refuse(why.to_string()),
        Ok(None) => {
            let created = meta.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
            if created < cutoff || labels.contains_key(kubectl_backup_core::RESTORED_FROM_LABEL) || status.is_some() {
                Plan::Skip
            } else {
                Plan::CatchUp
            }
        }
    }
}

fn attempts(annotations: &BTreeMap<String, String>) -> u32 {
    annotations.get(RESTORE_ATTEMPTS_ANNOTATION).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// What a restore is recorded on: the namespace itself, or a workspace custom resource.
struct Target {
    /// The workspace, i.e. the namespace restored.
    name: String,
    /// `namespaces` or `<plural>.<group>`: what the mark must name.
    kind: String,
    /// The namespace of a namespaced workspace custom resource.
    namespace: Option<String>,
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
            kind: "namespaces".into(),
            namespace: None,
            api: Api::all_with(ctx.cluster.client.clone(), &ar),
            reference: Context::namespace_reference(name),
        }
    }

    async fn set_status(&self, status: &str) -> Result<(), kube::Error> {
        let patch = serde_json::json!({"metadata": {"annotations": {RESTORE_STATUS_ANNOTATION: status}}});
        self.api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }
}

fn summary(r: &Restore, user: &str) -> String {
    let mut s = format!(
        "restore {} of backup {} as {user}: {}; {}",
        r.metadata.name,
        r.spec.backup_name,
        r.status.phase,
        r.status.counts.summary()
    );
    // Name what was not restored (typically what the creator may not create): never done with
    // the controller's rights instead.
    let failed: Vec<String> =
        r.status.items.iter().filter(|i| i.action == ItemAction::Failed).take(5).map(|i| i.failure()).collect();
    if !failed.is_empty() {
        s.push_str(&format!("; not restored: {}", failed.join("; ")));
    } else if let Some(first) = r.status.errors.first() {
        s.push_str(&format!("; first failure: {first}"));
    }
    // What the restore left out on purpose (volume data) or could not check.
    if !r.status.warnings.is_empty() {
        let warnings: Vec<String> = r.status.warnings.iter().take(3).cloned().collect();
        s.push_str(&format!("; warnings: {}", warnings.join("; ")));
    }
    kubectl_backup_core::error::redact(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use crate::mark::{MARK_ANNOTATION, Mark};

    fn policy() -> Policy {
        Policy::new(&[], Some("!skip"), "kubectl-backup", &["workspaces.example.org".into()]).unwrap()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn meta(name: &str, created: &str, annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(t(created))),
            annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    fn signed(key: &Key, kind: &str, name: &str, user: &str, at: &str) -> String {
        key.sign(&Mark {
            kind: kind.into(),
            namespace: None,
            name: name.into(),
            requester: Requester { user: user.into(), ..Default::default() },
            at: t(at),
            ignored: vec![],
            spec: None,
        })
    }

    #[test]
    fn only_the_webhooks_mark_leads_to_a_restore_as_its_requester() {
        let key = Key::new(&[3; 32]);
        let cutoff = t("2026-12-01T09:00:00Z");
        let at = "2026-12-01T10:00:00Z";
        let good = signed(&key, "namespaces", "shop", "alice", at);
        assert_eq!(
            plan(
                &policy(),
                &key,
                &meta("shop", at, &[(MARK_ANNOTATION, &good)], &[]),
                "namespaces",
                None,
                "shop",
                cutoff
            ),
            Plan::Restore {
                requester: Requester { user: "alice".into(), ..Default::default() },
                at: t(at),
                ignored: vec![]
            }
        );
        // A user's own `restore-from` without a mark: catch-up (which restores nothing without an identity).
        let bare = meta("shop", at, &[(RESTORE_FROM_ANNOTATION, "other")], &[]);
        assert_eq!(plan(&policy(), &key, &bare, "namespaces", None, "shop", cutoff), Plan::CatchUp);
        // A forged mark, and a real one copied to another workspace.
        let forged = signed(&Key::new(&[4; 32]), "namespaces", "shop", "admin", at);
        assert!(matches!(
            plan(&policy(), &key, &meta("shop", at, &[(MARK_ANNOTATION, &forged)], &[]), "namespaces", None, "shop", cutoff),
            Plan::Refuse(w) if w.contains("signature")
        ));
        assert!(matches!(
            plan(&policy(), &key, &meta("bank", at, &[(MARK_ANNOTATION, &good)], &[]), "namespaces", None, "bank", cutoff),
            Plan::Refuse(w) if w.contains("not for this object")
        ));
        // The same mark on a workspace custom resource of that name is another object.
        assert!(matches!(
            plan(
                &policy(),
                &key,
                &meta("shop", at, &[(MARK_ANNOTATION, &good)], &[]),
                "workspaces.example.org",
                None,
                "shop",
                cutoff
            ),
            Plan::Refuse(_)
        ));
    }

    #[test]
    fn excluded_selected_out_finished_old_and_stuck_workspaces() {
        let key = Key::new(&[3; 32]);
        let cutoff = t("2026-12-01T09:00:00Z");
        let at = "2026-12-01T10:00:00Z";
        // A workspace custom resource named like a system or the install namespace: never.
        for name in ["kube-system", "kubectl-backup"] {
            let m = signed(&key, "workspaces.example.org", name, "alice", at);
            let meta = meta(name, at, &[(MARK_ANNOTATION, &m)], &[]);
            assert_eq!(
                plan(&policy(), &key, &meta, "workspaces.example.org", None, name, cutoff),
                Plan::Skip,
                "{name}"
            );
        }
        let good = signed(&key, "namespaces", "shop", "alice", at);
        let with = |ann: &[(&str, &str)], labels: &[(&str, &str)]| {
            let mut a = vec![(MARK_ANNOTATION, good.as_str())];
            a.extend_from_slice(ann);
            plan(&policy(), &key, &meta("shop", at, &a, labels), "namespaces", None, "shop", cutoff)
        };
        assert_eq!(with(&[], &[("skip", "x")]), Plan::Skip, "the selector says it is not a workspace");
        assert_eq!(with(&[(RESTORE_STATUS_ANNOTATION, "Completed")], &[]), Plan::Skip);
        assert_eq!(with(&[], &[(EPHEMERAL_LABEL, "true")]), Plan::Skip);
        assert_eq!(
            with(&[(RESTORE_STATUS_ANNOTATION, "InProgress"), (RESTORE_ATTEMPTS_ANNOTATION, "3")], &[]),
            Plan::GiveUp(3)
        );
        assert!(matches!(
            with(&[(RESTORE_STATUS_ANNOTATION, "InProgress"), (RESTORE_ATTEMPTS_ANNOTATION, "1")], &[]),
            Plan::Restore { .. }
        ));
        // Unmarked and older than the worker's last run: not ours to touch.
        assert_eq!(
            plan(&policy(), &key, &meta("old", "2026-12-01T08:00:00Z", &[], &[]), "namespaces", None, "old", cutoff),
            Plan::Skip
        );
    }
}
