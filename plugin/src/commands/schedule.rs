//! `schedule create|list|describe|pause|resume|delete`: BackupSchedules, run by the in-cluster
//! component.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubectl_backup_core::crd::{
    BackupSchedule, BackupScheduleSpec, BackupScheduleStatus, EtcdScheduleSource, EtcdScheduleType,
};
use kubectl_backup_core::error::kube_message;
use kubectl_backup_core::filter::Selection;
use kubectl_backup_core::input::{parse_duration, validate_name};
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::schedule::Schedule;

use super::throttle;
use crate::args::{Column, Globals, ListOutputArg, Output, OutputArg, SelectionArgs};
use crate::output::print_document;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// `kubectl backup schedule --help`.
pub(crate) const SCHEDULE_EXAMPLES: &str = "\
Examples:
  # Back up the whole cluster every night at 02:00 UTC and keep each backup 30 days
  kubectl backup schedule create nightly --schedule \"0 2 * * *\" --ttl 720h

  # See when each schedule last ran, its last result and its next run
  kubectl backup schedule list

  # Stop a schedule for a maintenance window, then start it again
  kubectl backup schedule pause nightly
  kubectl backup schedule resume nightly";

const CREATE_EXAMPLES: &str = "\
Examples:
  # Back up the whole cluster every night at 02:00 UTC and keep each backup 30 days
  kubectl backup schedule create nightly --schedule \"0 2 * * *\" --ttl 720h

  # Back up namespace shop every hour to the location archive, keeping each backup a week
  kubectl backup schedule create shop-hourly --schedule @hourly --include-namespaces shop --ttl 168h --backup-location archive

  # Back up the whole cluster at 01:30 Paris time, summer time or not
  kubectl backup schedule create nightly-eu --schedule \"30 1 * * *\" --time-zone Europe/Paris

  # A team's own schedule in its namespace (it backs up only that namespace)
  kubectl backup schedule create daily --schedule @daily -n shop

  # Snapshot etcd every 6 hours, with the client certificate in the Secret etcd-client
  kubectl backup schedule create etcd --schedule \"0 */6 * * *\" --etcd-endpoints https://10.0.0.1:2379 --etcd-tls-secret etcd-client";

const LIST_EXAMPLES: &str = "\
Examples:
  # List the schedules of the install namespace: last backup, last result, next run
  kubectl backup schedule list

  # List the schedules of every namespace, with location, TTL, last success and last error
  kubectl backup schedule list -A -o wide

  # Each schedule's name and last error, one per line
  kubectl backup schedule list -o jsonpath='{range .items[*]}{.metadata.name}: {.status.lastError}{\"\\n\"}{end}'

  # The names of the schedules of namespace shop, one per line, for scripts
  kubectl backup schedule list -n shop -o name";

const DESCRIBE_EXAMPLES: &str = "\
Examples:
  # Show schedule nightly: what it backs up, its last and next run, the last result
  kubectl backup schedule describe nightly

  # Print the BackupSchedule with its status as YAML
  kubectl backup schedule describe nightly -o yaml

  # Describe a schedule of namespace shop
  kubectl backup schedule describe daily -n shop";

const PAUSE_EXAMPLES: &str = "\
Examples:
  # Pause schedule nightly for a maintenance window
  kubectl backup schedule pause nightly

  # Pause a schedule of namespace shop
  kubectl backup schedule pause daily -n shop";

const RESUME_EXAMPLES: &str = "\
Examples:
  # Resume schedule nightly; it runs again at its next time
  kubectl backup schedule resume nightly

  # Resume a schedule of namespace shop
  kubectl backup schedule resume daily -n shop";

const DELETE_EXAMPLES: &str = "\
Examples:
  # Delete schedule nightly (the backups it made are kept)
  kubectl backup schedule delete nightly

  # Delete a schedule of namespace shop
  kubectl backup schedule delete daily -n shop";

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule.
    #[command(after_help = CREATE_EXAMPLES)]
    Create(Box<CreateArgs>),
    /// List schedules.
    #[command(alias = "ls", alias = "get", after_help = LIST_EXAMPLES)]
    List(ListArgs),
    /// Show a schedule, its last and next run and last result.
    #[command(after_help = DESCRIBE_EXAMPLES)]
    Describe(NameArgs),
    /// Stop running a schedule until resumed.
    #[command(after_help = PAUSE_EXAMPLES)]
    Pause(NameArgs),
    #[command(after_help = RESUME_EXAMPLES)]
    Resume(NameArgs),
    #[command(alias = "rm", after_help = DELETE_EXAMPLES)]
    Delete(NameArgs),
}

