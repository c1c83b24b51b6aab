//! Flags, each with an environment fallback (for the Deployment's env and ConfigMaps).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, ValueEnum};
use kubectl_backup_core::crd::{AccessMode, BackupLocationSpec};
use kubectl_backup_core::kube_client::KubeOptions;
use kubectl_backup_core::store::StoreOptions;

/// `backup-webhook mover`: what a mover Pod runs (created by `kubectl backup create
/// --include-volumes` and by restores of volume data), never started by hand.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "backup-webhook mover",
    about = "Moves one volume's files to or from presigned URLs (a mover Pod's command)"
)]
pub struct MoverArgs {
    /// The plan: the presigned URLs of the parts (a Secret's file).
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// Where the claim is mounted.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Where the report goes (the Pod's termination message).
    #[arg(long, value_name = "FILE", default_value = kubectl_backup_core::volume::mover::TERMINATION_LOG)]
    pub termination_log: PathBuf,
    /// Read (or write) the volume's files no faster than this (the client's `--mover-bandwidth`).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub bytes_per_second: Option<u64>,
}

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
    /// Serve `/metrics` over HTTPS with the webhook's serving certificate instead of plain HTTP.
    #[arg(long, env = "WEBHOOK_METRICS_TLS")]
    pub metrics_tls: bool,
    #[command(flatten)]
    pub location: LocationArgs,
    #[command(flatten)]
    pub default_location: DefaultLocationArgs,
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
    /// How often each BackupLocation is checked (listed; written to unless ReadOnly) and its
    /// status updated.
    #[arg(long, env = "WEBHOOK_LOCATION_CHECK_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub location_check_interval: Duration,
    /// Back up each non-ephemeral workspace when its objects change.
    #[arg(long, env = "WEBHOOK_CONTINUOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub continuous: bool,
    /// A continuous backup is taken this long after the last change of a burst.
    #[arg(long, env = "WEBHOOK_DEBOUNCE", default_value = "10s", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Which continuous backups of a workspace are kept, as ALL,HOURLY,DAILY: every one younger
    /// than ALL, then the newest of each hour up to HOURLY, then of each day up to DAILY (UTC).
    /// The newest is always kept.
    #[arg(long, env = "WEBHOOK_RETENTION", default_value = "24h,168h,720h", value_name = "ALL,HOURLY,DAILY")]
    pub retention: kubectl_backup_core::retention::Retention,
    /// At most this many continuous backups per workspace, newest first, whatever --retention
    /// keeps (0: no limit).
    #[arg(long, env = "WEBHOOK_KEEP_WORKSPACE_BACKUPS", default_value_t = 0)]
    pub keep_workspace_backups: usize,
    /// Store continuous backups incrementally: object bodies once per location, in packs shared
    /// by every incremental backup there, so each point in time costs only what changed.
    #[arg(long, env = "WEBHOOK_CONTINUOUS_INCREMENTAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub continuous_incremental: bool,
    /// An incremental continuous backup reads only the objects the controller's watches saw change
    /// since the workspace's previous backup, listing none of the watched types, for this long
    /// after its last backup that listed them all; then it lists them again (0s: always list).
    #[arg(long, env = "WEBHOOK_CONTINUOUS_LIST_EVERY", default_value = "1h", value_parser = parse_duration)]
    pub continuous_list_every: Duration,
    /// The most MiB of changed objects' bodies the controller holds for the next incremental
    /// continuous backups, all workspaces together; past it, the workspace holding the most has its
    /// changes dropped and its next backup lists every type (memory stays bounded; nothing is lost).
    #[arg(long, env = "WEBHOOK_CONTINUOUS_CHANGES_MAX_MIB", default_value_t = 64)]
    pub continuous_changes_max_mib: usize,
    /// At most this many continuous backups run at once, all workspaces together; the others
    /// wait, the one marked first first (so a burst across many workspaces, or a start in a
    /// cluster where many have no backup yet, does not start them all at once).
    #[arg(long, env = "WEBHOOK_CONTINUOUS_PARALLEL", default_value_t = 4, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub continuous_parallel: usize,
    /// A continuous backup still running after this long is given up and counts as failed (its
    /// slot freed, its lease and heartbeats stopped, what it wrote collected as any interrupted
    /// run's). 0s: no limit. With volume data (--continuous-include-volumes) it is the movers'
    /// deadline instead: a mover still running then is ended by the kubelet, the claim's post
    /// hooks run and the backup ends PartiallyFailed; it is given up only 5 minutes later.
    #[arg(long, env = "WEBHOOK_CONTINUOUS_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub continuous_timeout: Duration,
    /// A failed continuous backup (not taken, PartiallyFailed, or given up) is taken again this
    /// many times in a row while its workspace does not change (0: only at its next change); a
    /// change starts the count anew.
    #[arg(long, env = "WEBHOOK_CONTINUOUS_RETRIES", default_value_t = 5)]
    pub continuous_retries: u32,
    /// The wait before the first retry of a failed continuous backup, doubled for each further
    /// one (at most 1h).
    #[arg(long, env = "WEBHOOK_CONTINUOUS_RETRY_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub continuous_retry_after: Duration,
    /// How long discovering one API group may take in a backup or restore, retries included (the
    /// plugin's --discovery-timeout, same default). A group that does not answer in time is named in
    /// the backup's errors and left out.
    #[arg(long, env = "WEBHOOK_DISCOVERY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub discovery_timeout: Duration,
    /// How LIST pages are asked for in backups (the plugin's --list-encoding, same default): auto
    /// reads ConfigMaps and Secrets in protobuf, which costs the API server less, and stores the
    /// JSON the server would have sent, byte for byte; json reads everything in JSON.
    #[arg(long, env = "WEBHOOK_LIST_ENCODING", default_value = "auto", value_name = "auto|json")]
    pub list_encoding: kubectl_backup_core::collect::ListEncoding,
    /// Whom restores of workspaces created while the webhook was down act as (a user name, e.g.
    /// system:serviceaccount:kubectl-backup:catch-up, which you bind to the roles such restores
    /// may use). Without it they are not restored: marked Pending, with an Event saying how.
    #[arg(long, env = "WEBHOOK_CATCH_UP_IDENTITY", value_name = "USER")]
    pub catch_up_identity: Option<String>,
    /// Whom the mover Pods of volume data act as in schedules and continuous backups (a user name,
    /// e.g. system:serviceaccount:kubectl-backup:mover, which you bind to a role that may create
    /// Pods and Secrets and use pods/exec in the workspaces: docs/volumes.md). Without it, their
    /// claims are reported, not read. A Backup request's movers act as its creator.
    #[arg(long, env = "WEBHOOK_VOLUME_IDENTITY", value_name = "USER")]
    pub volume_identity: Option<String>,
    /// The image of the mover Pods: this version's backup-webhook image (install and the chart
    /// set it to the webhook's own image).
    #[arg(long, env = "WEBHOOK_MOVER_IMAGE", default_value = kubectl_backup_core::volume::DEFAULT_IMAGE)]
    pub mover_image: String,
    /// The most bytes of files each mover Pod reads or writes per second, as a quantity (50Mi,
    /// 100M): a backup of volume data then leaves the rest of a busy disk or network to the
    /// workloads. Unset: as fast as the volume and the store allow.
    #[arg(long, env = "WEBHOOK_MOVER_BANDWIDTH", value_name = "QUANTITY", value_parser = kubectl_backup_core::volume::parse_bandwidth)]
    pub mover_bandwidth: Option<u64>,
    /// Continuous backups include the workspaces' volume data (off by default: every change would
    /// move every claim's files). Needs --volume-identity.
    #[arg(long, env = "WEBHOOK_CONTINUOUS_INCLUDE_VOLUMES", default_value_t = false, action = clap::ArgAction::Set)]
    pub continuous_include_volumes: bool,
    /// BackupSchedules outside the install namespace that fire more often than this are refused.
    #[arg(long, env = "WEBHOOK_MIN_SCHEDULE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub min_schedule_interval: Duration,
    #[arg(long, env = "WEBHOOK_SCHEDULES", default_value_t = true, action = clap::ArgAction::Set)]
    pub schedules: bool,
    /// Log format.
    #[arg(long, env = "WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to log: a level (error, warn, info, debug, trace) or tracing's directives, e.g.
    /// `info,backup_webhook=debug`. RUST_LOG, when set, wins.
    #[arg(long, env = "WEBHOOK_LOG_LEVEL", default_value = "info,kube=warn", value_parser = parse_log_level)]
    pub log_level: String,
}

