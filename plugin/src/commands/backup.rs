//! `create`, `list`, `describe`, `delete`, `download`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use kubectl_backup_core::backup;
use kubectl_backup_core::catalog::{self, Destination};
use kubectl_backup_core::filter::Selection;
use kubectl_backup_core::input::{parse_duration, validate_name};
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::model::{Backup, BackupList, BackupSpec, Phase};

use clap::Args;

use super::{exit_for, throttle};
use crate::args::{FilterArgs, Globals, Output, OutputArg};
use crate::output::{age, print_document, print_table, size, table, time, until};
use crate::{open_location, progress};

pub async fn create(cli: &Globals, args: &CreateArgs) -> Result<ExitCode> {
    // Check everything we can before touching the cluster or detaching.
    validate_name("backup name", &args.name)?;
    parse_duration("--ttl", &args.ttl)?;
    let filters = args.filters.filters();
    Selection::new(&filters)?;
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let location = open_location::open(cli, Some(&cluster.client)).await?;
    location.ensure_writable()?;
    let store = location.store.clone();
    let spec =
        BackupSpec { filters, ttl: Some(args.ttl.clone()), storage_location: Some(location.display()), schedule: None };

    let detached = super::detached();
    if !args.wait && !detached {
        return super::detach("backup", &args.name);
    }
    let observer = progress::observer(if detached { Output::Json } else { args.output.output });
    let result = backup::run(&cluster, &store, &args.name, spec, observer.clone()).await;
    drop(observer);
    let backup = result?;
    match args.output.output {
        Output::Table => print_summary(&backup, store.url()),
        format => print_document(&backup, format)?,
    }
    Ok(exit_for(backup.status.phase))
}

fn print_summary(b: &Backup, location: &str) {
    let s = &b.status;
    let took = match (s.start_timestamp, s.completion_timestamp) {
        (Some(a), Some(z)) => format!(" in {:.1}s", (z.as_millisecond() - a.as_millisecond()) as f64 / 1000.0),
        _ => String::new(),
    };
    let bytes = s.archive.as_ref().map(|a| a.size).unwrap_or(0);
    println!(
        "Backup \"{}\" {}{took}: {} objects, {} namespaces, {} in {location}",
        b.metadata.name,
        s.phase,
        s.progress.items_backed_up,
        s.namespaces.len(),
        size(bytes)
    );
    match s.expiration {
        Some(e) => println!("Expires {} (in {})", time(Some(e)), until(Some(e))),
        None => println!("Never expires"),
    }
    print_messages("Warnings", &s.warnings);
    print_messages("Errors", &s.errors);
}

fn print_messages(title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    println!("{title}:");
    for m in items {
        println!("  - {m}");
    }
}