#[derive(Debug, Args)]
pub struct Where {
    /// Namespace of the schedule (default: the install namespace), as -n is everywhere in kubectl.
    /// A schedule outside the install namespace backs up only its own namespace; what an
    /// install-namespace schedule backs up is --include-namespaces.
    #[arg(short = 'n', long = "namespace", visible_alias = "schedule-namespace", value_name = "NS")]
    pub schedule_namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    /// Cron (5 fields, or 6 with seconds) or @hourly, @daily, @weekly, @every-2-weeks, @monthly, @every-2-months.
    #[arg(long, value_name = "CRON")]
    pub schedule: String,
    /// IANA time zone of the schedule (default UTC).
    #[arg(long, value_name = "TZ")]
    pub time_zone: Option<String>,
    /// Backups are named <prefix>-<YYYYMMDDhhmmss> (default: the schedule's name).
    #[arg(long, value_name = "PREFIX")]
    pub name_prefix: Option<String>,
    #[command(flatten)]
    pub filters: SelectionArgs,
    /// How long each backup is kept.
    #[arg(long, default_value = "720h", value_name = "DURATION")]
    pub ttl: String,
    /// BackupLocation to use (default: the default location).
    #[arg(long = "backup-location", value_name = "NAME")]
    pub backup_location: Option<String>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    /// Back up the data of the PersistentVolumeClaims in scope too (default: the BackupLocation's
    /// includeVolumes). The controller's mover Pods act as the admin's --volume-identity.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub include_volumes: Option<bool>,
    /// Back up this etcd instead of Kubernetes objects (comma list of URLs).
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub etcd_endpoints: Vec<String>,
    /// What the etcd backups hold: Snapshot (default), Keys or KeysJson (any case; the old
    /// snapshot, keys and keys-json still work).
    #[arg(long, value_name = "Snapshot|Keys|KeysJson")]
    pub etcd_type: Option<EtcdScheduleType>,
    /// A Secret with ca.crt, tls.crt and tls.key for the etcd client.
    #[arg(long, value_name = "NAME")]
    pub etcd_tls_secret: Option<String>,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub at: Where,
    /// Schedules of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub output: ListOutputArg,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub output: OutputArg,
}

