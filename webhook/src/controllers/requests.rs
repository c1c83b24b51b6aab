//! Backup and Restore requests: resources that ask the controller for one backup or one restore
//! (`kubectl backup create|restore --in-cluster`, or a GitOps tool). Each is acted on once; its
//! status shows the progress while it runs and the outcome after, and Events mark each step.
//!
//! The security rules, the same as schedules' and auto-restore's:
//! - The controller acts only on a request carrying the webhook's signed mark, which names who
//!   created it and the digest of the spec as created: a request edited afterwards, or one
//!   created while the webhook was down, is refused, never run.
//! - A restore writes with the rights of the person who created the request (impersonation).
//! - Outside the install namespace a request reaches only its own namespace (no namespace mapping,
//!   no cluster-scoped objects, no etcd) and only a BackupLocation, never a URL.
//!
//! A request's run is claimed with a status patch conditional on the resourceVersion it was
//! decided from (as schedules' runs are), so a reconcile deciding from a stale cache never runs it
//! twice. One found InProgress when the controller decides again was interrupted (the controller,
//! one replica as installed, stopped during it): it is marked Failed, not run again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kubectl_backup_core::input::timestamped_name;
use kubectl_backup_core::locations::{self, Resolved};
use kubectl_backup_core::model::{BackupSpec, ClusterResources, Filters, Phase, RestoreSpec};
use kubectl_backup_core::progress::{Event as Progress, Observer};
use kubectl_backup_core::requests::{
    BACKUP_RESOURCE, BackupRequest, RESTORE_RESOURCE, RequestProgress, RequestStatus, RestoreRequest,
    RestoreRequestSpec,
};
use kubectl_backup_core::restore::{self, record};
use kubectl_backup_core::runlog::RunLog;
use kubectl_backup_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::schedules::{confine, read_only_location, ready_condition, tenant_location};
use super::{Context, EtcdRun, ObjectRun};
use crate::mark::{Requester, spec_digest};

const DEFAULT_TTL: &str = "720h";
/// How often a running request's progress is written to its status.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Errors and warnings kept in a request's status.
const MAX_MESSAGES: usize = 20;

pub async fn run_backups(ctx: Arc<Context>) {
    let api: Api<BackupRequest> = Api::all(ctx.cluster.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile_backup, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "backup request reconcile");
            }
        })
        .await;
}

pub async fn run_restores(ctx: Arc<Context>) {
    let api: Api<RestoreRequest> = Api::all(ctx.cluster.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile_restore, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "restore request reconcile");
            }
        })
        .await;
}

fn error_policy<K>(_: Arc<K>, e: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "request reconcile failed; retrying in 30s");
    Action::requeue(Duration::from_secs(30))
}

/// What a tenant's restore may restore: its own namespace's namespaced objects, into it.
pub fn confine_restore(
    namespace: &str,
    install_namespace: &str,
    spec: &RestoreRequestSpec,
) -> std::result::Result<Filters, String> {
    tenant_location("Restore", namespace, install_namespace, spec.location.as_deref())?;
    if namespace == install_namespace {
        return Ok(spec.filters.clone());
    }
    if !spec.namespace_mapping.is_empty() {
        return Err(format!(
            "a Restore in namespace {namespace:?} may not map namespaces (namespaceMapping); restores into other namespaces belong in {install_namespace:?}"
        ));
    }
    let mut f = confine("Restore", namespace, install_namespace, &spec.filters, false)?;
    // The namespace exists (the request lives in it), and cluster-scoped objects are not a
    // tenant's to create.
    f.include_cluster_resources = ClusterResources::Never;
    if !f.excluded_resources.iter().any(|r| r == "namespaces") {
        f.excluded_resources.push("namespaces".into());
    }
    Ok(f)
}

/// The person who created a request, from the webhook's mark, if the mark is valid for this
/// object and names the spec whose digest is `digest`; otherwise why not.
pub fn requester(
    key: &crate::mark::Key,
    meta: &kube::api::ObjectMeta,
    kind: &str,
    resource: &str,
    ns: &str,
    name: &str,
    digest: &str,
) -> std::result::Result<Requester, String> {
    let mark = match key.verify(meta, resource, Some(ns), name) {
        Ok(Some(mark)) => mark,
        Ok(None) => {
            return Err(format!(
                "the {kind} carries no mark of the admission webhook (was it created while the webhook was not answering?); delete it and create it again"
            ));
        }
        Err(e) => return Err(format!("the webhook's mark on the {kind} is not valid: {e}")),
    };
    if mark.spec.as_deref() != Some(digest) {
        return Err(format!(
            "the {kind}'s spec was changed after it was created; a request runs only as created: create a new one"
        ));
    }
    Ok(mark.requester)
}

