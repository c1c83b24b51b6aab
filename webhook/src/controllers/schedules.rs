//! Runs each BackupSchedule on time: one backup at a time per schedule, a run missed while the
//! controller was down runs once on start, status records the last and next run and the last
//! result, and Events mark BackupStarted, BackupUploading, BackupCompleted / BackupFailed.
//!
//! Confinement: a schedule outside the install namespace backs up only its own namespace, so a user
//! who may create schedules in one namespace cannot reach another through the controller.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use kubectl_backup_core::crd::{BackupSchedule, BackupScheduleSpec, BackupScheduleStatus};
use kubectl_backup_core::input::timestamped_name;
use kubectl_backup_core::locations;
use kubectl_backup_core::model::{BackupSpec, ClusterResources, Filters, Phase};
use kubectl_backup_core::schedule::Schedule;
use kubectl_backup_core::{Error, Result};
use serde_json::json;

use super::{Context, EtcdRun, ObjectRun};
use crate::metrics::SourceLabel;

/// Longest wait between reconciles of a schedule (a safety net against missed watch events).
const MAX_WAIT: Duration = Duration::from_secs(300);
const DEFAULT_TTL: &str = "720h";

pub async fn run(ctx: Arc<Context>) {
    let api: Api<BackupSchedule> = Api::all(ctx.cluster.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "schedule reconcile");
            }
        })
        .await;
}

fn error_policy(_: Arc<BackupSchedule>, e: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "schedule reconcile failed; retrying in 30s");
    Action::requeue(Duration::from_secs(30))
}

/// The filters a schedule may use, or why it is refused.
pub fn confine(
    kind: &str,
    namespace: &str,
    install_namespace: &str,
    filters: &Filters,
    etcd: bool,
) -> std::result::Result<Filters, String> {
    if namespace == install_namespace {
        return Ok(filters.clone());
    }
    if etcd {
        return Err(format!("etcd backups are allowed only in the install namespace {install_namespace:?}"));
    }
    let mut f = filters.clone();
    match f.included_namespaces.as_slice() {
        [] => f.included_namespaces = vec![namespace.to_string()],
        [only] if only == namespace => {}
        other => {
            return Err(format!(
                "a {kind} in namespace {namespace:?} may back up only {namespace:?}, not {other:?}; those for other namespaces belong in {install_namespace:?}"
            ));
        }
    }
    if f.include_cluster_resources == ClusterResources::Always {
        return Err(format!(
            "a {kind} in namespace {namespace:?} may not include every cluster-scoped resource (includeClusterResources: Always)"
        ));
    }
    Ok(f)
}

/// Outside the install namespace, a `kind` (BackupSchedule, Backup, Restore) may name only a
/// BackupLocation, which an admin made: a URL would be opened with the controller's own
/// credentials (any bucket, any prefix).
pub fn tenant_location(
    kind: &str,
    namespace: &str,
    install_namespace: &str,
    location: Option<&str>,
) -> std::result::Result<(), String> {
    match location {
        Some(l) if namespace != install_namespace && !locations::is_name(l) => Err(format!(
            "a {kind} in namespace {namespace:?} may name only a BackupLocation, not the URL {:?}; ask an admin to add one (kubectl backup location add)",
            kubectl_backup_core::error::redact(l)
        )),
        _ => Ok(()),
    }
}

/// What a schedule outside the install namespace may not do, beyond [`confine`]: name a location
/// by URL (which the controller would open with its own credentials: any bucket, any prefix) —
/// only a BackupLocation, which an admin made —, or fire more often than `min_interval`.
pub fn tenant_rules(
    namespace: &str,
    install_namespace: &str,
    spec: &kubectl_backup_core::crd::BackupScheduleSpec,
    schedule: &Schedule,
    min_interval: Duration,
) -> std::result::Result<(), String> {
    if namespace == install_namespace {
        return Ok(());
    }
    tenant_location("BackupSchedule", namespace, install_namespace, spec.location.as_deref())?;
    // The shortest gap between the next runs (a cron such as "0,1 2 * * *" is short only once a day).
    let mut at = Timestamp::now();
    let mut prev: Option<Timestamp> = None;
    let mut shortest: Option<jiff::SignedDuration> = None;
    for _ in 0..64 {
        let Some(next) = schedule.next_after(at, prev) else { break };
        if let Some(p) = prev {
            let gap = next.duration_since(p);
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
        }
        prev = Some(next);
        at = next;
    }
    let min = jiff::SignedDuration::try_from(min_interval).unwrap_or(jiff::SignedDuration::MAX);
    match shortest {
        Some(gap) if gap < min => Err(format!(
            "schedule {:?} fires every {}s at times; schedules outside {install_namespace:?} may fire at most every {}s (--min-schedule-interval)",
            spec.schedule,
            gap.as_secs(),
            min.as_secs()
        )),
        _ => Ok(()),
    }
}

