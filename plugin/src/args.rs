//! Command-line arguments. Connection and location flags are global, so they may come before or
//! after the subcommand, like kubectl's.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kubectl_backup_core::kube_client::KubeOptions;
use kubectl_backup_core::model::{ClusterResources, ExistingPolicy, Filters};
use kubectl_backup_core::store::StoreOptions;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-backup",
    bin_name = "kubectl backup",
    version,
    about = "Back up Kubernetes objects to object storage and restore them",
    long_about = "Back up a cluster's objects to S3, GCS, Azure Blob or a local directory, and restore them into the same or another cluster.\n\nRuns with your kubeconfig and RBAC; nothing needs to be installed in the cluster.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub location: LocationArgs,
    /// Log verbosity: -v info, -vv debug, -vvv trace (logs go to stderr).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags.
#[derive(Debug, Args, Clone, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, env = "KUBECTL_BACKUP_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// Client-side limit of API requests per second. The server's own priority and fairness
    /// (429 answers, which are retried with backoff) and --concurrency are the main guards; lower
    /// this to be gentler on a busy control plane.
    #[arg(long, global = true, default_value_t = 1000, value_name = "N")]
    pub qps: u32,
    /// Requests allowed in a burst above --qps.
    #[arg(long, global = true, default_value_t = 2000, value_name = "N")]
    pub burst: u32,
    /// API requests in flight at once.
    #[arg(long, global = true, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
    /// How long discovering one API group may take, retries included. A group that does not answer
    /// in time (an aggregated API whose server is down) is reported by name and left out; the rest
    /// of the backup or restore goes on.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_timeout, value_name = "DURATION")]
    pub discovery_timeout: std::time::Duration,
}

/// A duration flag like `5s` or `1m30s`.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    kubectl_backup_core::input::parse_duration("duration", text)
        .map_err(|e| e.to_string())
        .and_then(|d| std::time::Duration::try_from(d).map_err(|e| e.to_string()))
}

impl KubeArgs {
    pub fn options(&self) -> KubeOptions {
        KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }
}

/// Where backups are stored.
#[derive(Debug, Args, Clone)]
pub struct LocationArgs {
    /// Storage location: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix,
    /// file:///path, or the name of a BackupLocation (default: $KUBECTL_BACKUP_LOCATION, else the
    /// cluster's default BackupLocation, else ~/.local/share/kubectl-backup).
    #[arg(long, global = true, value_name = "URL")]
    pub location: Option<String>,
    /// S3-compatible endpoint (MinIO, Ceph, ...), e.g. http://minio:9000. Implies path-style requests.
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket.
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// PEM file with the CA that signed the object store's certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Namespace of the in-cluster component and its BackupLocations.
    #[arg(long, global = true, env = "KUBECTL_BACKUP_NAMESPACE", default_value = "kubectl-backup", value_name = "NS")]
    pub install_namespace: String,
    /// Path-style S3 requests (default: true when --s3-endpoint or AWS_ENDPOINT_URL is set).
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub path_style: Option<bool>,
}