pub async fn list(cli: &Globals, args: &ListArgs) -> Result<ExitCode> {
    let store = open_location::open(cli, None).await?.store;
    let listing = catalog::list(&store).await?;
    match args.output.output {
        Output::Table => {
            if listing.backups.is_empty() && listing.in_progress.is_empty() {
                eprintln!("No backups in {}.", store.url());
            } else {
                let mut t = table(&["NAME", "PHASE", "OBJECTS", "SIZE", "CREATED", "EXPIRES"]);
                for b in listing.in_progress.iter().chain(&listing.backups) {
                    let s = &b.status;
                    t.add_row(vec![
                        b.metadata.name.clone(),
                        s.phase.to_string(),
                        s.progress.items_backed_up.to_string(),
                        s.archive.as_ref().map(|a| size(a.size)).unwrap_or_else(|| "-".into()),
                        age(b.metadata.creation_timestamp),
                        if s.phase == Phase::InProgress { "-".into() } else { until(s.expiration) },
                    ]);
                }
                print_table(&t);
            }
        }
        format => print_document(&BackupList::new(listing.backups.clone()), format)?,
    }
    if !listing.incomplete.is_empty() {
        eprintln!(
            "{} interrupted backup(s) left files: {} (`kubectl backup delete NAME` removes them)",
            listing.incomplete.len(),
            listing.incomplete.join(", ")
        );
    }
    for (name, reason) in &listing.unreadable {
        eprintln!("warning: backup {name:?} is unreadable: {reason}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(cli: &Globals, args: &DescribeArgs) -> Result<ExitCode> {
    let store = open_location::open(cli, None).await?.store;
    let b = catalog::describe(&store, &args.name).await?;
    match args.output.output {
        Output::Table => print_description(&b, store.url()),
        format => print_document(&b, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list_or(items: &[String], all: &str) -> String {
    if items.is_empty() { all.to_string() } else { items.join(", ") }
}

fn print_description(b: &Backup, location: &str) {
    let s = &b.status;
    let f = &b.spec.filters;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Name:               {}", b.metadata.name);
    let _ = writeln!(out, "Phase:              {}", s.phase);
    let _ = writeln!(out, "Location:           {location}");
    if let Some(sched) = &b.spec.schedule {
        let _ = writeln!(out, "Schedule:           {sched}");
    }
    let _ = writeln!(out, "Started:            {} ({} ago)", time(s.start_timestamp), age(s.start_timestamp));
    if s.completion_timestamp.is_some() {
        let _ = writeln!(out, "Completed:          {}", time(s.completion_timestamp));
    }
    if s.phase != Phase::InProgress {
        let _ = match s.expiration {
            Some(e) => writeln!(out, "Expires:            {} (in {})", time(Some(e)), until(Some(e))),
            None => writeln!(out, "Expires:            never"),
        };
    }
    if let Some(src) = &s.source_cluster {
        let _ = writeln!(
            out,
            "Source cluster:     {} ({})",
            src.server,
            if src.version.is_empty() { "unknown version" } else { &src.version }
        );
    }
    let _ = writeln!(
        out,
        "Namespaces:         included: {}; excluded: {}",
        list_or(&f.included_namespaces, "*"),
        list_or(&f.excluded_namespaces, "-")
    );
    let _ = writeln!(
        out,
        "Resources:          included: {}; excluded: {}",
        list_or(&f.included_resources, "*"),
        list_or(&f.excluded_resources, "-")
    );
    let _ = writeln!(out, "Label selector:     {}", f.label_selector.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "Cluster-scoped:     {}", f.include_cluster_resources);
    if let Some(a) = &s.archive {
        let _ = writeln!(out, "Archive:            {} ({}, {}, sha256 {})", a.key, a.format, size(a.size), a.sha256);
    }
    let _ = writeln!(out, "Objects:            {}", s.progress.items_backed_up);
    if !s.namespaces.is_empty() {
        let _ = writeln!(out, "Backed-up namespaces: {}", s.namespaces.join(", "));
    }
    if !s.resources.is_empty() {
        let _ = writeln!(out, "Objects per resource:");
        let width = s.resources.keys().map(String::len).max().unwrap_or(0);
        for (k, n) in &s.resources {
            let _ = writeln!(out, "  {k:<width$}  {n}");
        }
    }
    drop(out);
    print_messages("Warnings", &s.warnings);
    print_messages("Errors", &s.errors);
}

pub async fn delete(cli: &Globals, args: &DeleteArgs) -> Result<ExitCode> {
    for name in &args.names {
        validate_name("backup name", name)?;
    }
    let location = open_location::open(cli, None).await?;
    location.ensure_writable()?;
    let store = location.store;
    let question = format!("Delete {} from {}?", args.names.join(", "), store.url());
    if !super::confirm("delete", &question, args.yes)? {
        return Ok(ExitCode::FAILURE);
    }
    let mut failed = false;
    for name in &args.names {
        match catalog::delete(&store, name).await {
            Ok(d) if d.committed => println!("backup \"{name}\" deleted"),
            Ok(d) => println!("removed {} leftover file(s) of interrupted backup \"{name}\"", d.files),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn download(cli: &Globals, args: &DownloadArgs) -> Result<ExitCode> {
    validate_name("backup name", &args.name)?;
    let store = open_location::open(cli, None).await?.store;
    let file = args.file.clone().unwrap_or_else(|| PathBuf::from(format!("{}.tar.zst", args.name)));
    if file.as_os_str() == "-" {
        if std::io::stdout().is_terminal() {
            bail!("refusing to write a binary archive to a terminal; redirect standard output or use -f FILE");
        }
        catalog::download(&store, &args.name, Destination::Stdout).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if file.exists() && !args.overwrite {
        bail!("{} already exists; pass --overwrite or choose another file with -f", file.display());
    }
    let n = catalog::download(&store, &args.name, Destination::File(&file)).await?;
    eprintln!(
        "Downloaded \"{}\" to {} ({}, SHA-256 verified). Open it with: tar --zstd -xf {}",
        args.name,
        file.display(),
        size(n),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
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
