//! `restore`.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use jiff::Timestamp;
use kubectl_backup_core::filter::Selection;
use kubectl_backup_core::input::{timestamped_name, validate_name};
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::model::{ItemAction, Restore, RestoreItem, RestoreSpec};
use kubectl_backup_core::restore::{self, record};
use kubectl_backup_core::runlog::RunLog;

use super::{exit_for, throttle};
use clap::Args;
use kubectl_backup_core::model::ExistingPolicy;

use crate::args::{FilterArgs, Globals, Output, OutputArg};
use crate::output::{print_document, print_table, table};
use crate::{open_location, progress};

pub async fn restore(cli: &Globals, args: &RestoreArgs) -> Result<ExitCode> {
    if let Some(at) = &args.at {
        return restore_at(cli, args, at).await;
    }
    restore_backup(cli, args, args.backup()).await
}

/// `restore WORKSPACE --at TIME`: finds the backup, then restores that namespace from it.
async fn restore_at(cli: &Globals, args: &RestoreArgs, at: &str) -> Result<ExitCode> {
    let workspace = args.backup();
    validate_name("workspace name", workspace)?;
    let when: Timestamp = at.trim().parse().map_err(|e| {
        anyhow!("invalid --at {at:?}: expected an RFC 3339 time such as 2026-12-01T10:00Z or 2026-12-01T10:00:00+01:00 ({e})")
    })?;
    let store = open_location::open(cli, None).await?.store;
    let listing = kubectl_backup_core::catalog::list(&store).await?;
    let Some(backup) = kubectl_backup_core::catalog::at(&listing.backups, workspace, when) else {
        let first = kubectl_backup_core::catalog::history(&listing.backups, workspace).last().map(|b| {
            format!(
                "; its oldest backup is {} ({})",
                b.metadata.name,
                b.metadata.creation_timestamp.map(|t| t.to_string()).unwrap_or_default()
            )
        });
        anyhow::bail!(
            "no backup of workspace {workspace:?} was taken at or before {when} in {}{} (see `kubectl backup workspace history {workspace}`)",
            store.url(),
            first.unwrap_or_default()
        );
    };
    let taken = backup.metadata.creation_timestamp.map(|t| t.to_string()).unwrap_or_default();
    eprintln!(
        "restoring workspace \"{workspace}\" as of {when} from backup \"{}\" (taken {taken})",
        backup.metadata.name
    );
    let mut args = args.clone();
    if args.filters.namespace.is_none() && args.filters.selection.include_namespaces.is_empty() {
        args.filters.selection.include_namespaces = vec![workspace.to_string()];
    }
    restore_backup(cli, &args, &backup.metadata.name.clone()).await
}

async fn restore_backup(cli: &Globals, args: &RestoreArgs, backup: &str) -> Result<ExitCode> {
    validate_name("backup name", backup)?;
    let filters = args.filters.filters();
    Selection::new(&filters)?;
    let namespace_mapping = args.mapping().map_err(|e| anyhow!(e))?;
    let name = timestamped_name(backup, Timestamp::now());
    if args.in_cluster {
        let spec = kubectl_backup_core::requests::RestoreRequestSpec {
            backup_name: backup.to_string(),
            filters,
            namespace_mapping,
            existing_resource_policy: Some(args.existing),
            location: None,
        };
        return super::requests::create_restore(cli, &name, spec, args.wait, args.output.output).await;
    }
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let location = open_location::open(cli, Some(&cluster.client)).await?;
    let store = location.store.clone();
    let spec = RestoreSpec {
        backup_name: backup.to_string(),
        filters,
        namespace_mapping,
        existing_resource_policy: args.existing,
        preserve_node_ports: args.preserve_nodeports,
        dry_run: args.dry_run,
        skip_volume_data: !args.include_volumes,
        storage_class_mapping: args.storage_class_mapping().map_err(|e| anyhow!(e))?,
        mover: args.mover.settings(),
    };
    let detached = super::detached();
    if !args.wait && !detached {
        return super::detach("restore", &name);
    }
    let observer = progress::observer(if detached { Output::Json } else { args.output.output }, "objects");
    let log = RunLog::new(observer.clone());
    let run = restore::run(&cluster, &store, &name, spec, log.clone());
    let doing = "stopping the restore once the objects it is creating now are created (a mover Pod is ended)";
    let result = super::interruptible(doing, run).await;
    drop(observer);
    let restore = result?;
    // The history (`restore list`, `logs restore/NAME`), in a location this may write to.
    if !restore.spec.dry_run
        && location.ensure_writable().is_ok()
        && let Err(e) = record::save(&store, &restore, &log).await
    {
        eprintln!("warning: the restore was not recorded in {}: {e}", location.display());
    }
    match args.output.output {
        Output::Table => print_summary(&restore),
        format => print_document(&restore, format)?,
    }
    Ok(exit_for(restore.status.phase))
}

