//! Controllers that run beside the admission server, in the same process. They call the same
//! engine functions the CLI calls; durable state lives in the cluster (annotations, status) and in
//! the store.
//!
//! - [`restore`] — auto-restore of new workspaces, catch-up after downtime
//! - [`schedules`] — BackupSchedules on time, with events and status
//! - [`expiry`] — deletes expired backups
//! - [`health`] — checks each BackupLocation and writes its status
//! - [`continuous`] — a backup of a workspace after its objects change
//! - [`requests`] — Backup and Restore resources, each run once

pub mod continuous;
pub mod discovery;
pub mod expiry;
pub mod health;
pub mod requests;
pub mod restore;
pub mod schedules;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kubectl_backup_core::backup;
use kubectl_backup_core::crd::EtcdScheduleSource;
use kubectl_backup_core::etcd::{self, EtcdBackup, EtcdBackupSpec, EtcdBackupType, EtcdSource};
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::locations::Resolved;
use kubectl_backup_core::model::{Backup, BackupSpec};
use kubectl_backup_core::progress::{Event as Progress, Observer, Quiet};
use kubectl_backup_core::volume::MoverAccess;

use crate::admission::Policy;
use crate::index::Index;
use crate::mark::{Key, Requester};
use crate::metrics::{BackupLabel, Metrics, SourceLabel, TriggerLabel};

/// What every controller shares.
pub struct Context {
    pub cluster: Cluster,
    /// The location given to the webhook (`--location`), used when nothing else is named.
    pub location: Resolved,
    pub policy: Arc<Policy>,
    pub index: Arc<Index>,
    pub metrics: Arc<Metrics>,
    /// The namespace of the webhook: its BackupLocations and unconfined schedules live here.
    pub namespace: String,
    pub reporter: String,
    /// Signs and verifies the webhook's marks on new workspaces.
    pub key: Arc<Key>,
    /// The controller's own client configuration; restores impersonate on top of it.
    pub kube_config: kube::Config,
    /// Whom catch-up restores act as (`--catch-up-identity`); none: they are not restored.
    pub catch_up_identity: Option<String>,
    /// Schedules outside the install namespace may not fire more often (`--min-schedule-interval`).
    pub min_schedule_interval: std::time::Duration,
    /// Whom the mover Pods of schedules and continuous backups act as (`--volume-identity`).
    pub volume_identity: Option<String>,
    /// The image of mover Pods and their bandwidth (`--mover-image`, `--mover-bandwidth`).
    pub mover: kubectl_backup_core::volume::MoverSettings,
}

impl Context {
    /// A client acting as `requester` (impersonation: user, groups and extras), so the API server
    /// applies that person's RBAC and admission to everything the restore writes.
    pub fn acting_as(&self, requester: &Requester) -> kubectl_backup_core::Result<Cluster> {
        if requester.user.is_empty() {
            return Err(kubectl_backup_core::Error::Other("the mark names no user to restore as".into()));
        }
        let mut cfg = self.kube_config.clone();
        cfg.auth_info.impersonate = Some(requester.user.clone());
        cfg.auth_info.impersonate_groups = Some(requester.groups.clone()).filter(|g| !g.is_empty());
        cfg.auth_info.impersonate_user_extra = Some(requester.extra.clone().into_iter().collect())
            .filter(|e: &std::collections::HashMap<_, _>| !e.is_empty());
        Cluster::from_config(cfg, self.cluster.throttle.clone())
    }

    /// Who creates a backup's mover Pods: the requester, else `--volume-identity`; never the
    /// controller itself, whose rights would let anyone who can write a schedule read any claim.
    pub fn mover_access(&self, requester: Option<&Requester>) -> MoverAccess {
        let requester = match (requester, &self.volume_identity) {
            (Some(r), _) => r.clone(),
            (None, Some(user)) => Requester { user: user.clone(), ..Default::default() },
            (None, None) => {
                return MoverAccess::Refused(
                    "the controller moves volume data only as an identity the admin names (backup-webhook --volume-identity, docs/volumes.md), and none is set".into(),
                );
            }
        };
        match self.acting_as(&requester) {
            Ok(cluster) => MoverAccess::As(cluster),
            Err(e) => MoverAccess::Refused(format!("cannot act as {}: {e}", requester.user)),
        }
    }

