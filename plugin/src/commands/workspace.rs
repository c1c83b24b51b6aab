//! `workspace new|list`: namespaces as workspaces, as the webhook sees them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kubectl_backup_core::input::validate_name;
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::{
    EPHEMERAL_ANNOTATION, EPHEMERAL_LABEL, RESTORE_FROM_ANNOTATION, RESTORE_STATUS_ANNOTATION, catalog,
};
use serde::Serialize;

use super::throttle;
use crate::args::{Column, Globals, ListOutputArg};
use crate::open_location;
use crate::output::age;

#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    pub command: WorkspaceCommand,
}

/// `kubectl backup workspace --help`.
pub(crate) const WORKSPACE_EXAMPLES: &str = "\
Examples:
  # Create workspace shop; if a backup of namespace shop exists, the webhook restores it
  kubectl backup workspace new shop

  # Create an ephemeral workspace for a pull request (never backed up or restored)
  kubectl backup workspace new pr-42 --ephemeral

  # List the workspaces with their newest backup and restore status
  kubectl backup workspace list

  # Every point in time workspace shop can be restored to
  kubectl backup workspace history shop";

const HISTORY_EXAMPLES: &str = "\
Examples:
  # Every backup holding workspace shop, newest first, with what each stored
  kubectl backup workspace history shop

  # With who took each backup and the bytes each one uploaded
  kubectl backup workspace history shop -o wide

  # As JSON: the backups' full documents
  kubectl backup workspace history shop -o json";

const NEW_EXAMPLES: &str = "\
Examples:
  # Create workspace shop; if a backup of namespace shop exists, the webhook restores it
  kubectl backup workspace new shop

  # Create an ephemeral workspace for a pull request (never backed up or restored)
  kubectl backup workspace new pr-42 --ephemeral";

const LIST_EXAMPLES: &str = "\
Examples:
  # List the workspaces: ephemeral or not, newest backup, restore status
  kubectl backup workspace list

  # Compare them with the backups in another location, as JSON
  kubectl backup workspace list --location s3://backups/prod -o json

  # With each newest backup's age and the namespace's status
  kubectl backup workspace list -o wide

  # The workspaces that have no backup yet (a workspace's items have name, not metadata.name)
  kubectl backup workspace list -o jsonpath='{.items[?(!@.newestBackup)].name}'";

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace (a namespace). If a backup of it exists, the webhook restores it.
    #[command(after_help = NEW_EXAMPLES)]
    New(NewArgs),
    /// List workspaces: ephemeral or not, newest backup, restore status.
    #[command(alias = "ls", alias = "get", after_help = LIST_EXAMPLES)]
    List(ListOutputArg),
    /// The points in time a workspace can be restored to: every backup holding it, newest first.
    #[command(after_help = HISTORY_EXAMPLES)]
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The workspace (namespace).
    pub name: String,
    #[command(flatten)]
    pub output: ListOutputArg,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    pub name: String,
    /// Ephemeral: never backed up (unless named explicitly), never restored. Sets the
    /// kubectl-backup.dev/ephemeral label itself, so it holds without the in-cluster component.
    #[arg(long)]
    pub ephemeral: bool,
}

/// Namespaces that are not workspaces.
const SYSTEM: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

pub async fn run(cli: &Globals, args: &WorkspaceArgs) -> Result<ExitCode> {
    match &args.command {
        WorkspaceCommand::New(a) => new(cli, a).await,
        WorkspaceCommand::List(o) => list(cli, o).await,
        WorkspaceCommand::History(a) => history(cli, a).await,
    }
}

/// The columns of `workspace history`.
const HISTORY_COLUMNS: &[Column<kubectl_backup_core::model::Backup>] = &[
    Column::new("BACKUP", |b| b.metadata.name.clone()),
    Column::new("TAKEN", |b| b.metadata.creation_timestamp.map(|t| t.to_string()).unwrap_or_else(|| "-".into())),
    Column::new("AGE", |b| age(b.metadata.creation_timestamp)),
    Column::new("PHASE", |b| b.status.phase.to_string()),
    Column::new("ITEMS", |b| b.status.progress.items_backed_up.to_string()),
    Column::new("STORED", |b| match &b.status.incremental {
        Some(i) => format!("{} new, {} reused", i.objects_stored, i.objects_reused),
        None => "full archive".into(),
    }),
    Column::wide("BY", |b| b.spec.schedule.clone().unwrap_or_else(|| "-".into())),
    Column::wide("UPLOADED", |b| b.bytes_stored().to_string()),
];