impl LocationArgs {
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
            ca_cert: self.ca_cert.clone(),
            path_style: self.path_style,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// A readable table or summary.
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args, Clone, Default)]
pub struct OutputArg {
    /// Output format: json or yaml print the document; the default is a table or summary.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The filters shared by create and restore.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Namespaces to include (comma list, globs allowed). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "NS[,NS...]")]
    pub include_namespaces: Vec<String>,
    /// Namespaces to exclude (comma list, globs allowed).
    #[arg(long, value_delimiter = ',', value_name = "NS[,NS...]")]
    pub exclude_namespaces: Vec<String>,
    /// Only this namespace (same as --include-namespaces NS).
    #[arg(short = 'n', long, value_name = "NS", conflicts_with_all = ["include_namespaces", "all_namespaces"])]
    pub namespace: Option<String>,
    /// All namespaces (the default; explicit form).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Resources to include: configmaps, deployments.apps, widgets.example.org, short names, globs.
    #[arg(long, value_delimiter = ',', value_name = "RES[,RES...]")]
    pub include_resources: Vec<String>,
    /// Resources to exclude.
    #[arg(long, value_delimiter = ',', value_name = "RES[,RES...]")]
    pub exclude_resources: Vec<String>,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Cluster-scoped objects: auto (all of them when all namespaces are included, else those the
    /// included namespaces need), true, or false.
    #[arg(long, default_value = "auto", value_name = "auto|true|false")]
    pub include_cluster_resources: ClusterResources,
}

impl FilterArgs {
    pub fn filters(&self) -> Filters {
        let mut included = self.include_namespaces.clone();
        if let Some(ns) = &self.namespace {
            included = vec![ns.clone()];
        }
        Filters {
            included_namespaces: included,
            excluded_namespaces: self.exclude_namespaces.clone(),
            included_resources: self.include_resources.clone(),
            excluded_resources: self.exclude_resources.clone(),
            label_selector: self.selector.clone(),
            include_cluster_resources: self.include_cluster_resources,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up objects from the cluster to the location.
    Create(CreateArgs),
    /// List the backups in the location.
    #[command(alias = "get", alias = "ls")]
    List(ListArgs),
    /// Show one backup: filters, counts per resource, warnings and errors.
    Describe(DescribeArgs),
    /// Delete backups from the location.
    #[command(alias = "rm")]
    Delete(DeleteArgs),
    /// Download a backup's archive (a .tar.zst: `tar --zstd -xf FILE` opens it).
    Download(DownloadArgs),
    /// Restore a backup into the cluster (the same one or another).
    Restore(RestoreArgs),
    /// Named storage locations (BackupLocations) the cluster knows.
    Location(crate::commands::location::LocationArgs),
    /// Scheduled backups run by the in-cluster component.
    Schedule(crate::commands::schedule::ScheduleArgs),
    /// Install the in-cluster component (webhook, controllers, CRDs, RBAC).
    Install(crate::commands::install::InstallArgs),
    /// Remove the in-cluster component; backups in storage are kept.
    Uninstall(crate::commands::install::UninstallArgs),
    /// Serving certificates for the webhook.
    Certs(crate::commands::certs::CertsArgs),
    /// Workspaces (namespaces) as the auto-restore webhook sees them.
    #[command(alias = "ws")]
    Workspace(crate::commands::workspace::WorkspaceArgs),
    /// Back up and restore etcd itself: snapshots, keys, keys as JSON.
    Etcd(crate::commands::etcd::EtcdArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Print the version.
    Version(OutputArg),
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Name of the backup (a DNS-1123 label, e.g. nightly-2024-06-01).
    pub name: String,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// How long to keep the backup (e.g. 720h, 30m; 0 keeps it forever).
    #[arg(long, default_value = "720h", value_name = "DURATION")]
    pub ttl: String,
    /// Wait for the backup to finish. With --wait=false it runs in the background; follow it with
    /// `kubectl backup describe NAME`.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// The backup to restore.
    pub backup: String,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Restore namespace SRC into DST: src:dst[,src2:dst2]. Rewrites object namespaces, binding
    /// subjects and PV claim references.
    #[arg(long, value_delimiter = ',', value_name = "SRC:DST")]
    pub namespace_mapping: Vec<String>,
    /// What to do with objects that already exist: skip (leave them, report them) or update (bring
    /// them back to the backed-up state with a forced server-side apply).
    #[arg(long, default_value = "skip", value_name = "skip|update")]
    pub existing: ExistingPolicy,
    /// Keep Service node ports as backed up (by default ports the server assigned are dropped).
    #[arg(long)]
    pub preserve_nodeports: bool,
    /// Write nothing: have the API server validate each object (dryRun=All) and show what would be
    /// created, updated or skipped, with a diff for existing objects that differ.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the restore to finish. With --wait=false it runs in the background.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

impl RestoreArgs {
    pub fn mapping(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut map = std::collections::BTreeMap::new();
        for pair in self.namespace_mapping.iter().filter(|p| !p.trim().is_empty()) {
            let (src, dst) = pair
                .split_once(':')
                .map(|(a, b)| (a.trim(), b.trim()))
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| {
                    format!("invalid --namespace-mapping {pair:?}: expected SRC:DST, e.g. shop:shop-copy")
                })?;
            if map.insert(src.to_string(), dst.to_string()).is_some() {
                return Err(format!("invalid --namespace-mapping: {src:?} is mapped twice"));
            }
        }
        Ok(map)
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub name: String,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Backups to delete.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    pub name: String,
    /// Where to write the archive (default: NAME.tar.zst; '-' for standard output).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn filters_parse_like_kubectl() {
        let cli = Cli::parse_from([
            "kubectl-backup",
            "create",
            "b1",
            "--include-namespaces",
            "a,b",
            "--exclude-resources=secrets,events",
            "-l",
            "app=web",
            "--include-cluster-resources",
            "false",
            "--location",
            "s3://bucket/p",
            "--wait=false",
        ]);
        let Command::Create(c) = cli.command else { panic!("not create") };
        let f = c.filters.filters();
        assert_eq!(f.included_namespaces, vec!["a", "b"]);
        assert_eq!(f.excluded_resources, vec!["secrets", "events"]);
        assert_eq!(f.label_selector.as_deref(), Some("app=web"));
        assert_eq!(f.include_cluster_resources, ClusterResources::False);
        assert!(!c.wait);
        assert_eq!(cli.location.location.as_deref(), Some("s3://bucket/p"));
    }

    #[test]
    fn restore_mapping_parses_and_rejects_garbage() {
        let cli = Cli::parse_from([
            "kubectl-backup",
            "restore",
            "b",
            "--namespace-mapping",
            "a:b,c:d",
            "--existing",
            "update",
            "--dry-run",
        ]);
        let Command::Restore(r) = cli.command else { panic!("not restore") };
        assert_eq!(r.mapping().unwrap().get("a").map(String::as_str), Some("b"));
        assert_eq!(r.existing, ExistingPolicy::Update);
        assert!(r.dry_run);
        let cli = Cli::parse_from(["kubectl-backup", "restore", "b", "--namespace-mapping", "nocolon"]);
        let Command::Restore(r) = cli.command else { panic!("not restore") };
        assert!(r.mapping().unwrap_err().contains("SRC:DST"));
        assert!(Cli::try_parse_from(["kubectl-backup", "restore", "b", "--existing", "merge"]).is_err());
    }

    #[test]
    fn discovery_timeout_defaults_to_the_engine_default() {
        let cli = Cli::parse_from(["kubectl-backup", "list"]);
        assert_eq!(cli.kube.discovery_timeout, kubectl_backup_core::kube_client::DISCOVERY_TIMEOUT);
        let cli = Cli::parse_from(["kubectl-backup", "create", "b", "--discovery-timeout", "1m30s"]);
        assert_eq!(cli.kube.discovery_timeout, std::time::Duration::from_secs(90));
        let err = Cli::try_parse_from(["kubectl-backup", "list", "--discovery-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn namespace_flag_conflicts_with_include() {
        let r = Cli::try_parse_from(["kubectl-backup", "create", "b", "-n", "x", "--include-namespaces", "y"]);
        assert!(r.is_err());
        let r = Cli::try_parse_from(["kubectl-backup", "create", "b", "--include-cluster-resources", "maybe"]);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("auto, true or false"), "{err}");
    }
}