    /// Publishes an Event about `reference`. Failures are logged, never fatal.
    /// The reference Events about namespace `name` are recorded under (in that namespace, so
    /// `kubectl get events -n NAME` shows them).
    pub fn namespace_reference(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(name.into()),
            namespace: Some(name.into()),
            ..Default::default()
        }
    }

    pub async fn event(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
        self.clone_for_events().publish(reference, type_, reason, note).await;
    }

    /// Runs one object backup for a controller: progress events on `run.reference`, metrics, and
    /// an index refresh so the webhook sees the new backup at once.
    pub async fn backup(&self, run: ObjectRun<'_>) -> kubectl_backup_core::Result<Backup> {
        let ObjectRun { location, name, mut spec, trigger, source, reference, observer, requester, watched } = run;
        let movers = if spec.include_volumes { self.mover_access(requester) } else { MoverAccess::Reader };
        // The image and bandwidth are the controller's; a time limit is the caller's.
        spec.mover =
            kubectl_backup_core::volume::MoverSettings { time_limit: spec.mover.time_limit, ..self.mover.clone() };
        let start = Instant::now();
        self.event(
            reference,
            EventType::Normal,
            "BackupStarted",
            format!("backup {name} started to {}", location.display()),
        )
        .await;
        let uploading = Arc::new(UploadingOnce {
            ctx: self.clone_for_events(),
            reference: reference.clone(),
            name: name.to_string(),
            task: Default::default(),
            inner: observer,
        });
        let observer: Arc<dyn Observer> = uploading.clone();
        let result =
            backup::run_with_movers(&self.cluster, &location.store, name, spec, observer, &movers, watched).await;
        // BackupUploading is published when the upload starts; make sure it lands before the end.
        let task = uploading.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        let t = TriggerLabel { trigger: trigger.into() };
        self.metrics.backup_seconds.get_or_create(&t).observe(start.elapsed().as_secs_f64());
        match &result {
            Ok(b) => {
                let phase = b.status.phase.to_string();
                self.metrics
                    .backups
                    .get_or_create(&BackupLabel { trigger: trigger.into(), result: phase.clone() })
                    .inc();
                self.metrics.backup_bytes.get_or_create(&t).inc_by(b.bytes_stored());
                self.metrics.backup_objects.get_or_create(&t).inc_by(b.status.progress.items_backed_up);
                if let Some(source) = source
                    && b.status.phase == kubectl_backup_core::model::Phase::Completed
                {
                    self.metrics.succeeded(source);
                }
                let (kind, reason) = if b.status.errors.is_empty() {
                    (EventType::Normal, "BackupCompleted")
                } else {
                    (EventType::Warning, "BackupCompleted")
                };
                let mut note = format!("backup {name} {phase}: {} objects", b.status.progress.items_backed_up);
                if let Some(e) = b.status.errors.first() {
                    note.push_str(&format!("; first error: {e}"));
                }
                self.event(reference, kind, reason, note).await;
                if let Err(e) = self.index.refresh(&self.location.store).await {
                    tracing::warn!(error = %e, "could not refresh the index after a backup");
                }
            }
            Err(e) => self.backup_failed(trigger, reference, format!("backup {name} failed: {e}")).await,
        }
        result
    }

    /// Counts a failed object backup by `trigger` and reports it on `reference` with `note`: at
    /// the end of [`Context::backup`], or for a run its caller gave up before that end.
    pub async fn backup_failed(&self, trigger: &str, reference: &ObjectReference, note: String) {
        let label = BackupLabel { trigger: trigger.into(), result: "Failed".into() };
        self.metrics.backups.get_or_create(&label).inc();
        self.event(reference, EventType::Warning, "BackupFailed", note).await;
    }

    /// Runs one etcd backup for a controller, with Events on `run.reference` and metrics. The
    /// client TLS material comes from a Secret in `run.namespace`, written to files only this
    /// process reads.
    pub async fn etcd_backup(&self, run: EtcdRun<'_>) -> kubectl_backup_core::Result<EtcdBackup> {
        let EtcdRun { namespace, etcd, location, name, ttl, schedule, trigger, source, reference } = run;
        let kind: EtcdBackupType = etcd.r#type.into();
        let dir = tempfile::tempdir().map_err(|e| kubectl_backup_core::Error::io(std::env::temp_dir(), e))?;
        let from = self.etcd_source(namespace, etcd, dir.path()).await?;
        self.event(
            reference,
            EventType::Normal,
            "BackupStarted",
            format!("etcd {} backup {name} started to {}", kind.as_str(), location.display()),
        )
        .await;
        let spec = EtcdBackupSpec {
            kind,
            endpoints: from.endpoints.clone(),
            prefix: from.prefix.clone(),
            ttl: Some(ttl.to_string()),
            location: Some(location.display()),
            schedule,
        };
        let result = etcd::run_with(&from, &location.store, name, spec, Arc::new(Quiet)).await;
        let phase = if result.is_ok() { "Completed" } else { "Failed" };
        self.metrics.backups.get_or_create(&BackupLabel { trigger: trigger.into(), result: phase.into() }).inc();
        match &result {
            Ok(b) => {
                if let Some(source) = source {
                    self.metrics.succeeded(source);
                }
                let bytes = b.status.archive.as_ref().map_or(0, |a| a.size);
                let note = format!("etcd backup {name} Completed: {bytes} bytes");
                self.event(reference, EventType::Normal, "BackupCompleted", note).await;
            }
            Err(e) => {
                let note = format!("etcd backup {name} failed: {e}");
                self.event(reference, EventType::Warning, "BackupFailed", note).await;
            }
        }
        result
    }

    /// The etcd to back up, with the client TLS files of its Secret (in `namespace`) written into
    /// `dir`.
    async fn etcd_source(
        &self,
        namespace: &str,
        etcd: &EtcdScheduleSource,
        dir: &std::path::Path,
    ) -> kubectl_backup_core::Result<EtcdSource> {
        let mut source =
            EtcdSource { endpoints: etcd.endpoints.clone(), prefix: etcd.prefix.clone(), ..Default::default() };
        if let Some(secret) = &etcd.tls_secret {
            let api: Api<Secret> = Api::namespaced(self.cluster.client.clone(), namespace);
            let sec = api
                .get(secret)
                .await
                .map_err(|e| kubectl_backup_core::Error::kube(format!("reading etcd TLS Secret {secret:?}"), e))?;
            let data = sec.data.unwrap_or_default();
            for (key, slot) in
                [("ca.crt", &mut source.ca_file), ("tls.crt", &mut source.cert_file), ("tls.key", &mut source.key_file)]
            {
                if let Some(v) = data.get(key) {
                    let path = dir.join(key);
                    std::fs::write(&path, &v.0).map_err(|e| kubectl_backup_core::Error::io(&path, e))?;
                    *slot = Some(path);
                }
            }
        }
        Ok(source)
    }
}