/// Why the BackupLocation a schedule names may not be written to, if it may not: schedules write.
pub(crate) async fn read_only_location(ctx: &Context, location: Option<&str>) -> Option<String> {
    let name = location.filter(|l| locations::is_name(l))?;
    let api: Api<kubectl_backup_core::crd::BackupLocation> =
        Api::namespaced(ctx.cluster.client.clone(), &ctx.namespace);
    match api.get_opt(name).await {
        Ok(Some(bl)) if bl.spec.access_mode == kubectl_backup_core::crd::AccessMode::ReadOnly => {
            Some(format!("BackupLocation {name:?} is ReadOnly: backups are never written to it"))
        }
        _ => None,
    }
}

pub(crate) fn ready_condition(
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: kubectl_backup_core::error::redact(message),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        observed_generation: generation,
    }
}

async fn patch_status(api: &Api<BackupSchedule>, name: &str, status: serde_json::Value) -> Result<BackupSchedule> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
        .await
        .map_err(|e| Error::kube(format!("updating the status of schedule {name}"), e))
}

/// Claims a due run before taking it: a status patch conditional on the resourceVersion this
/// reconcile decided from. A reconcile that decided from a stale cache (its own earlier status
/// patch not yet seen) or lost a race with another replica gets 409 and takes nothing: a missed
/// run is taken once, never twice. The claim is `activeRun`; `lastResult` keeps saying how the last
/// finished run went. False when the claim lost.
async fn claim_run(
    api: &Api<BackupSchedule>,
    name: &str,
    resource_version: Option<String>,
    backup: &str,
) -> Result<bool> {
    let claim = json!({
        "metadata": { "resourceVersion": resource_version },
        "status": { "activeRun": backup },
    });
    match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&claim)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("claiming the run of schedule {name}"), e)),
    }
}

/// Refuses a schedule it may not run; otherwise decides whether a run is due, claims it with the
/// resourceVersion it decided from, takes it and writes the status.
async fn reconcile(s: Arc<BackupSchedule>, ctx: Arc<Context>) -> Result<Action> {
    let r = Reconciling::new(&s, ctx);
    if s.spec.paused {
        if r.status.next_run_time.is_some() {
            patch_status(&r.api, &r.name, json!({"nextRunTime": null})).await?;
        }
        return Ok(Action::await_change());
    }
    let (schedule, filters) = match r.accept(&s).await {
        Ok(accepted) => accepted,
        Err(reason) => return r.refuse(reason).await,
    };
    let resource_version = r.mark_ready(s.resource_version()).await?;
    let now = Timestamp::now();
    let created = s.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let last_run = r.status.last_run_time.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let Some(next) = schedule.next_run(created, last_run) else {
        return r.refuse(format!("the schedule {:?} never fires", s.spec.schedule)).await;
    };
    if next > now {
        return r.wait_for(next, now).await;
    }
    // Due (or missed while down: runs once).
    r.take_run(&s, &schedule, filters, now, resource_version).await
}

/// One reconcile of a schedule: where its status goes, and its status as this reconcile found it.
struct Reconciling {
    ctx: Arc<Context>,
    api: Api<BackupSchedule>,
    ns: String,
    name: String,
    reference: ObjectReference,
    generation: Option<i64>,
    status: BackupScheduleStatus,
}

impl Reconciling {
    fn new(s: &BackupSchedule, ctx: Arc<Context>) -> Reconciling {
        let ns = s.namespace().unwrap_or_default();
        let api = Api::namespaced(ctx.cluster.client.clone(), &ns);
        Reconciling {
            api,
            ns,
            name: s.name_any(),
            reference: s.object_ref(&()),
            generation: s.metadata.generation,
            status: s.status.clone().unwrap_or_default(),
            ctx,
        }
    }