/// One request being decided: where its status goes, and its status as this reconcile found it.
struct Handling<K: Resource<DynamicType = ()>> {
    ctx: Arc<Context>,
    api: Api<K>,
    ns: String,
    name: String,
    kind: &'static str,
    reference: ObjectReference,
    generation: Option<i64>,
    resource_version: Option<String>,
    status: RequestStatus,
}

impl<K> Handling<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn new(obj: &K, status: Option<&RequestStatus>, kind: &'static str, ctx: Arc<Context>) -> Self {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        Handling {
            api: Api::namespaced(ctx.cluster.client.clone(), &ns),
            ns,
            name: obj.meta().name.clone().unwrap_or_default(),
            kind,
            reference: obj.object_ref(&()),
            generation: obj.meta().generation,
            resource_version: obj.meta().resource_version.clone(),
            status: status.cloned().unwrap_or_default(),
            ctx,
        }
    }

    async fn patch(&self, status: Value) -> Result<()> {
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
            .await
            .map(|_| ())
            .map_err(|e| Error::kube(format!("updating the status of {} {}/{}", self.kind, self.ns, self.name), e))
    }

    /// A status patch applied only if the request is still at the resourceVersion this reconcile
    /// decided from. False when it is not (decided from a stale view, or another replica won).
    async fn patch_if_unchanged(&self, status: Value) -> Result<bool> {
        let patch = json!({"metadata": {"resourceVersion": self.resource_version}, "status": status});
        match self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(Error::kube(format!("claiming {} {}/{}", self.kind, self.ns, self.name), e)),
        }
    }

    /// The person who created the request ([`requester`]).
    fn requester(&self, obj: &K, resource: &str, digest: &str) -> std::result::Result<Requester, String> {
        requester(&self.ctx.key, obj.meta(), self.kind, resource, &self.ns, &self.name, digest)
    }

    /// The start every request shares: a finished one is left alone, one found InProgress was
    /// interrupted, one without a valid mark for this spec is refused. `Ok(Err(action))` when it
    /// ends there; otherwise its creator.
    async fn begin(&self, obj: &K, resource: &str, digest: &str) -> Result<std::result::Result<Requester, Action>> {
        if self.status.finished() {
            return Ok(Err(Action::await_change()));
        }
        if self.status.phase.as_deref() == Some("InProgress") {
            return self.interrupted().await.map(Err);
        }
        match self.requester(obj, resource, digest) {
            Ok(r) => Ok(Ok(r)),
            Err(why) => self.fail("Unverified", why, false).await.map(Err),
        }
    }

    /// Marks the request Failed (refused before it ran, or failed), with an Event.
    async fn fail(&self, reason: &str, message: String, started: bool) -> Result<Action> {
        let message = kubectl_backup_core::error::redact(&message);
        self.ctx.event(&self.reference, EventType::Warning, reason, message.clone()).await;
        let mut status = json!({
            "phase": "Failed",
            "message": message,
            "completionTime": Timestamp::now().to_string(),
            "conditions": [ready_condition(false, reason, &message, self.generation)],
        });
        if !started {
            status["startTime"] = Value::Null;
        }
        self.patch(status).await?;
        Ok(Action::await_change())
    }

    /// Claims the run: InProgress, conditional on the resourceVersion decided from.
    async fn claim(&self, requester: &Requester, location: &Resolved) -> Result<bool> {
        self.patch_if_unchanged(json!({
            "phase": "InProgress",
            "requestedBy": requester.user,
            "location": location.display(),
            "startTime": Timestamp::now().to_string(),
            "conditions": [ready_condition(false, "Running", "the run is under way", self.generation)],
        }))
        .await
    }

    /// A request found InProgress when deciding again: the controller stopped during its run.
    async fn interrupted(&self) -> Result<Action> {
        let message = format!(
            "the {} was interrupted: the controller stopped during its run; create a new one to run it again",
            self.kind
        );
        let status = json!({
            "phase": "Failed",
            "message": message,
            "completionTime": Timestamp::now().to_string(),
            "conditions": [ready_condition(false, "Interrupted", &message, self.generation)],
        });
        if !self.patch_if_unchanged(status).await? {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        self.ctx.event(&self.reference, EventType::Warning, "Interrupted", message).await;
        Ok(Action::await_change())
    }

    /// Writes the outcome of a run in one status patch, with `extra` fields (final progress, the
    /// record's name) merged in.
    async fn finish(
        &self,
        phase: Phase,
        message: String,
        errors: &[String],
        warnings: &[String],
        extra: Value,
    ) -> Result<Action> {
        let keep = |v: &[String]| -> Vec<String> {
            v.iter().take(MAX_MESSAGES).map(|m| kubectl_backup_core::error::redact(m)).collect()
        };
        let ready = phase == Phase::Completed;
        let message = kubectl_backup_core::error::redact(&message);
        let mut status = json!({
            "phase": phase.to_string(),
            "message": message,
            "completionTime": Timestamp::now().to_string(),
            "errors": keep(errors),
            "warnings": keep(warnings),
            "conditions": [ready_condition(ready, &phase.to_string(), &message, self.generation)],
        });
        if let (Some(status), Value::Object(extra)) = (status.as_object_mut(), extra) {
            status.extend(extra);
        }
        self.patch(status).await?;
        Ok(Action::await_change())
    }

    /// Resolves the location a request names (default: the controller's).
    async fn location(&self, given: Option<&str>) -> Result<Resolved> {
        match given {
            Some(l) => {
                locations::resolve(Some(&self.ctx.cluster.client), &self.ctx.namespace, Some(l), &Default::default())
                    .await
            }
            None => Ok(self.ctx.location.clone()),
        }
    }

    /// Writes `progress` to the status every [`PROGRESS_EVERY`] while it changes, until dropped.
    fn report_progress(&self, progress: Arc<Counter>) -> ProgressTask {
        let (api, name) = (self.api.clone(), self.name.clone());
        ProgressTask(tokio::spawn(async move {
            let mut last = RequestProgress::default();
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let now = progress.get();
                if now != last {
                    let patch = json!({"status": {"progress": now}});
                    if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                        tracing::debug!(request = %name, error = %e, "could not write progress");
                    }
                    last = now;
                }
            }
        }))
    }
}

