//! Prometheus metrics, served on `--metrics-addr` at /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabel {
    /// schedule or continuous
    pub trigger: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    pub trigger: String,
}

/// What a backup was of: a schedule, or a workspace's continuous backups. One series per live
/// schedule or workspace: the series of deleted ones are dropped ([`Metrics::forget_sources`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SourceLabel {
    /// `schedule` or `workspace`.
    pub kind: String,
    pub namespace: String,
    /// The schedule's name, or the workspace's (its namespace).
    pub name: String,
}

impl SourceLabel {
    pub fn schedule(namespace: &str, name: &str) -> SourceLabel {
        SourceLabel { kind: "schedule".into(), namespace: namespace.into(), name: name.into() }
    }

    pub fn workspace(namespace: &str) -> SourceLabel {
        SourceLabel { kind: "workspace".into(), namespace: namespace.into(), name: namespace.into() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: String,
}

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<DecisionLabel, Counter>,
    pub admission_seconds: Histogram,
    pub restores: Family<ResultLabel, Counter>,
    pub index_backups: Gauge,
    pub index_refresh_errors: Counter,
    pub backups: Family<BackupLabel, Counter>,
    pub backup_seconds: Family<TriggerLabel, Histogram>,
    pub backup_bytes: Family<TriggerLabel, Counter>,
    pub backup_objects: Family<TriggerLabel, Counter>,
    last_success: Family<SourceLabel, Gauge>,
    /// The label sets of `last_success`, to drop those of deleted schedules and workspaces.
    sources: std::sync::Mutex<std::collections::BTreeSet<SourceLabel>>,
    pub expired_deleted: Counter,
    pub continuous_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubectl_backup");
        let admissions = Family::<DecisionLabel, Counter>::default();
        registry.register("admission_requests", "Admission requests answered, by decision", admissions.clone());
        let admission_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            admission_seconds.clone(),
        );
        let restores = Family::<ResultLabel, Counter>::default();
        registry.register("workspace_restores", "Automatic workspace restores, by result", restores.clone());
        let index_backups = Gauge::default();
        registry.register("index_backups", "Committed backups in the index", index_backups.clone());
        let index_refresh_errors = Counter::default();
        registry.register("index_refresh_errors", "Failed refreshes of the backup index", index_refresh_errors.clone());
        let backups = Family::<BackupLabel, Counter>::default();
        registry.register("backups", "Backups taken in the cluster, by trigger and result", backups.clone());
        let backup_seconds = Family::<TriggerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.1, 2.0, 14))
        });
        registry.register("backup_duration_seconds", "Time to take a backup", backup_seconds.clone());
        let backup_bytes = Family::<TriggerLabel, Counter>::default();
        registry.register(
            "backup_bytes",
            "Bytes backups stored: archives, or what incremental backups uploaded",
            backup_bytes.clone(),
        );
        let backup_objects = Family::<TriggerLabel, Counter>::default();
        registry.register("backup_objects", "Objects backed up", backup_objects.clone());
        let last_success = Family::<SourceLabel, Gauge>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When the last successful backup of a schedule or workspace finished (Unix time)",
            last_success.clone(),
        );
        let build_info = Family::<BuildLabel, Gauge>::default();
        registry.register("build_info", "The running version (always 1)", build_info.clone());
        build_info.get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        let expired_deleted = Counter::default();
        registry.register("expired_backups_deleted", "Backups deleted because they expired", expired_deleted.clone());
        let continuous_waiting = Gauge::default();
        registry.register(
            "continuous_backups_waiting",
            "Workspaces whose continuous backup is due and waits for a --continuous-parallel slot",
            continuous_waiting.clone(),
        );
        Metrics {
            registry,
            admissions,
            admission_seconds,
            restores,
            index_backups,
            index_refresh_errors,
            backups,
            backup_seconds,
            backup_bytes,
            backup_objects,
            last_success,
            sources: Default::default(),
            expired_deleted,
            continuous_waiting,
        }
    }
}

impl Metrics {
    /// A backup of `source` succeeded now.
    pub fn succeeded(&self, source: &SourceLabel) {
        self.last_success.get_or_create(source).set(jiff::Timestamp::now().as_second());
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).insert(source.clone());
    }

    /// True when some schedule or workspace has a series (so there may be some to drop).
    pub fn has_sources(&self) -> bool {
        !self.sources.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Drops the series of sources `live` says are gone (deleted schedules and namespaces), so the
    /// number of series follows what exists.
    pub fn forget_sources(&self, live: impl Fn(&SourceLabel) -> bool) -> usize {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<SourceLabel> = sources.iter().filter(|s| !live(s)).cloned().collect();
        for s in &gone {
            self.last_success.remove(s);
            sources.remove(s);
        }
        gone.len()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