async fn history(cli: &Globals, a: &HistoryArgs) -> Result<ExitCode> {
    validate_name("workspace name", &a.name)?;
    let store = open_location::open(cli, None).await?.store;
    let listing = catalog::list(&store).await?;
    let rows: Vec<kubectl_backup_core::model::Backup> =
        catalog::history(&listing.backups, &a.name).into_iter().cloned().collect();
    if rows.is_empty() && a.output.is_table() {
        eprintln!("no backup of workspace {:?} in {}", a.name, store.url());
        return Ok(ExitCode::SUCCESS);
    }
    let document = kubectl_backup_core::model::BackupList::new(rows.clone());
    a.output.print("backup", HISTORY_COLUMNS, &rows, &document)?;
    Ok(ExitCode::SUCCESS)
}

async fn new(cli: &Globals, a: &NewArgs) -> Result<ExitCode> {
    validate_name("workspace name", &a.name)?;
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let mut annotations = BTreeMap::new();
    let mut labels = BTreeMap::new();
    if a.ephemeral {
        // The label is what backups and the webhook act on; the annotation records the request
        // (the webhook's own signal, kept for clusters that watch for it).
        annotations.insert(EPHEMERAL_ANNOTATION.to_string(), "true".to_string());
        labels.insert(EPHEMERAL_LABEL.to_string(), "true".to_string());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(a.name.clone()),
            annotations: Some(annotations),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api.create(&PostParams::default(), &ns).await.map_err(|e| {
        anyhow::anyhow!("creating workspace {:?}: {}", a.name, kubectl_backup_core::error::kube_message(&e))
    })?;
    let what = if created.labels().get(EPHEMERAL_LABEL).is_some_and(|v| v == "true") {
        " (ephemeral)".to_string()
    } else if let Some(b) = created.annotations().get(RESTORE_FROM_ANNOTATION) {
        format!("; restoring from backup {b:?}")
    } else {
        String::new()
    };
    println!("workspace \"{}\" created{what}", a.name);
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkspaceRow {
    name: String,
    ephemeral: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    newest_backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_status: Option<String>,
    /// Table only: the namespace's age, phase and newest backup's time.
    #[serde(skip)]
    created: Option<jiff::Timestamp>,
    #[serde(skip)]
    phase: Option<String>,
    #[serde(skip)]
    backed_up: Option<jiff::Timestamp>,
}

/// The columns of `workspace list` (and `-o wide`).
const COLUMNS: &[Column<WorkspaceRow>] = &[
    Column::new("NAME", |r| r.name.clone()),
    Column::new("EPHEMERAL", |r| r.ephemeral.to_string()),
    Column::new("NEWEST BACKUP", |r| r.newest_backup.clone().unwrap_or_else(|| "-".into())),
    Column::new("RESTORED FROM", |r| r.restore_from.clone().unwrap_or_else(|| "-".into())),
    Column::new("RESTORE STATUS", |r| r.restore_status.clone().unwrap_or_else(|| "-".into())),
    Column::new("AGE", |r| age(r.created)),
    Column::wide("BACKED UP", |r| r.backed_up.map(|t| format!("{} ago", age(Some(t)))).unwrap_or_else(|| "-".into())),
    Column::wide("STATUS", |r| r.phase.clone().unwrap_or_else(|| "-".into())),
];

async fn list(cli: &Globals, output: &ListOutputArg) -> Result<ExitCode> {
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let namespaces = api
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing namespaces: {}", kubectl_backup_core::error::kube_message(&e)))?;
    let store = open_location::open(cli, Some(&cluster.client)).await?.store;
    let newest = catalog::newest_per_namespace(&catalog::list(&store).await?.backups);
    let mut rows = Vec::new();
    for ns in namespaces.items.iter().filter(|n| !SYSTEM.contains(&n.name_any().as_str())) {
        let name = ns.name_any();
        let newest = newest.get(&name);
        rows.push(WorkspaceRow {
            ephemeral: ns.labels().get(EPHEMERAL_LABEL).is_some_and(|v| v == "true"),
            newest_backup: newest.map(|b| b.metadata.name.clone()),
            restore_from: ns.annotations().get(RESTORE_FROM_ANNOTATION).cloned(),
            restore_status: ns.annotations().get(RESTORE_STATUS_ANNOTATION).cloned(),
            created: ns.metadata.creation_timestamp.as_ref().map(|t| t.0),
            phase: ns.status.as_ref().and_then(|s| s.phase.clone()),
            backed_up: newest.and_then(|b| b.metadata.creation_timestamp),
            name,
        });
    }
    let document =
        serde_json::json!({"apiVersion": kubectl_backup_core::API_VERSION, "kind": "WorkspaceList", "items": rows});
    output.print("namespace", COLUMNS, &rows, &document)?;
    Ok(ExitCode::SUCCESS)
}