fn parse_log_level(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text).map(|_| text.to_string()).map_err(|e| format!("{text:?}: {e}"))
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

/// The BackupLocation `--location` names, created at startup when it does not exist. This is how
/// `kubectl backup install` and the Helm chart set up the default location: their manifests then
/// hold no custom resource, so `kubectl apply` of them works in one go on an empty cluster. An
/// existing BackupLocation is never changed.
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct DefaultLocationArgs {
    /// URL of the BackupLocation to create when the one --location names is missing (it is marked
    /// the cluster's default). Without it nothing is created.
    #[arg(
        id = "default_location_url",
        long = "default-location-url",
        env = "WEBHOOK_DEFAULT_LOCATION_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// Its S3-compatible endpoint.
    #[arg(
        id = "default_location_endpoint",
        long = "default-location-endpoint",
        env = "WEBHOOK_DEFAULT_LOCATION_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,
    /// Its region.
    #[arg(id = "default_location_region", long = "default-location-region", env = "WEBHOOK_DEFAULT_LOCATION_REGION")]
    pub region: Option<String>,
    /// Its path-style setting (default: the endpoint decides).
    #[arg(
        id = "default_location_path_style",
        long = "default-location-path-style",
        env = "WEBHOOK_DEFAULT_LOCATION_PATH_STYLE",
        value_name = "BOOL"
    )]
    pub path_style: Option<bool>,
    /// Its PEM CA bundle.
    #[arg(
        id = "default_location_ca_bundle",
        long = "default-location-ca-bundle",
        env = "WEBHOOK_DEFAULT_LOCATION_CA_BUNDLE",
        value_name = "PEM"
    )]
    pub ca_bundle: Option<String>,
    /// The Secret in this namespace with its credentials.
    #[arg(
        id = "default_location_credentials_secret",
        long = "default-location-credentials-secret",
        env = "WEBHOOK_DEFAULT_LOCATION_CREDENTIALS_SECRET",
        value_name = "NAME"
    )]
    pub credentials_secret: Option<String>,
    /// ReadWrite (default) or ReadOnly.
    #[arg(id = "default_location_access_mode", long = "default-location-access-mode", env = "WEBHOOK_DEFAULT_LOCATION_ACCESS_MODE", value_parser = parse_access_mode, value_name = "MODE")]
    pub access_mode: Option<AccessMode>,
    /// Public keys its backups are encrypted to (comma-separated).
    #[arg(
        id = "default_location_encrypt_to",
        long = "default-location-encrypt-to",
        env = "WEBHOOK_DEFAULT_LOCATION_ENCRYPT_TO",
        value_delimiter = ',',
        value_name = "RECIPIENT"
    )]
    pub encrypt_to: Vec<String>,
    /// The Secret in this namespace whose key `identity` opens them (for auto-restore).
    #[arg(
        id = "default_location_identity_secret",
        long = "default-location-identity-secret",
        env = "WEBHOOK_DEFAULT_LOCATION_IDENTITY_SECRET",
        value_name = "NAME"
    )]
    pub identity_secret: Option<String>,
    /// S3: the IAM role it assumes through STS (its assumeRole).
    #[arg(
        id = "default_location_role_arn",
        long = "default-location-role-arn",
        env = "WEBHOOK_DEFAULT_LOCATION_ROLE_ARN",
        value_name = "ARN"
    )]
    pub role_arn: Option<String>,
    /// The External ID the role requires.
    #[arg(
        id = "default_location_external_id",
        long = "default-location-external-id",
        env = "WEBHOOK_DEFAULT_LOCATION_EXTERNAL_ID",
        value_name = "ID"
    )]
    pub external_id: Option<String>,
    /// The role session name.
    #[arg(
        id = "default_location_session_name",
        long = "default-location-session-name",
        env = "WEBHOOK_DEFAULT_LOCATION_SESSION_NAME",
        value_name = "NAME"
    )]
    pub session_name: Option<String>,
    /// Lifetime of the role's credentials, in seconds.
    #[arg(
        id = "default_location_role_duration_seconds",
        long = "default-location-role-duration-seconds",
        env = "WEBHOOK_DEFAULT_LOCATION_ROLE_DURATION_SECONDS",
        value_name = "SECONDS"
    )]
    pub role_duration_seconds: Option<u32>,
    /// The STS endpoint.
    #[arg(
        id = "default_location_sts_endpoint",
        long = "default-location-sts-endpoint",
        env = "WEBHOOK_DEFAULT_LOCATION_STS_ENDPOINT",
        value_name = "URL"
    )]
    pub sts_endpoint: Option<String>,
}

