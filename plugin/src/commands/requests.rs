//! The in-cluster side of `create` and `restore` (`--in-cluster`: a Backup or Restore resource the
//! controller acts on), restore history (`restore list|describe`) and `logs`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::model::{Filters, Phase};
use kubectl_backup_core::requests::{
    BackupRequest, BackupRequestSpec, RequestStatus, RestoreRequest, RestoreRequestSpec,
};
use kubectl_backup_core::restore::record;
use kubectl_backup_core::runlog;

use super::throttle;
use crate::args::{Column, Globals, ListOutputArg, Output, OutputArg};
use crate::open_location;
use crate::output::{age, print_document};

/// Where a request lives: the one namespace it is about (so a tenant's request is in their own
/// namespace and confined to it), else the install namespace.
pub fn request_namespace(cli: &Globals, filters: &Filters) -> String {
    match filters.included_namespaces.as_slice() {
        [only] if !only.contains(['*', '?', '[']) => only.clone(),
        _ => cli.location.install_namespace.clone(),
    }
}

/// The location a request names: a BackupLocation named with --location; a URL only for a
/// request in the install namespace (elsewhere the controller refuses URLs, so the request uses the
/// cluster's default location, and a note says so).
fn request_location(cli: &Globals, ns: &str) -> Option<String> {
    let given = cli.location.location.clone()?;
    if kubectl_backup_core::locations::is_name(&given) || ns == cli.location.install_namespace {
        return Some(given);
    }
    eprintln!(
        "note: the request in namespace {ns} uses the cluster's default BackupLocation, not the URL {}: outside {} requests may name only a BackupLocation (--location NAME)",
        kubectl_backup_core::error::redact(&given),
        cli.location.install_namespace
    );
    None
}

/// What `create --in-cluster` asks the controller for.
pub struct NewBackup<'a> {
    pub name: &'a str,
    pub filters: Filters,
    pub ttl: &'a str,
    pub include_volumes: Option<bool>,
}

/// Creates a Backup request and, with `wait`, follows it to the end.
pub async fn create_backup(cli: &Globals, request: NewBackup<'_>, wait: bool, output: Output) -> Result<ExitCode> {
    let NewBackup { name, filters, ttl, include_volumes } = request;
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let ns = request_namespace(cli, &filters);
    let api: Api<BackupRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let spec = BackupRequestSpec {
        filters,
        ttl: Some(ttl.to_string()),
        location: request_location(cli, &ns),
        etcd: None,
        include_volumes,
    };
    let obj = BackupRequest { metadata: meta(name, &ns), spec, status: None };
    api.create(&PostParams::default(), &obj).await.map_err(|e| created_error("Backup", name, &ns, e))?;
    eprintln!("backup.kubectl-backup.dev/{name} created in namespace {ns}");
    if !wait {
        eprintln!("Follow it with: kubectl get backups.kubectl-backup.dev {name} -n {ns} -w");
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(&api, name).await?;
    finish(&done, output, "backup", name)
}

/// Creates a Restore request and, with `wait`, follows it to the end.
pub async fn create_restore(
    cli: &Globals,
    name: &str,
    spec: RestoreRequestSpec,
    wait: bool,
    output: Output,
) -> Result<ExitCode> {
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    // Mapping namespaces is an admin's restore, from the install namespace; otherwise the one
    // namespace restored.
    let ns = if spec.namespace_mapping.is_empty() {
        request_namespace(cli, &spec.filters)
    } else {
        cli.location.install_namespace.clone()
    };
    let api: Api<RestoreRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let spec = RestoreRequestSpec { location: request_location(cli, &ns), ..spec };
    let obj = RestoreRequest { metadata: meta(name, &ns), spec, status: None };
    api.create(&PostParams::default(), &obj).await.map_err(|e| created_error("Restore", name, &ns, e))?;
    eprintln!("restore.kubectl-backup.dev/{name} created in namespace {ns}");
    if !wait {
        eprintln!("Follow it with: kubectl backup restore describe {name} -n {ns}");
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(&api, name).await?;
    finish(&done, output, "restore", name)
}

fn meta(name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.to_string()), namespace: Some(ns.to_string()), ..Default::default() }
}