pub(crate) fn print_summary(r: &Restore) {
    let s = &r.status;
    let c = &s.counts;
    let took = super::catalog::took(&s.timing);
    if r.spec.dry_run {
        println!("Dry run of restoring backup \"{}\"{took}: nothing was written.", r.spec.backup_name);
        println!(
            "Would create {}, would update {}, unchanged {}, skipped (exists) {}, skipped (policy) {}, refused {}.",
            c.would_create, c.would_update, c.unchanged, c.skipped_exists, c.skipped_policy, c.failed
        );
        print_items(s.items.iter().filter(|i| i.action != ItemAction::SkippedPolicy));
    } else {
        println!("Restore \"{}\" of backup \"{}\" {}{took}.", r.metadata.name, r.spec.backup_name, s.phase);
        println!(
            "Created {}, updated {}, unchanged {}, skipped (exists) {}, skipped (policy) {}, failed {}.",
            c.created, c.updated, c.unchanged, c.skipped_exists, c.skipped_policy, c.failed
        );
        let failed: Vec<&RestoreItem> = s.items.iter().filter(|i| i.action == ItemAction::Failed).collect();
        if !failed.is_empty() {
            println!("\nFailed:");
            print_items(failed.into_iter());
        }
        if c.updated > 0 {
            println!("\nUpdated:");
            print_items(s.items.iter().filter(|i| i.action == ItemAction::Updated));
        }
    }
    if !s.warnings.is_empty() {
        println!("\nWarnings:");
        for w in &s.warnings {
            println!("  - {w}");
        }
    }
}

fn print_items<'a>(items: impl Iterator<Item = &'a RestoreItem>) {
    let mut t = table(&["ACTION", "RESOURCE", "NAMESPACE", "NAME", "REASON"]);
    let mut diffs = Vec::new();
    for i in items {
        t.add_row(vec![
            i.action.to_string(),
            i.resource.clone(),
            i.namespace.clone().unwrap_or_else(|| "-".into()),
            i.name.clone(),
            i.reason.clone().unwrap_or_default(),
        ]);
        if let Some(diff) = &i.diff {
            diffs.push((i, diff));
        }
    }
    print_table(&t);
    for (i, diff) in diffs {
        let ns = i.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
        println!("\n--- {} {ns}{} (live) vs backup:", i.resource, i.name);
        for op in diff.as_array().into_iter().flatten() {
            let path = op["path"].as_str().unwrap_or("");
            match op["op"].as_str() {
                Some("remove") => println!("  - {path}"),
                Some("add") => println!("  + {path}: {}", op["value"]),
                _ => println!("  ~ {path}: {}", op["value"]),
            }
        }
    }
}

/// `kubectl backup restore --help`.
pub(crate) const RESTORE_EXAMPLES: &str = "\
Examples:
  # Preview bringing workspace shop back as it was at 10:00 UTC yesterday, with diffs
  kubectl backup restore shop --at 2026-12-01T10:00Z --dry-run

  # Restore namespace shop into a new namespace shop-copy
  kubectl backup restore shop-1 --namespace-mapping shop:shop-copy

  # Restore only the ConfigMaps and Secrets of namespace shop from an encrypted backup
  kubectl backup restore shop-2 -n shop --include-resources configmaps,secrets --identity team.key

  # Have the in-cluster controller restore namespace shop, with your rights (a Restore resource)
  kubectl backup restore shop-1 -n shop --in-cluster

  # Restore a production backup into the staging cluster
  kubectl backup restore cluster-1 --location s3://backups/prod --context staging";

/// `restore BACKUP`, or `restore list|describe`.
#[derive(Debug, Args, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RestoreCommand {
    #[command(subcommand)]
    pub history: Option<super::requests::RestoreHistory>,
    #[command(flatten)]
    pub run: RestoreArgs,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// The backup to restore (with --at: the workspace, i.e. namespace, to bring back).
    #[arg(required = true)]
    pub backup: Option<String>,
    /// Restore workspace BACKUP as it was at this time (RFC 3339, e.g. 2026-12-01T10:00Z): from the
    /// newest backup holding it taken at or before then, limited to that namespace.
    #[arg(long, value_name = "TIME", conflicts_with = "in_cluster")]
    pub at: Option<String>,
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
    /// Give restored PersistentVolumeClaims and PersistentVolumes of StorageClass SRC the class DST
    /// (e.g. a class the target cluster has), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SRC:DST")]
    pub storage_class_mapping: Vec<String>,
    /// Restore the data of the volumes the backup holds (the default): each claim the restore
    /// creates gets its data from a mover Pod before the workloads that use it are created.
    /// --include-volumes=false restores the objects only.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub include_volumes: bool,
    #[command(flatten)]
    pub mover: super::backup::MoverArgs,
    /// Write nothing: have the API server validate each object (dryRun=All) and show what would be
    /// created, updated or skipped, with a diff for existing objects that differ.
    #[arg(long)]
    pub dry_run: bool,
    /// Have the in-cluster controller run it: creates a Restore resource (in the one namespace
    /// restored, else the install namespace), which restores with your rights, not the
    /// controller's. Needs the in-cluster component.
    #[arg(long, conflicts_with = "dry_run")]
    pub in_cluster: bool,
    /// Wait for the restore to finish. With --wait=false it runs in the background.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

impl RestoreArgs {
    /// The backup to restore (clap requires it unless `list` or `describe` is given).
    pub fn backup(&self) -> &str {
        self.backup.as_deref().unwrap_or_default()
    }

    pub fn mapping(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        pairs("--namespace-mapping", &self.namespace_mapping, "shop:shop-copy")
    }

    pub fn storage_class_mapping(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        pairs("--storage-class-mapping", &self.storage_class_mapping, "gp2:standard")
    }
}

/// `SRC:DST` pairs of a mapping flag, each source once.
fn pairs(flag: &str, given: &[String], example: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut map = std::collections::BTreeMap::new();
    for pair in given.iter().filter(|p| !p.trim().is_empty()) {
        let (src, dst) = pair
            .split_once(':')
            .map(|(a, b)| (a.trim(), b.trim()))
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| format!("invalid {flag} {pair:?}: expected SRC:DST, e.g. {example}"))?;
        if map.insert(src.to_string(), dst.to_string()).is_some() {
            return Err(format!("invalid {flag}: {src:?} is mapped twice"));
        }
    }
    Ok(map)
}
