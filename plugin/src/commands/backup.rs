//! `create`, and what `list`, `describe`, `delete` and `download` print of object backups.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kubectl_backup_core::backup;
use kubectl_backup_core::catalog::{self, Objects};
use kubectl_backup_core::filter::Selection;
use kubectl_backup_core::input::{parse_duration, validate_name};
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::model::{Backup, BackupSpec, Phase};
use kubectl_backup_core::store::Store;

use clap::Args;

use super::catalog::{Shown, encryption, print_expiry, took};
use super::{exit_for, throttle};
use crate::args::{EncryptArgs, FilterArgs, Globals, Output, OutputArg};
use crate::output::{age, print_document, size, time, until};
use crate::{open_location, progress};

pub async fn create(cli: &Globals, args: &CreateArgs) -> Result<ExitCode> {
    // Check everything we can before touching the cluster or detaching.
    validate_name("backup name", &args.name)?;
    parse_duration("--ttl", &args.ttl)?;
    let filters = args.filters.filters();
    Selection::new(&filters)?;
    let seal = args.encrypt.seal()?;
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let location = open_location::open(cli, Some(&cluster.client)).await?;
    location.ensure_writable()?;
    let store = match seal {
        Some(seal) => location.store.clone().with_seal(Some(seal)),
        None => location.store.clone(),
    };
    let spec =
        BackupSpec { filters, ttl: Some(args.ttl.clone()), storage_location: Some(location.display()), schedule: None };

    let detached = super::detached();
    if !args.wait && !detached {
        return super::detach("backup", &args.name);
    }
    let observer = progress::observer(if detached { Output::Json } else { args.output.output }, "objects");
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
    let took = took(&s.timing);
    let bytes = s.archive.as_ref().map(|a| a.size).unwrap_or(0);
    println!(
        "Backup \"{}\" {}{took}: {} objects, {} namespaces, {} in {location}",
        b.metadata.name,
        s.phase,
        s.progress.items_backed_up,
        s.namespaces.len(),
        size(bytes)
    );
    print_expiry(s.expiration);
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

impl Shown for Objects {
    const NOUN: &'static str = "backup";
    const COLUMNS: &'static [&'static str] = &["NAME", "PHASE", "OBJECTS", "SIZE", "CREATED", "EXPIRES"];

    fn row(b: &Backup) -> Vec<String> {
        let s = &b.status;
        vec![
            b.metadata.name.clone(),
            s.phase.to_string(),
            s.progress.items_backed_up.to_string(),
            s.archive.as_ref().map(|a| size(a.size)).unwrap_or_else(|| "-".into()),
            age(b.metadata.creation_timestamp),
            if s.phase == Phase::InProgress { "-".into() } else { until(s.expiration) },
        ]
    }

    fn print_description(b: &Backup, location: &str) {
        print_description(b, location)
    }

    async fn list(store: &Store) -> kubectl_backup_core::Result<catalog::Listing> {
        catalog::list(store).await
    }

    async fn describe(store: &Store, name: &str) -> kubectl_backup_core::Result<Backup> {
        catalog::describe(store, name).await
    }

    async fn download_name(store: &Store, name: &str) -> kubectl_backup_core::Result<String> {
        let b = catalog::describe(store, name).await?;
        let encrypted = b.status.archive.is_some_and(|a| a.encryption.is_some());
        Ok(if encrypted { format!("{name}.tar.zst.age") } else { format!("{name}.tar.zst") })
    }

    fn open_hint(file: &Path) -> String {
        if file.extension().is_some_and(|e| e == "age") {
            return format!(
                " It is encrypted as stored; open it with: age -d -i KEY {} | tar --zstd -xf -",
                file.display()
            );
        }
        format!(" Open it with: tar --zstd -xf {}", file.display())
    }
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
    let t = &s.timing;
    let _ = writeln!(out, "Started:            {} ({} ago)", time(t.start_timestamp), age(t.start_timestamp));
    if t.completion_timestamp.is_some() {
        let _ = writeln!(out, "Completed:          {}", time(t.completion_timestamp));
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
        let _ = writeln!(out, "Encryption:         {}", encryption(a.encryption.as_ref()));
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

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Name of the backup (a DNS-1123 label, e.g. nightly-2024-06-01).
    pub name: String,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub encrypt: EncryptArgs,
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