    /// The schedule and the filters it may use, or why it is refused.
    async fn accept(&self, s: &BackupSchedule) -> std::result::Result<(Schedule, Filters), String> {
        let ctx = &self.ctx;
        let schedule = Schedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref()).map_err(|e| e.to_string())?;
        let filters = confine("BackupSchedule", &self.ns, &ctx.namespace, &s.spec.filters, s.spec.etcd.is_some())?;
        tenant_rules(&self.ns, &ctx.namespace, &s.spec, &schedule, ctx.min_schedule_interval)?;
        if let Some(reason) = read_only_location(ctx, s.spec.location.as_deref()).await {
            return Err(reason);
        }
        Ok((schedule, filters))
    }

    /// Marks the schedule refused (Ready False, an Event) unless it already is, for this reason.
    async fn refuse(&self, reason: String) -> Result<Action> {
        if self.status.last_error.as_deref() != Some(reason.as_str()) {
            self.ctx.event(&self.reference, EventType::Warning, "ScheduleRefused", reason.clone()).await;
            let ready = ready_condition(false, "Refused", &reason, self.generation);
            patch_status(
                &self.api,
                &self.name,
                json!({"lastError": reason, "nextRunTime": null, "conditions": [ready]}),
            )
            .await?;
        }
        Ok(Action::await_change())
    }

    /// Marks the schedule accepted (Ready True) unless it already is. Returns the resourceVersion
    /// to claim a run with: `resource_version`, or that of this status patch.
    async fn mark_ready(&self, resource_version: Option<String>) -> Result<Option<String>> {
        if self.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
            return Ok(resource_version);
        }
        // Accepted (again): clear a refusal that was fixed.
        let ready = ready_condition(true, "Scheduled", "the schedule is accepted", self.generation);
        let updated = patch_status(&self.api, &self.name, json!({"lastError": null, "conditions": [ready]})).await?;
        Ok(updated.resource_version())
    }

    /// Records `next` as the next run time and waits for it, at most [`MAX_WAIT`].
    async fn wait_for(&self, next: Timestamp, now: Timestamp) -> Result<Action> {
        if self.status.next_run_time.as_deref() != Some(next.to_string().as_str()) {
            patch_status(&self.api, &self.name, json!({"nextRunTime": next.to_string()})).await?;
        }
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or(MAX_WAIT).min(MAX_WAIT);
        Ok(Action::requeue(wait))
    }

    /// Claims the run due at `now`, takes the backup, and records its result and the next run time.
    async fn take_run(
        &self,
        s: &BackupSchedule,
        schedule: &Schedule,
        filters: Filters,
        now: Timestamp,
        resource_version: Option<String>,
    ) -> Result<Action> {
        let (ns, name, status) = (&self.ns, &self.name, &self.status);
        let prefix = s.spec.name_prefix.clone().unwrap_or_else(|| name.clone());
        let backup_name = timestamped_name(&prefix, now);
        if !claim_run(&self.api, name, resource_version, &backup_name).await? {
            tracing::debug!(schedule = %format!("{ns}/{name}"), "run claimed from a stale view; deciding again");
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        if let Some(interrupted) = &status.active_run {
            let message = format!("{interrupted} was interrupted (the controller stopped during it); running again");
            self.ctx.event(&self.reference, EventType::Warning, "BackupInterrupted", message).await;
        }
        let run = Run { reconciling: self, backup_name: &backup_name, source: SourceLabel::schedule(ns, name) };
        let outcome = run.once(&s.spec, filters).await;
        let mut st = after_run(status, now, &backup_name, outcome);
        let next = schedule.next_after(now, Some(now));
        st.next_run_time = next.map(|t| t.to_string());
        let mut patch = serde_json::to_value(&st).unwrap_or_default();
        patch["activeRun"] = serde_json::Value::Null;
        if st.last_error.is_none() {
            patch["lastError"] = serde_json::Value::Null;
        }
        patch_status(&self.api, name, patch).await?;
        // A run longer than the interval leaves the next one already due: decide again at once.
        let wait = next
            .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_WAIT);
        Ok(Action::requeue(wait.min(MAX_WAIT)))
    }
}

/// The status after the run `backup_name`, started at `now`: its result and first error (redacted),
/// and the last success as it was unless this run completed.
fn after_run(
    status: &BackupScheduleStatus,
    now: Timestamp,
    backup_name: &str,
    outcome: Result<(Phase, Option<String>)>,
) -> BackupScheduleStatus {
    let mut st = BackupScheduleStatus {
        last_run_time: Some(now.to_string()),
        last_backup: Some(backup_name.to_string()),
        last_success_time: status.last_success_time.clone(),
        ..Default::default()
    };
    match outcome {
        Ok((phase, first_error)) => {
            st.last_result = Some(phase.to_string());
            st.last_error = first_error;
            if phase == Phase::Completed {
                st.last_success_time = Some(Timestamp::now().to_string());
            }
        }
        Err(e) => {
            st.last_result = Some(Phase::Failed.to_string());
            st.last_error = Some(e.to_string());
        }
    }
    st.last_error = st.last_error.map(|e| kubectl_backup_core::error::redact(&e));
    // No conditions: the merge patch keeps the server's, which this reconcile may just have set.
    st
}