/// One object backup a controller takes.
pub struct ObjectRun<'a> {
    pub location: &'a Resolved,
    pub name: &'a str,
    pub spec: BackupSpec,
    /// The `trigger` label of its metrics: schedule, continuous, request.
    pub trigger: &'a str,
    /// What a completed run counts as the last success of (none for one-off requests).
    pub source: Option<&'a SourceLabel>,
    /// The object its Events are about.
    pub reference: &'a ObjectReference,
    /// Also told of the run's progress.
    pub observer: Option<Arc<dyn Observer>>,
    /// Who asked for the run (a Backup request's creator): its volume data is moved as them.
    /// None (schedules, continuous backups): as `--volume-identity`.
    pub requester: Option<&'a Requester>,
    /// What the continuous backup's watches saw change since its previous backup of the workspace.
    pub watched: Option<&'a kubectl_backup_core::collect::Watched>,
}

/// One etcd backup a controller takes.
pub struct EtcdRun<'a> {
    /// The namespace of the object asking for it (its TLS Secret lives there).
    pub namespace: &'a str,
    pub etcd: &'a EtcdScheduleSource,
    pub location: &'a Resolved,
    pub name: &'a str,
    pub ttl: &'a str,
    /// `namespace/name` of the schedule that takes it, if one does.
    pub schedule: Option<String>,
    pub trigger: &'a str,
    pub source: Option<&'a SourceLabel>,
    pub reference: &'a ObjectReference,
}