impl DefaultLocationArgs {
    /// The spec to create, when a URL is given.
    pub fn spec(&self) -> Option<BackupLocationSpec> {
        Some(BackupLocationSpec {
            url: self.url.clone().filter(|u| !u.trim().is_empty())?,
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            path_style: self.path_style,
            ca_bundle: self.ca_bundle.clone(),
            credentials_secret: self.credentials_secret.clone(),
            default: true,
            access_mode: self.access_mode.unwrap_or_default(),
            encryption: kubectl_backup_core::crd::LocationEncryption::of(
                &self.encrypt_to,
                self.identity_secret.as_deref(),
            ),
            assume_role: kubectl_backup_core::crd::AssumeRoleSpec::of(
                self.role_arn.as_deref(),
                self.external_id.as_deref(),
                self.session_name.as_deref(),
                self.role_duration_seconds,
                self.sts_endpoint.as_deref(),
            ),
            incremental: false,
            include_volumes: false,
        })
    }
}

fn parse_access_mode(s: &str) -> Result<AccessMode, String> {
    match s {
        "ReadWrite" => Ok(AccessMode::ReadWrite),
        "ReadOnly" => Ok(AccessMode::ReadOnly),
        other => Err(format!("{other:?} is not an access mode: ReadWrite or ReadOnly")),
    }
}