/// Stops the progress writer when the run ends.
struct ProgressTask(tokio::task::JoinHandle<()>);

impl Drop for ProgressTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Objects done, of how many, as the engine reports them.
#[derive(Default)]
struct Counter {
    total: AtomicU64,
    done: AtomicU64,
}

impl Counter {
    fn get(&self) -> RequestProgress {
        RequestProgress {
            total_items: self.total.load(Ordering::Relaxed),
            items_done: self.done.load(Ordering::Relaxed),
        }
    }
}

impl Observer for Counter {
    fn event(&self, event: Progress) {
        match event {
            Progress::Archived { items, .. } => {
                self.done.store(items, Ordering::Relaxed);
                self.total.fetch_max(items, Ordering::Relaxed);
            }
            Progress::RestorePlanned { total } => self.total.store(total, Ordering::Relaxed),
            Progress::Restored { done, total } => {
                self.done.store(done, Ordering::Relaxed);
                self.total.store(total, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

async fn reconcile_backup(b: Arc<BackupRequest>, ctx: Arc<Context>) -> Result<Action> {
    let h = Handling::new(&*b, b.status.as_ref(), "Backup", ctx.clone());
    let requester = match h.begin(&b, BACKUP_RESOURCE, &spec_digest(&b.spec)).await? {
        Ok(r) => r,
        Err(action) => return Ok(action),
    };
    let spec = &b.spec;
    let accepted = confine("Backup", &h.ns, &ctx.namespace, &spec.filters, spec.etcd.is_some())
        .and_then(|f| tenant_location("Backup", &h.ns, &ctx.namespace, spec.location.as_deref()).map(|()| f));
    let filters = match accepted {
        Ok(f) => f,
        Err(why) => return h.fail("Refused", why, false).await,
    };
    if let Some(why) = read_only_location(&ctx, spec.location.as_deref()).await {
        return h.fail("Refused", why, false).await;
    }
    let location = match h.location(spec.location.as_deref()).await.and_then(|l| l.ensure_writable().map(|()| l)) {
        Ok(l) => l,
        Err(e) => return h.fail("LocationUnavailable", e.to_string(), false).await,
    };
    if !h.claim(&requester, &location).await? {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ttl = spec.ttl.clone().unwrap_or_else(|| DEFAULT_TTL.to_string());
    let counter = Arc::new(Counter::default());
    let _progress = h.report_progress(counter.clone());
    if let Some(etcd) = &spec.etcd {
        let run = EtcdRun {
            namespace: &h.ns,
            etcd,
            location: &location,
            name: &h.name,
            ttl: &ttl,
            schedule: None,
            trigger: "request",
            source: None,
            reference: &h.reference,
        };
        return match ctx.etcd_backup(run).await {
            Ok(e) => {
                let bytes = e.status.archive.as_ref().map_or(0, |a| a.size);
                let message = format!("etcd backup {} Completed: {bytes} bytes", h.name);
                h.finish(Phase::Completed, message, &[], &[], Value::Null).await
            }
            Err(e) => h.fail("BackupFailed", e.to_string(), true).await,
        };
    }
    let backup_spec = BackupSpec {
        filters,
        ttl: Some(ttl),
        storage_location: Some(location.display()),
        schedule: Some(format!("request {}/{}", h.ns, h.name)),
        incremental: location.incremental,
        include_volumes: spec.include_volumes.unwrap_or(location.include_volumes),
        ..Default::default()
    };
    let run = ObjectRun {
        location: &location,
        name: &h.name,
        spec: backup_spec,
        trigger: "request",
        source: None,
        reference: &h.reference,
        observer: Some(counter.clone()),
        requester: Some(&requester),
        watched: None,
    };
    match ctx.backup(run).await {
        Ok(done) => {
            let s = &done.status;
            let progress =
                RequestProgress { total_items: s.progress.total_items, items_done: s.progress.items_backed_up };
            let message = format!(
                "backup {} {}: {} objects, {} namespaces",
                h.name,
                s.phase,
                s.progress.items_backed_up,
                s.namespaces.len()
            );
            h.finish(s.phase, message, &s.errors, &s.warnings, json!({"progress": progress})).await
        }
        Err(e) => h.fail("BackupFailed", e.to_string(), true).await,
    }
}

async fn reconcile_restore(r: Arc<RestoreRequest>, ctx: Arc<Context>) -> Result<Action> {
    let h = Handling::new(&*r, r.status.as_ref(), "Restore", ctx.clone());
    let requester = match h.begin(&r, RESTORE_RESOURCE, &spec_digest(&r.spec)).await? {
        Ok(r) => r,
        Err(action) => return Ok(action),
    };
    let filters = match confine_restore(&h.ns, &ctx.namespace, &r.spec) {
        Ok(f) => f,
        Err(why) => return h.fail("Refused", why, false).await,
    };
    let location = match h.location(r.spec.location.as_deref()).await {
        Ok(l) => l,
        Err(e) => return h.fail("LocationUnavailable", e.to_string(), false).await,
    };
    let cluster = match ctx.acting_as(&requester) {
        Ok(c) => c,
        Err(e) => return h.fail("Unverified", e.to_string(), false).await,
    };
    if !h.claim(&requester, &location).await? {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let backup = &r.spec.backup_name;
    let user = &requester.user;
    let note = format!("restoring backup {backup} from {} as {user}", location.display());
    ctx.event(&h.reference, EventType::Normal, "RestoreStarted", note).await;
    let spec = RestoreSpec {
        backup_name: backup.clone(),
        filters,
        namespace_mapping: r.spec.namespace_mapping.clone(),
        existing_resource_policy: r.spec.existing_resource_policy.unwrap_or_default(),
        // Volume data is restored by the plugin only, for now (docs/volumes.md): the controller
        // restores the objects.
        skip_volume_data: true,
        ..Default::default()
    };
    let counter = Arc::new(Counter::default());
    let _progress = h.report_progress(counter.clone());
    let log = RunLog::new(counter.clone());
    log.line(format_args!("restore {}/{} of backup {backup} started as {user}", h.ns, h.name));
    let record_name = timestamped_name(&h.name, Timestamp::now());
    let result = restore::run(&cluster, &location.store, &record_name, spec, log.clone()).await;
    let done = match result {
        Ok(done) => done,
        Err(e) => {
            let message = format!("restore of backup {backup} failed: {e}");
            return h.fail("RestoreFailed", message, true).await;
        }
    };
    let s = &done.status;
    let progress = RequestProgress { total_items: s.progress.total_items, items_done: s.progress.items_restored };
    let mut message = format!("restore of backup {backup} {}: {}", s.phase, s.counts.summary());
    if location.ensure_writable().is_ok() {
        match record::save(&location.store, &done, &log).await {
            Ok(()) => message.push_str(&format!("; log: kubectl backup logs restore/{record_name}")),
            Err(e) => {
                tracing::warn!(restore = %record_name, error = %e, "could not record the restore in the location")
            }
        }
    }
    let kind = if s.phase == Phase::Completed { EventType::Normal } else { EventType::Warning };
    ctx.event(&h.reference, kind, "RestoreCompleted", message.clone()).await;
    let errors: Vec<String> = s
        .items
        .iter()
        .filter(|i| i.action == kubectl_backup_core::model::ItemAction::Failed)
        .map(|i| i.failure())
        .chain(s.errors.iter().cloned())
        .collect();
    h.finish(s.phase, message, &errors, &s.warnings, json!({"progress": progress, "record": record_name})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_runs_only_as_created_with_its_own_mark() {
        use crate::mark::{Key, MARK_ANNOTATION, Mark};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let key = Key::new(&[5; 32]);
        let at: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let spec = RestoreRequestSpec { backup_name: "b".into(), ..Default::default() };
        let sign = |name: &str, spec: &RestoreRequestSpec| {
            key.sign(&Mark {
                kind: RESTORE_RESOURCE.into(),
                namespace: Some("team-a".into()),
                name: name.into(),
                requester: Requester { user: "alice".into(), ..Default::default() },
                at,
                ignored: vec![],
                spec: Some(spec_digest(spec)),
            })
        };
        let meta = |mark: String| kube::api::ObjectMeta {
            annotations: Some([(MARK_ANNOTATION.to_string(), mark)].into()),
            creation_timestamp: Some(Time(at)),
            ..Default::default()
        };
        let check = |m: &kube::api::ObjectMeta, s: &RestoreRequestSpec| {
            requester(&key, m, "Restore", RESTORE_RESOURCE, "team-a", "r1", &spec_digest(s))
        };
        assert_eq!(check(&meta(sign("r1", &spec)), &spec).unwrap().user, "alice");
        // Edited after admission: refused.
        let edited = RestoreRequestSpec { backup_name: "someone-elses".into(), ..Default::default() };
        let err = check(&meta(sign("r1", &spec)), &edited).unwrap_err();
        assert!(err.contains("spec was changed after it was created"), "{err}");
        // A mark made for another request: refused.
        let err = check(&meta(sign("r2", &spec)), &spec).unwrap_err();
        assert!(err.contains("not valid") && err.contains("made for"), "{err}");
        // No mark at all.
        let err = check(&kube::api::ObjectMeta::default(), &spec).unwrap_err();
        assert!(err.contains("carries no mark"), "{err}");
    }

    #[test]
    fn tenant_restores_stay_in_their_namespace() {
        let spec = |f: Filters, mapping: &[(&str, &str)], location: Option<&str>| RestoreRequestSpec {
            backup_name: "b".into(),
            filters: f,
            namespace_mapping: mapping.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            location: location.map(str::to_string),
            ..Default::default()
        };
        let own = confine_restore("team-a", "kubectl-backup", &spec(Filters::default(), &[], None)).unwrap();
        assert_eq!(own.included_namespaces, vec!["team-a"]);
        assert_eq!(own.include_cluster_resources, ClusterResources::Never);
        assert!(own.excluded_resources.contains(&"namespaces".to_string()));
        let other = Filters { included_namespaces: vec!["team-b".into()], ..Default::default() };
        let err = confine_restore("team-a", "kubectl-backup", &spec(other, &[], None)).unwrap_err();
        assert!(err.contains("a Restore in namespace \"team-a\" may back up only"), "{err}");
        let err = confine_restore("team-a", "kubectl-backup", &spec(Filters::default(), &[("team-b", "team-a")], None))
            .unwrap_err();
        assert!(err.contains("may not map namespaces"), "{err}");
        let err =
            confine_restore("team-a", "kubectl-backup", &spec(Filters::default(), &[], Some("s3://b/p"))).unwrap_err();
        assert!(err.contains("may name only a BackupLocation"), "{err}");
        // The install namespace is the admins'.
        let admin = spec(Filters::default(), &[("a", "b")], Some("s3://b/p"));
        assert_eq!(confine_restore("kubectl-backup", "kubectl-backup", &admin).unwrap(), Filters::default());
    }
}