/// What publishing an event needs, detached from the Context (for a spawned task).
#[derive(Clone)]
struct EventSink {
    client: kube::Client,
    reporter: String,
}

impl EventSink {
    async fn publish(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let recorder =
            Recorder::new(self.client.clone(), Reporter { controller: self.reporter.clone(), instance: None });
        let action = if reason.starts_with("Restore") { "Restore" } else { "Backup" };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(kubectl_backup_core::error::redact(&note), 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, reference).await {
            tracing::warn!(reason, error = %e, "could not publish an event");
        }
    }
}

impl Context {
    fn clone_for_events(&self) -> EventSink {
        EventSink { client: self.cluster.client.clone(), reporter: self.reporter.clone() }
    }
}

/// Publishes BackupUploading once, when the archive upload starts.
struct UploadingOnce {
    ctx: EventSink,
    reference: ObjectReference,
    name: String,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Told of every event too.
    inner: Option<Arc<dyn Observer>>,
}

impl Observer for UploadingOnce {
    fn event(&self, event: Progress) {
        if let Some(inner) = &self.inner {
            inner.event(event.clone());
        }
        if matches!(event, Progress::Uploading { .. }) {
            let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
            if task.is_none() {
                let (ctx, reference, name) = (self.ctx.clone(), self.reference.clone(), self.name.clone());
                *task = Some(tokio::spawn(async move {
                    ctx.publish(
                        &reference,
                        EventType::Normal,
                        "BackupUploading",
                        format!("backup {name}: uploading the archive"),
                    )
                    .await;
                }));
            }
        }
    }
}

pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Every `every`: drops the metric series of schedules and workspaces that no longer exist, so the
/// number of series follows the cluster, not its history.
pub async fn forget_deleted_sources(ctx: Arc<Context>, every: std::time::Duration) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, ListParams};
    use kubectl_backup_core::crd::BackupSchedule;
    loop {
        tokio::time::sleep(every).await;
        if !ctx.metrics.has_sources() {
            // Nothing backed up yet: no series to drop, no need to list the cluster.
            continue;
        }
        let lp = ListParams::default();
        let schedules = Api::<BackupSchedule>::all(ctx.cluster.client.clone()).list_metadata(&lp).await;
        let namespaces = Api::<Namespace>::all(ctx.cluster.client.clone()).list_metadata(&lp).await;
        let (Ok(schedules), Ok(namespaces)) = (schedules, namespaces) else {
            tracing::debug!("cannot list schedules or namespaces; metric series kept until the next try");
            continue;
        };
        let live_schedules: std::collections::HashSet<(String, String)> = schedules
            .items
            .iter()
            .map(|s| (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default()))
            .collect();
        let live_namespaces: std::collections::HashSet<String> =
            namespaces.items.iter().filter_map(|n| n.metadata.name.clone()).collect();
        let dropped = ctx.metrics.forget_sources(|s| match s.kind.as_str() {
            "schedule" => live_schedules.contains(&(s.namespace.clone(), s.name.clone())),
            _ => live_namespaces.contains(&s.namespace),
        });
        if dropped > 0 {
            tracing::debug!(dropped, "metric series of deleted schedules and workspaces dropped");
        }
    }
}
