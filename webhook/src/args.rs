//! Flags, each with an environment fallback (for the Deployment's env and ConfigMaps).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, ValueEnum};
use kubectl_backup_core::kube_client::KubeOptions;
use kubectl_backup_core::store::StoreOptions;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "backup-webhook",
    version,
    about = "Admission webhook and controllers for kubectl-backup: auto-restore of new workspaces, ephemeral labelling"
)]
pub struct Args {
    /// Address of the HTTPS admission server.
    #[arg(long, env = "WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM, chain). Re-read when it changes.
    #[arg(long, env = "WEBHOOK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// Serving key (PEM). Re-read when it changes.
    #[arg(long, env = "WEBHOOK_TLS_KEY", value_name = "FILE")]
    pub tls_key: PathBuf,
    /// Address of the Prometheus /metrics endpoint (plain HTTP). Off when not given.
    #[arg(long, env = "WEBHOOK_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub location: LocationArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// How often the index of backups per namespace is refreshed from the location.
    #[arg(long, env = "WEBHOOK_INDEX_REFRESH", default_value = "30s", value_parser = parse_duration)]
    pub index_refresh: Duration,
    /// Run the restore worker (and catch-up) in this process.
    #[arg(long, env = "WEBHOOK_RESTORE_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub restore_worker: bool,
    /// How often expired backups are deleted (ReadWrite locations only).
    #[arg(long, env = "WEBHOOK_GC_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub gc_interval: Duration,
    /// Back up each non-ephemeral workspace when its objects change.
    #[arg(long, env = "WEBHOOK_CONTINUOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub continuous: bool,
    /// A continuous backup is taken this long after the last change of a burst.
    #[arg(long, env = "WEBHOOK_DEBOUNCE", default_value = "10s", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Continuous backups kept per workspace (older ones are deleted).
    #[arg(long, env = "WEBHOOK_KEEP_WORKSPACE_BACKUPS", default_value_t = 5)]
    pub keep_workspace_backups: usize,
    /// How long discovering one API group may take in a backup or restore, retries included (the
    /// plugin's --discovery-timeout, same default). A group that does not answer in time is named in
    /// the backup's errors and left out.
    #[arg(long, env = "WEBHOOK_DISCOVERY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub discovery_timeout: Duration,
    /// Run the schedule controller.
    #[arg(long, env = "WEBHOOK_SCHEDULES", default_value_t = true, action = clap::ArgAction::Set)]
    pub schedules: bool,
    /// Log format.
    #[arg(long, env = "WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct LocationArgs {
    /// Where backups are: an s3://, gs://, az:// or file:// URL, or a BackupLocation name.
    #[arg(long, env = "KUBECTL_BACKUP_LOCATION", value_name = "URL")]
    pub location: String,
    #[arg(long, env = "KUBECTL_BACKUP_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "KUBECTL_BACKUP_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "KUBECTL_BACKUP_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl LocationArgs {
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
            ca_cert: self.ca_cert.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, ClapArgs)]
pub struct KubeArgs {
    /// kubeconfig (default: in-cluster, else $KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "KUBECONFIG_FILE", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long)]
    pub context: Option<String>,
}

impl KubeArgs {
    pub fn options(&self) -> KubeOptions {
        KubeOptions { kubeconfig: self.kubeconfig.clone(), context: self.context.clone(), ..Default::default() }
    }
}

#[derive(Debug, Clone, ClapArgs)]
pub struct PolicyArgs {
    /// Workspace names that are ephemeral (glob, repeatable or comma list), e.g. `pr-*`.
    #[arg(long = "ephemeral-pattern", env = "WEBHOOK_EPHEMERAL_PATTERNS", value_delimiter = ',', value_name = "GLOB")]
    pub ephemeral_patterns: Vec<String>,
    /// Label selector a namespace must match to be a workspace (default: every namespace except
    /// kube-system, kube-public, kube-node-lease and this webhook's own).
    #[arg(long, env = "WEBHOOK_WORKSPACE_SELECTOR", value_name = "SELECTOR")]
    pub workspace_selector: Option<String>,
    /// Custom resources that are workspaces too, as `<plural>.<group>` (repeatable): creating one
    /// named N is treated like creating namespace N.
    #[arg(
        long = "workspace-resource",
        env = "WEBHOOK_WORKSPACE_RESOURCES",
        value_delimiter = ',',
        value_name = "PLURAL.GROUP"
    )]
    pub workspace_resources: Vec<String>,
    /// The namespace this webhook runs in (never mutated, never restored).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubectl-backup")]
    pub namespace: String,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    kubectl_backup_core::input::parse_duration("duration", s)
        .map_err(|e| e.to_string())
        .and_then(|d| Duration::try_from(d).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_patterns_and_defaults() {
        let a = Args::try_parse_from([
            "backup-webhook",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--location",
            "file:///x",
            "--ephemeral-pattern",
            "pr-*,tmp-*",
            "--ephemeral-pattern",
            "ci-*",
        ])
        .unwrap();
        assert_eq!(a.policy.ephemeral_patterns, vec!["pr-*", "tmp-*", "ci-*"]);
        assert_eq!(a.listen.port(), 8443);
        assert_eq!(a.index_refresh, Duration::from_secs(30));
        assert_eq!(a.discovery_timeout, kubectl_backup_core::kube_client::DISCOVERY_TIMEOUT);
        assert!(
            Args::try_parse_from([
                "backup-webhook",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--location",
                "x",
                "--index-refresh",
                "soon"
            ])
            .is_err()
        );
    }
}