/// One run of a schedule: the backup it takes and the source its metrics are labelled with.
struct Run<'a> {
    reconciling: &'a Reconciling,
    backup_name: &'a str,
    source: SourceLabel,
}

impl Run<'_> {
    /// Takes the backup. Returns its phase and first error.
    async fn once(&self, spec: &BackupScheduleSpec, filters: Filters) -> Result<(Phase, Option<String>)> {
        let Reconciling { ctx, ns, name, reference, .. } = self.reconciling;
        let location = match &spec.location {
            Some(l) => {
                locations::resolve(Some(&ctx.cluster.client), &ctx.namespace, Some(l), &Default::default()).await?
            }
            None => ctx.location.clone(),
        };
        location.ensure_writable()?;
        let ttl = spec.ttl.clone().unwrap_or_else(|| DEFAULT_TTL.to_string());
        if let Some(etcd) = &spec.etcd {
            let run = EtcdRun {
                namespace: ns,
                etcd,
                location: &location,
                name: self.backup_name,
                ttl: &ttl,
                schedule: Some(format!("{ns}/{name}")),
                trigger: "schedule",
                source: Some(&self.source),
                reference,
            };
            ctx.etcd_backup(run).await?;
            return Ok((Phase::Completed, None));
        }
        let spec = BackupSpec {
            filters,
            ttl: Some(ttl),
            storage_location: Some(location.display()),
            schedule: Some(format!("{ns}/{name}")),
            incremental: location.incremental,
            include_volumes: spec.include_volumes.unwrap_or(location.include_volumes),
            ..Default::default()
        };
        let run = ObjectRun {
            location: &location,
            name: self.backup_name,
            spec,
            trigger: "schedule",
            source: Some(&self.source),
            reference,
            observer: None,
            requester: None,
            watched: None,
        };
        let b = ctx.backup(run).await?;
        Ok((b.status.phase, b.status.errors.first().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_outside_the_install_namespace_are_confined() {
        let none = Filters::default();
        assert_eq!(
            confine("BackupSchedule", "team-a", "kubectl-backup", &none, false).unwrap().included_namespaces,
            vec!["team-a"]
        );
        let own = Filters { included_namespaces: vec!["team-a".into()], ..Default::default() };
        assert!(confine("BackupSchedule", "team-a", "kubectl-backup", &own, false).is_ok());
        let other = Filters { included_namespaces: vec!["team-b".into()], ..Default::default() };
        let err = confine("BackupSchedule", "team-a", "kubectl-backup", &other, false).unwrap_err();
        assert!(err.contains("may back up only") && err.contains("team-b"), "{err}");
        let glob = Filters { included_namespaces: vec!["*".into()], ..Default::default() };
        assert!(confine("BackupSchedule", "team-a", "kubectl-backup", &glob, false).is_err());
        let cluster = Filters { include_cluster_resources: ClusterResources::Always, ..Default::default() };
        assert!(confine("BackupSchedule", "team-a", "kubectl-backup", &cluster, false).is_err());
        assert!(confine("BackupSchedule", "team-a", "kubectl-backup", &none, true).unwrap_err().contains("etcd"));
        // The install namespace is not confined.
        assert_eq!(confine("BackupSchedule", "kubectl-backup", "kubectl-backup", &other, true).unwrap(), other);
    }

    #[test]
    fn tenants_name_locations_and_fire_no_more_often_than_allowed() {
        use kubectl_backup_core::crd::BackupScheduleSpec;
        let five = Duration::from_secs(300);
        let spec = |schedule: &str, location: Option<&str>| BackupScheduleSpec {
            schedule: schedule.into(),
            location: location.map(str::to_string),
            ..Default::default()
        };
        let check = |s: &BackupScheduleSpec, ns: &str| {
            tenant_rules(ns, "kubectl-backup", s, &Schedule::parse(&s.schedule, None).unwrap(), five)
        };
        assert!(check(&spec("@daily", Some("primary")), "team-a").is_ok());
        let err = check(&spec("@daily", Some("s3://other-bucket/x?sig=abc")), "team-a").unwrap_err();
        assert!(err.contains("only a BackupLocation") && !err.contains("abc"), "{err}");
        let err = check(&spec("* * * * *", None), "team-a").unwrap_err();
        assert!(err.contains("every 60s") && err.contains("300s"), "{err}");
        // Short only once a day still counts.
        assert!(check(&spec("0,1 2 * * *", None), "team-a").is_err());
        assert!(check(&spec("*/5 * * * *", None), "team-a").is_ok());
        // The install namespace is the admins'.
        assert!(check(&spec("* * * * *", Some("s3://b/p")), "kubectl-backup").is_ok());
    }
}
