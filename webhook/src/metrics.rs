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

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<DecisionLabel, Counter>,
    pub admission_seconds: Histogram,
    pub restores: Family<ResultLabel, Counter>,
    pub index_backups: Gauge,
    pub index_refresh_errors: Counter,
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
        Metrics { registry, admissions, admission_seconds, restores, index_backups, index_refresh_errors }
    }
}

impl Metrics {
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
