//! The command tree: `Cli` (the global flags and a subcommand) and where each subcommand goes.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::args::{Globals, OutputArg};
use kubectl_backup_core::catalog::Objects;

use crate::commands::{backup, catalog, certs, etcd, install, location, restore, schedule, workspace};

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
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up objects from the cluster to the location.
    Create(backup::CreateArgs),
    #[command(flatten)]
    Catalog(catalog::CatalogCommand),
    /// Restore a backup into the cluster (the same one or another).
    Restore(restore::RestoreArgs),
    /// Named storage locations (BackupLocations) the cluster knows.
    Location(location::LocationArgs),
    /// Scheduled backups run by the in-cluster component.
    Schedule(schedule::ScheduleArgs),
    /// Install the in-cluster component (webhook, controllers, CRDs, RBAC).
    Install(install::InstallArgs),
    /// Remove the in-cluster component; backups in storage are kept.
    Uninstall(install::UninstallArgs),
    /// Serving certificates for the webhook.
    Certs(certs::CertsArgs),
    /// Workspaces (namespaces) as the auto-restore webhook sees them.
    #[command(alias = "ws")]
    Workspace(workspace::WorkspaceArgs),
    /// Back up and restore etcd itself: snapshots, keys, keys as JSON.
    Etcd(etcd::EtcdArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Print the version.
    Version(OutputArg),
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

impl Cli {
    pub async fn run(self) -> Result<ExitCode> {
        let g = &self.globals;
        match &self.command {
            Command::Create(a) => backup::create(g, a).await,
            Command::Catalog(c) => catalog::run::<Objects>(g, c).await,
            Command::Restore(a) => restore::restore(g, a).await,
            Command::Etcd(a) => etcd::run(g, a).await,
            Command::Workspace(a) => workspace::run(g, a).await,
            Command::Location(a) => location::run(g, a).await,
            Command::Certs(a) => certs::run(a),
            Command::Schedule(a) => schedule::run(g, a).await,
            Command::Install(a) => install::install(g, a).await,
            Command::Uninstall(a) => install::uninstall(g, a).await,
            Command::Completion(a) => {
                clap_complete::generate(a.shell, &mut Cli::command(), "kubectl-backup", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Version(o) => crate::commands::version(g, o.output).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(f.include_cluster_resources, kubectl_backup_core::model::ClusterResources::False);
        assert!(!c.wait);
        assert_eq!(cli.globals.location.location.as_deref(), Some("s3://bucket/p"));
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
        assert_eq!(r.existing, kubectl_backup_core::model::ExistingPolicy::Update);
        assert!(r.dry_run);
        let cli = Cli::parse_from(["kubectl-backup", "restore", "b", "--namespace-mapping", "nocolon"]);
        let Command::Restore(r) = cli.command else { panic!("not restore") };
        assert!(r.mapping().unwrap_err().contains("SRC:DST"));
        assert!(Cli::try_parse_from(["kubectl-backup", "restore", "b", "--existing", "merge"]).is_err());
    }

    #[test]
    fn discovery_timeout_defaults_to_the_engine_default() {
        let cli = Cli::parse_from(["kubectl-backup", "list"]);
        assert_eq!(cli.globals.kube.discovery_timeout, kubectl_backup_core::kube_client::DISCOVERY_TIMEOUT);
        let cli = Cli::parse_from(["kubectl-backup", "create", "b", "--discovery-timeout", "1m30s"]);
        assert_eq!(cli.globals.kube.discovery_timeout, std::time::Duration::from_secs(90));
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