pub async fn run(cli: &Globals, args: &ScheduleArgs) -> Result<ExitCode> {
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let ns_of = |w: &Where| w.schedule_namespace.clone().unwrap_or_else(|| cli.location.install_namespace.clone());
    let api = |ns: &str| -> Api<BackupSchedule> { Api::namespaced(cluster.client.clone(), ns) };
    match &args.command {
        ScheduleCommand::Create(a) => {
            create(&api(&ns_of(&a.at)), &ns_of(&a.at), &cli.location.install_namespace, a).await
        }
        ScheduleCommand::List(l) => {
            let api = if l.all_namespaces { Api::all(cluster.client.clone()) } else { api(&ns_of(&l.at)) };
            list(&api, &l.output).await
        }
        ScheduleCommand::Describe(n) => describe(&api(&ns_of(&n.at)), n).await,
        ScheduleCommand::Pause(n) => set_paused(&api(&ns_of(&n.at)), &n.name, true).await,
        ScheduleCommand::Resume(n) => set_paused(&api(&ns_of(&n.at)), &n.name, false).await,
        ScheduleCommand::Delete(n) => {
            api(&ns_of(&n.at))
                .delete(&n.name, &DeleteParams::default())
                .await
                .map_err(|e| anyhow!("deleting schedule {}: {}", n.name, kube_message(&e)))?;
            println!("schedule \"{}\" deleted; its backups are kept", n.name);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(api: &Api<BackupSchedule>, ns: &str, install_ns: &str, a: &CreateArgs) -> Result<ExitCode> {
    validate_name("schedule name", &a.name)?;
    Schedule::parse(&a.schedule, a.time_zone.as_deref())?;
    parse_duration("--ttl", &a.ttl)?;
    if let Some(p) = &a.name_prefix {
        validate_name("--name-prefix", p)?;
    }
    let mut filters = a.filters.filters();
    Selection::new(&filters)?;
    if ns != install_ns && filters.included_namespaces.is_empty() {
        // A schedule outside the install namespace backs up its own namespace.
        filters.included_namespaces = vec![ns.to_string()];
    }
    let etcd = (!a.etcd_endpoints.is_empty()).then(|| EtcdScheduleSource {
        endpoints: a.etcd_endpoints.clone(),
        r#type: a.etcd_type.unwrap_or_default(),
        prefix: None,
        tls_secret: a.etcd_tls_secret.clone(),
    });
    let spec = BackupScheduleSpec {
        schedule: a.schedule.clone(),
        time_zone: a.time_zone.clone(),
        name_prefix: a.name_prefix.clone(),
        filters,
        ttl: Some(a.ttl.clone()),
        location: a.backup_location.clone(),
        paused: a.paused,
        etcd,
        include_volumes: a.include_volumes,
    };
    let s = BackupSchedule::new(&a.name, spec);
    api.create(&PostParams::default(), &s)
        .await
        .map_err(|e| anyhow!("creating schedule {} in {ns}: {}", a.name, kube_message(&e)))?;
    println!("schedule \"{}\" created in namespace {ns}", a.name);
    Ok(ExitCode::SUCCESS)
}

/// The columns of `schedule list` (and `-o wide`).
const COLUMNS: &[Column<BackupSchedule>] = &[
    Column::new("NAMESPACE", |s| s.namespace().unwrap_or_default()),
    Column::new("NAME", |s| s.name_any()),
    Column::new("SCHEDULE", |s| s.spec.schedule.clone()),
    Column::new("PAUSED", |s| s.spec.paused.to_string()),
    Column::new("LAST BACKUP", |s| or_dash(status(s).last_backup.as_ref())),
    Column::new("LAST RESULT", |s| or_dash(status(s).last_result.as_ref())),
    Column::new("NEXT RUN", |s| if s.spec.paused { "-".into() } else { or_dash(status(s).next_run_time.as_ref()) }),
    Column::wide("TIME ZONE", |s| s.spec.time_zone.clone().unwrap_or_else(|| "UTC".into())),
    Column::wide("LOCATION", |s| s.spec.location.clone().unwrap_or_else(|| "(default)".into())),
    Column::wide("TTL", |s| s.spec.ttl.clone().unwrap_or_else(|| "720h".into())),
    Column::wide("NAMESPACES", |s| {
        let f = &s.spec.filters;
        if s.spec.etcd.is_some() {
            "(etcd)".into()
        } else if f.included_namespaces.is_empty() {
            "*".into()
        } else {
            f.included_namespaces.join(",")
        }
    }),
    Column::wide("LAST SUCCESS", |s| or_dash(status(s).last_success_time.as_ref())),
    Column::wide("LAST ERROR", |s| or_dash(status(s).last_error.as_ref())),
];

fn or_dash(v: Option<&String>) -> String {
    v.cloned().unwrap_or_else(|| "-".into())
}

fn status(s: &BackupSchedule) -> &BackupScheduleStatus {
    static NONE: std::sync::LazyLock<BackupScheduleStatus> = std::sync::LazyLock::new(Default::default);
    s.status.as_ref().unwrap_or(&NONE)
}

async fn list(api: &Api<BackupSchedule>, output: &ListOutputArg) -> Result<ExitCode> {
    let list =
        api.list(&ListParams::default()).await.map_err(|e| anyhow!("listing schedules: {}", kube_message(&e)))?;
    let document = serde_json::json!({
        "apiVersion": kubectl_backup_core::API_VERSION, "kind": "BackupScheduleList", "items": list.items
    });
    output.print("backupschedule.kubectl-backup.dev", COLUMNS, &list.items, &document)?;
    Ok(ExitCode::SUCCESS)
}

async fn describe(api: &Api<BackupSchedule>, n: &NameArgs) -> Result<ExitCode> {
    let s = api.get(&n.name).await.map_err(|e| anyhow!("schedule {}: {}", n.name, kube_message(&e)))?;
    if n.output.output != Output::Table {
        print_document(&s, n.output.output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let st = s.status.clone().unwrap_or_default();
    let f = &s.spec.filters;
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("Name:              {}", s.name_any());
    println!("Namespace:         {}", s.namespace().unwrap_or_default());
    println!("Schedule:          {} ({})", s.spec.schedule, s.spec.time_zone.as_deref().unwrap_or("UTC"));
    println!("Paused:            {}", s.spec.paused);
    println!("Location:          {}", s.spec.location.as_deref().unwrap_or("(default)"));
    println!("TTL:               {}", s.spec.ttl.as_deref().unwrap_or("720h"));
    println!(
        "Namespaces:        {}",
        if f.included_namespaces.is_empty() { "*".to_string() } else { f.included_namespaces.join(", ") }
    );
    if let Some(e) = &s.spec.etcd {
        println!("etcd:              {} ({})", e.endpoints.join(", "), e.r#type);
    }
    println!("Last run:          {}", or(&st.last_run_time));
    println!("Last backup:       {}", or(&st.last_backup));
    println!("Last result:       {}", or(&st.last_result));
    if let Some(run) = &st.active_run {
        println!("Running now:       {run}");
    }
    println!("Last success:      {}", or(&st.last_success_time));
    println!("Next run:          {}", or(&st.next_run_time));
    if let Some(e) = &st.last_error {
        println!("Last error:        {e}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_paused(api: &Api<BackupSchedule>, name: &str, paused: bool) -> Result<ExitCode> {
    let patch = serde_json::json!({"spec": {"paused": paused}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow!("schedule {name}: {}", kube_message(&e)))?;
    println!("schedule \"{name}\" {}", if paused { "paused" } else { "resumed" });
    Ok(ExitCode::SUCCESS)
}