fn created_error(kind: &str, name: &str, ns: &str, e: kube::Error) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => anyhow!(
            "cannot create {kind} {name} in namespace {ns}: the {kind} resource is not installed in this cluster (kubectl backup install, or the Helm chart)"
        ),
        _ => anyhow!("cannot create {kind} {name} in namespace {ns}: {}", kubectl_backup_core::error::kube_message(&e)),
    }
}

/// Polls the request's status until it is finished, printing its progress on stderr.
async fn follow<K>(api: &Api<K>, name: &str) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + HasStatus,
{
    let mut last = String::new();
    loop {
        let obj = api.get(name).await.with_context(|| format!("reading {name}"))?;
        let status = obj.request_status().cloned().unwrap_or_default();
        if status.finished() {
            return Ok(obj);
        }
        let now = match (&status.phase, status.progress) {
            (Some(p), Some(pr)) => format!("{p}: {} of {} objects", pr.items_done, pr.total_items),
            (Some(p), None) => p.clone(),
            (None, _) => "waiting for the controller".into(),
        };
        if now != last {
            eprintln!("{now}");
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints a finished request and returns the exit code of its phase.
fn finish<K: serde::Serialize + HasStatus>(obj: &K, output: Output, what: &str, name: &str) -> Result<ExitCode> {
    let status = obj.request_status().cloned().unwrap_or_default();
    match output {
        Output::Table => print_status(what, name, &status),
        format => print_document(obj, format)?,
    }
    let phase = match status.phase.as_deref() {
        Some("Completed") => Phase::Completed,
        Some("PartiallyFailed") => Phase::PartiallyFailed,
        _ => Phase::Failed,
    };
    Ok(super::exit_for(phase))
}

fn print_status(what: &str, name: &str, s: &RequestStatus) {
    println!("{what} {name}: {}", s.phase.as_deref().unwrap_or("Pending"));
    if let Some(m) = &s.message {
        println!("  {m}");
    }
    if let Some(by) = &s.requested_by {
        println!("  Requested by: {by}");
    }
    if let Some(l) = &s.location {
        println!("  Location:     {l}");
    }
    for (title, items) in [("Errors", &s.errors), ("Warnings", &s.warnings)] {
        if !items.is_empty() {
            println!("{title}:");
            for i in items {
                println!("  - {i}");
            }
        }
    }
}

/// Request resources whose status can be read the same way.
pub trait HasStatus {
    fn request_status(&self) -> Option<&RequestStatus>;
}

impl HasStatus for BackupRequest {
    fn request_status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
}

impl HasStatus for RestoreRequest {
    fn request_status(&self) -> Option<&RequestStatus> {
        self.status.as_ref()
    }
}

/// `restore list` and `restore describe`.
#[derive(Debug, Subcommand, Clone)]
pub enum RestoreHistory {
    /// Past and running restores: Restore resources in the cluster and the records in the location.
    #[command(after_help = RESTORE_LIST_EXAMPLES)]
    List(RestoreListArgs),
    /// One restore: its Restore resource, or its record in the location.
    #[command(after_help = RESTORE_DESCRIBE_EXAMPLES)]
    Describe(RestoreDescribeArgs),
}

const RESTORE_LIST_EXAMPLES: &str = "\
Examples:
  # Every restore: Restore resources in namespaces you may list, and those recorded in the location
  kubectl backup restore list

  # Restore resources of namespace shop only, as JSON
  kubectl backup restore list -n shop -o json";

const RESTORE_DESCRIBE_EXAMPLES: &str = "\
Examples:
  # A Restore resource's progress and outcome
  kubectl backup restore describe shop-1-20261202150000 -n shop

  # A restore recorded in the location, as YAML
  kubectl backup restore describe shop-1-20261202150000 -o yaml";

#[derive(Debug, Args, Clone)]
pub struct RestoreListArgs {
    /// Only Restore resources in this namespace (default: every namespace you may list).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub output: ListOutputArg,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreDescribeArgs {
    /// The Restore resource's name, or the name of a restore recorded in the location.
    pub name: String,
    /// The Restore resource's namespace (default: every namespace you may list).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// The Restore resources the user may list: in `ns`, or in every namespace. None when the
/// resource is not installed; an error message when they may not be listed.
async fn cluster_restores(cli: &Globals, ns: Option<&str>) -> std::result::Result<Vec<RestoreRequest>, String> {
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await.map_err(|e| e.to_string())?;
    let api: Api<RestoreRequest> = match ns {
        Some(ns) => Api::namespaced(cluster.client.clone(), ns),
        None => Api::all(cluster.client.clone()),
    };
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(kubectl_backup_core::error::kube_message(&e)),
    }
}

pub async fn history(cli: &Globals, h: &RestoreHistory) -> Result<ExitCode> {
    match h {
        RestoreHistory::List(a) => list(cli, a).await,
        RestoreHistory::Describe(a) => describe(cli, a).await,
    }
}

async fn list(cli: &Globals, a: &RestoreListArgs) -> Result<ExitCode> {
    let in_cluster = cluster_restores(cli, a.namespace.as_deref()).await;
    let recorded = match open_location::open(cli, None).await {
        Ok(l) => record::list(&l.store).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let (Err(c), Err(l)) = (&in_cluster, &recorded) {
        bail!("cannot list restores: in the cluster: {c}; in the location: {l}");
    }
    for (what, r) in [("in the cluster", in_cluster.as_ref().err()), ("in the location", recorded.as_ref().err())] {
        if let Some(e) = r {
            eprintln!("warning: restores {what} not listed: {e}");
        }
    }
    let in_cluster = in_cluster.unwrap_or_default();
    let (records, unreadable) = recorded.unwrap_or_default();
    for (name, why) in &unreadable {
        eprintln!("warning: restore record {name} cannot be read: {why}");
    }
    let document = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": in_cluster.iter().map(|r| serde_json::to_value(r).unwrap_or_default())
            .chain(records.iter().map(|r| serde_json::to_value(r).unwrap_or_default())).collect::<Vec<_>>(),
    });
    let rows: Vec<Listed> = in_cluster
        .into_iter()
        .map(|r| Listed::Cluster(Box::new(r)))
        .chain(records.into_iter().map(|r| Listed::Recorded(Box::new(r))))
        .collect();
    a.output.print("restore", COLUMNS, &rows, &document)?;
    Ok(ExitCode::SUCCESS)
}

/// One row of `restore list`: a Restore resource, or a restore recorded in the location.
enum Listed {
    Cluster(Box<RestoreRequest>),
    Recorded(Box<kubectl_backup_core::model::Restore>),
}

impl Listed {
    fn status(&self) -> RequestStatus {
        match self {
            Listed::Cluster(r) => r.status.clone().unwrap_or_default(),
            Listed::Recorded(_) => RequestStatus::default(),
        }
    }
}

const COLUMNS: &[Column<Listed>] = &[
    Column::new("NAME", |l| match l {
        Listed::Cluster(r) => r.metadata.name.clone().unwrap_or_default(),
        Listed::Recorded(r) => r.metadata.name.clone(),
    }),
    Column::new("WHERE", |l| match l {
        Listed::Cluster(r) => format!("namespace/{}", r.metadata.namespace.as_deref().unwrap_or("")),
        Listed::Recorded(_) => "location".into(),
    }),
    Column::new("BACKUP", |l| match l {
        Listed::Cluster(r) => r.spec.backup_name.clone(),
        Listed::Recorded(r) => r.spec.backup_name.clone(),
    }),
    Column::new("PHASE", |l| match l {
        Listed::Cluster(r) => r.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()),
        Listed::Recorded(r) => r.status.phase.to_string(),
    }),
    Column::new("OBJECTS", |l| match l {
        Listed::Cluster(_) => {
            l.status().progress.map(|p| format!("{}/{}", p.items_done, p.total_items)).unwrap_or_else(|| "-".into())
        }
        Listed::Recorded(r) => format!("{}/{}", r.status.progress.items_restored, r.status.progress.total_items),
    }),
    Column::new("AGE", |l| match l {
        Listed::Cluster(r) => age(r.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        Listed::Recorded(r) => age(r.status.timing.start_timestamp),
    }),
    Column::wide("BY", |l| l.status().requested_by.unwrap_or_else(|| "-".into())),
    Column::wide("MESSAGE", |l| match l {
        Listed::Cluster(_) => l.status().message.unwrap_or_else(|| "-".into()),
        Listed::Recorded(r) => r.status.counts.summary(),
    }),
];

async fn describe(cli: &Globals, a: &RestoreDescribeArgs) -> Result<ExitCode> {
    let in_cluster = cluster_restores(cli, a.namespace.as_deref()).await.unwrap_or_default();
    let found: Vec<&RestoreRequest> =
        in_cluster.iter().filter(|r| r.metadata.name.as_deref() == Some(a.name.as_str())).collect();
    if let [r] = found.as_slice() {
        let s = r.status.clone().unwrap_or_default();
        if a.output.output != Output::Table {
            print_document(r, a.output.output)?;
            return Ok(ExitCode::SUCCESS);
        }
        println!("Name:          {}", a.name);
        println!("Namespace:     {}", r.metadata.namespace.as_deref().unwrap_or(""));
        println!("Backup:        {}", r.spec.backup_name);
        println!("Phase:         {}", s.phase.as_deref().unwrap_or("Pending"));
        if let Some(p) = s.progress {
            println!("Progress:      {} of {} objects", p.items_done, p.total_items);
        }
        println!("Requested by:  {}", s.requested_by.as_deref().unwrap_or("-"));
        println!("Started:       {}", s.start_time.as_deref().unwrap_or("-"));
        println!("Completed:     {}", s.completion_time.as_deref().unwrap_or("-"));
        if let Some(rec) = &s.record {
            println!("Record:        {rec} (kubectl backup logs restore/{rec})");
        }
        print_status("Restore", &a.name, &s);
        return Ok(ExitCode::SUCCESS);
    }
    if found.len() > 1 {
        bail!("restore {:?} exists in several namespaces; name one with -n", a.name);
    }
    let location = open_location::open(cli, None).await?;
    match record::read(&location.store, &a.name).await? {
        Some(r) => {
            match a.output.output {
                Output::Table => super::restore::print_summary(&r),
                format => print_document(&r, format)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        None => bail!(
            "restore {:?} not found: no Restore resource of that name{} and no record in {}",
            a.name,
            a.namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default(),
            location.display()
        ),
    }
}

#[derive(Debug, Args, Clone)]
pub struct LogsArgs {
    /// backup/NAME, restore/NAME, or a backup's NAME.
    pub name: String,
}

pub const LOGS_EXAMPLES: &str = "\
Examples:
  # The log of backup nightly-1, as it was written next to the backup
  kubectl backup logs nightly-1

  # The log of a restore (names from `kubectl backup restore list`)
  kubectl backup logs restore/nightly-1-20261202150000";

/// Prints the log stored next to a backup or a restore.
pub async fn logs(cli: &Globals, a: &LogsArgs) -> Result<ExitCode> {
    let (kind, name) = match a.name.split_once('/') {
        Some(("backup" | "backups", n)) => ("backup", n),
        Some(("restore" | "restores", n)) => ("restore", n),
        Some((other, _)) => {
            bail!("invalid name {:?}: expected backup/NAME, restore/NAME or NAME, not {other}/", a.name)
        }
        None => ("backup", a.name.as_str()),
    };
    kubectl_backup_core::input::validate_name(if kind == "backup" { "backup name" } else { "restore name" }, name)?;
    let location = open_location::open(cli, None).await?;
    let dir = match kind {
        "backup" => kubectl_backup_core::committed::dir::<kubectl_backup_core::catalog::Objects>(name),
        _ => record::dir(name),
    };
    match runlog::read(&location.store, &dir).await? {
        Some(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            bail!("no log of {kind} {name:?} in {} (logs are kept for runs since this version)", location.display())
        }
    }
}