#[derive(Debug, Clone, ClapArgs)]
pub struct KubeArgs {
    /// kubeconfig (default: in-cluster, else $KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "KUBECONFIG_FILE", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long)]
    pub context: Option<String>,
    /// Client-side limit of API requests per second (as the CLI's --qps; gentler in the cluster).
    #[arg(long, env = "WEBHOOK_QPS", default_value_t = 100, value_name = "N")]
    pub qps: u32,
    /// Requests allowed in a burst above --qps.
    #[arg(long, env = "WEBHOOK_BURST", default_value_t = 200, value_name = "N")]
    pub burst: u32,
    /// API requests in flight at once, per backup or restore.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
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
        MoverArgs::command().debug_assert();
    }

    #[test]
    fn log_level_takes_tracing_directives_and_refuses_others() {
        let base = ["backup-webhook", "--tls-cert", "c", "--tls-key", "k", "--location", "default"];
        assert_eq!(Args::try_parse_from(base).unwrap().log_level, "info,kube=warn");
        let mut argv = base.to_vec();
        argv.push("--log-level=info,backup_webhook=debug");
        assert_eq!(Args::try_parse_from(&argv).unwrap().log_level, "info,backup_webhook=debug");
        argv.pop();
        argv.push("--log-level=loud[");
        let e = Args::try_parse_from(&argv).unwrap_err().to_string();
        assert!(e.contains("--log-level") && e.contains("loud["), "{e}");
    }

    #[test]
    fn continuous_parallel_is_at_least_one() {
        let base = ["backup-webhook", "--tls-cert", "c", "--tls-key", "k", "--location", "default"];
        assert_eq!(Args::try_parse_from(base).unwrap().continuous_parallel, 4);
        let mut argv = base.to_vec();
        argv.push("--continuous-parallel=16");
        assert_eq!(Args::try_parse_from(&argv).unwrap().continuous_parallel, 16);
        argv.pop();
        argv.push("--continuous-parallel=0");
        let e = Args::try_parse_from(&argv).unwrap_err().to_string();
        assert!(e.contains("--continuous-parallel") && e.contains("'0'"), "{e}");
    }

    #[test]
    fn continuous_retries_and_timeout_default_and_parse() {
        let base = ["backup-webhook", "--tls-cert", "c", "--tls-key", "k", "--location", "default"];
        let a = Args::try_parse_from(base).unwrap();
        assert_eq!(a.continuous_retries, 5);
        assert_eq!(a.continuous_retry_after, Duration::from_secs(30));
        assert_eq!(a.continuous_timeout, Duration::from_secs(3600));
        let mut argv = base.to_vec();
        argv.extend(["--continuous-retries=0", "--continuous-retry-after=2m", "--continuous-timeout=0s"]);
        let a = Args::try_parse_from(&argv).unwrap();
        assert_eq!((a.continuous_retries, a.continuous_retry_after), (0, Duration::from_secs(120)));
        assert_eq!(a.continuous_timeout, Duration::ZERO);
        argv.pop();
        argv.push("--continuous-timeout=soon");
        let e = Args::try_parse_from(&argv).unwrap_err().to_string();
        assert!(e.contains("--continuous-timeout") && e.contains("soon"), "{e}");
    }

    #[test]
    fn default_location_flags_make_a_default_location_spec() {
        let base = ["backup-webhook", "--tls-cert", "c", "--tls-key", "k", "--location", "default"];
        let a = Args::try_parse_from(base).unwrap();
        assert_eq!(a.default_location.spec(), None, "no URL, nothing to create");
        let mut argv = base.to_vec();
        argv.extend([
            "--default-location-url=s3://b/p",
            "--default-location-region=eu-1",
            "--default-location-credentials-secret=creds",
            "--default-location-access-mode=ReadOnly",
            "--default-location-role-arn=arn:aws:iam::123456789012:role/b",
            "--default-location-external-id=ext",
            "--default-location-role-duration-seconds=900",
        ]);
        let spec = Args::try_parse_from(&argv).unwrap().default_location.spec().unwrap();
        let role = spec.assume_role.clone().unwrap();
        assert_eq!(role.role_arn, "arn:aws:iam::123456789012:role/b");
        assert_eq!(
            (role.external_id.as_deref(), role.duration_seconds, role.session_name),
            (Some("ext"), Some(900), None)
        );
        assert_eq!(spec.url, "s3://b/p");
        assert_eq!(spec.region.as_deref(), Some("eu-1"));
        assert_eq!(spec.credentials_secret.as_deref(), Some("creds"));
        assert_eq!(spec.access_mode, AccessMode::ReadOnly);
        assert!(spec.default);
        argv.push("--default-location-access-mode=rw");
        assert!(Args::try_parse_from(&argv).is_err());
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
        assert_eq!(a.list_encoding, kubectl_backup_core::collect::ListEncoding::Auto);
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
