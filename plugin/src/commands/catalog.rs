//! `list`, `describe`, `delete` and `download`, written once for every kind of backup: `kubectl
//! backup list` and `kubectl backup etcd list` differ only in what [`Shown`] says of their kind.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use kubectl_backup_core::catalog::Destination;
use kubectl_backup_core::committed::{self, BackupOf, Kind, Listing};
use kubectl_backup_core::input::validate_name;
use kubectl_backup_core::model::{self, List, Timing};
use kubectl_backup_core::store::Store;
use serde::Serialize;

use crate::args::{Column, Globals, ListOutputArg, Output, OutputArg};
use crate::open_location;
use crate::output::{print_document, size, time, until};

/// What the catalog commands print of one kind of backup.
pub(crate) trait Shown: Kind<Spec: model::Spec + Serialize + 'static, Status: Serialize + 'static> {
    /// What messages call one backup: "backup", "etcd backup".
    const NOUN: &'static str;
    /// The columns of `list` (and `list -o wide`).
    const COLUMNS: &'static [Column<BackupOf<Self>>];
    /// `describe` for people.
    fn print_description(b: &BackupOf<Self>, location: &str);
    /// The committed backups (and, for kinds that have them, the runs in progress).
    async fn list(store: &Store) -> kubectl_backup_core::Result<Listing<BackupOf<Self>>>;
    async fn describe(store: &Store, name: &str) -> kubectl_backup_core::Result<BackupOf<Self>>;
    /// The file `download` writes when none is given.
    async fn download_name(store: &Store, name: &str) -> kubectl_backup_core::Result<String>;
    /// Said after a download: how to open the file, if anything needs saying.
    fn open_hint(file: &Path) -> String;
    /// What must go before a backup's files are deleted (its CSI snapshots); an error keeps the
    /// backup. Nothing for kinds without such things.
    async fn before_delete(_cli: &Globals, _store: &Store, _name: &str, _keep_snapshots: bool) -> Result<()> {
        Ok(())
    }
    /// Downloads a backup's data, verified.
    async fn download(store: &Store, name: &str, dest: Destination<'_>) -> kubectl_backup_core::Result<u64>
    where
        Self: Sized,
    {
        committed::download::<Self>(store, name, dest).await
    }
}

/// The catalog subcommands, flattened into `kubectl backup` and `kubectl backup etcd`.
#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// List the backups in the location.
    #[command(alias = "get", alias = "ls")]
    List(ListArgs),
    /// Show one backup: what it holds, where from, its size, SHA-256 and times.
    Describe(DescribeArgs),
    /// Delete backups from the location.
    #[command(alias = "rm")]
    Delete(DeleteArgs),
    /// Download a backup's data file, verified (a backup's is a .tar.zst: `tar --zstd -xf FILE`
    /// opens it; an etcd backup's is its snapshot, keys zip or keys JSON).
    Download(DownloadArgs),
}

pub(crate) async fn run<K: Shown>(cli: &Globals, command: &CatalogCommand) -> Result<ExitCode> {
    match command {
        CatalogCommand::List(a) => list::<K>(cli, a).await,
        CatalogCommand::Describe(a) => describe::<K>(cli, a).await,
        CatalogCommand::Delete(a) => delete::<K>(cli, a).await,
        CatalogCommand::Download(a) => download::<K>(cli, a).await,
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub output: ListOutputArg,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub name: String,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The backups to delete.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Leave the backups' CSI snapshots in the storage system (e.g. when their cluster is gone);
    /// by default they are deleted first, through the cluster's CSI snapshotter.
    #[arg(long)]
    pub keep_snapshots: bool,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    pub name: String,
    /// Where to write the data file ('-' for standard output). Default: NAME.tar.zst for a backup;
    /// NAME-snapshot.db, NAME-keys.zip or NAME-keys.json for an etcd backup.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

async fn list<K: Shown>(cli: &Globals, args: &ListArgs) -> Result<ExitCode> {
    let store = open_location::open(cli, None).await?.store;
    let listing = K::list(&store).await?;
    if args.output.is_table() && listing.backups.is_empty() && listing.in_progress.is_empty() {
        eprintln!("No {}s in {}.", K::NOUN, store.url());
    } else {
        let kind = <K::Spec as model::Spec>::KIND.to_ascii_lowercase();
        let document = List::new(listing.backups);
        args.output.print(&kind, K::COLUMNS, listing.in_progress.iter().chain(&document.items), &document)?;
    }
    if !listing.incomplete.is_empty() {
        eprintln!(
            "{} interrupted {}(s) left files: {} (`kubectl backup{} delete NAME` removes them)",
            listing.incomplete.len(),
            K::NOUN,
            listing.incomplete.join(", "),
            K::COMMAND
        );
    }
    for (name, reason) in &listing.unreadable {
        eprintln!("warning: {} {name:?} is unreadable: {reason}", K::NOUN);
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe<K: Shown>(cli: &Globals, args: &DescribeArgs) -> Result<ExitCode> {
    let store = open_location::open(cli, None).await?.store;
    let b = K::describe(&store, &args.name).await?;
    match args.output.output {
        Output::Table => K::print_description(&b, store.url()),
        format => print_document(&b, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete<K: Shown>(cli: &Globals, args: &DeleteArgs) -> Result<ExitCode> {
    for name in &args.names {
        validate_name(K::WHAT, name)?;
    }
    let location = open_location::open(cli, None).await?;
    location.ensure_writable()?;
    let store = location.store;
    let question = format!("Delete {}(s) {} from {}?", K::NOUN, args.names.join(", "), store.url());
    if !super::confirm("delete", &question, args.yes)? {
        return Ok(ExitCode::FAILURE);
    }
    let mut failed = false;
    for name in &args.names {
        if let Err(e) = K::before_delete(cli, &store, name, args.keep_snapshots).await {
            eprintln!("error: {e:#}");
            failed = true;
            continue;
        }
        match committed::delete::<K>(&store, name).await {
            Ok(d) if d.committed => {
                println!("{} \"{name}\" deleted", K::NOUN);
                match &d.collected {
                    Some(Ok(c)) if !c.deleted.is_empty() => println!(
                        "removed {} pack(s) no backup uses any more ({} bytes)",
                        c.deleted.len(),
                        c.bytes_freed
                    ),
                    Some(Ok(c)) if !c.held.is_empty() => println!(
                        "{} unused pack(s) are kept until the incremental backups running now have finished",
                        c.held.len()
                    ),
                    Some(Err(e)) => eprintln!("warning: unused packs were not collected: {e}"),
                    _ => {}
                }
            }
            Ok(d) => println!("removed {} leftover file(s) of interrupted {} \"{name}\"", d.files, K::NOUN),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn download<K: Shown>(cli: &Globals, args: &DownloadArgs) -> Result<ExitCode> {
    validate_name(K::WHAT, &args.name)?;
    let store = open_location::open(cli, None).await?.store;
    let file = match &args.file {
        Some(f) => f.clone(),
        None => PathBuf::from(K::download_name(&store, &args.name).await?),
    };
    if file.as_os_str() == "-" {
        if std::io::stdout().is_terminal() {
            bail!("refusing to write binary data to a terminal; redirect standard output or use -f FILE");
        }
        K::download(&store, &args.name, Destination::Stdout).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if file.exists() && !args.overwrite {
        bail!("{} already exists; pass --overwrite or choose another file with -f", file.display());
    }
    let n = K::download(&store, &args.name, Destination::File(&file)).await?;
    eprintln!(
        "Downloaded {} \"{}\" to {} ({}, SHA-256 verified).{}",
        K::NOUN,
        args.name,
        file.display(),
        size(n),
        K::open_hint(&file)
    );
    Ok(ExitCode::SUCCESS)
}

/// "none", or "age, to age1..., age1..." / "age, with a passphrase".
pub(crate) fn encryption(e: Option<&kubectl_backup_core::model::Encryption>) -> String {
    match e {
        None => "none".into(),
        Some(e) if e.passphrase => format!("{}, with a passphrase", e.algorithm),
        Some(e) => format!("{}, to {}", e.algorithm, e.recipients.join(", ")),
    }
}

/// The ENCRYPTION column of `list -o wide`: "none", "age (2 recipients)", "age (passphrase)".
pub(crate) fn encryption_short(e: Option<&model::Encryption>) -> String {
    match e {
        None => "none".into(),
        Some(e) if e.passphrase => format!("{} (passphrase)", e.algorithm),
        Some(e) => format!(
            "{} ({} recipient{})",
            e.algorithm,
            e.recipients.len(),
            if e.recipients.len() == 1 { "" } else { "s" }
        ),
    }
}

/// " in 1.2s" when the run has both times.
pub(crate) fn took(t: &Timing) -> String {
    match (t.start_timestamp, t.completion_timestamp) {
        (Some(a), Some(z)) => format!(" in {:.1}s", (z.as_millisecond() - a.as_millisecond()) as f64 / 1000.0),
        _ => String::new(),
    }
}

/// "Expires ... (in ...)" or "Never expires".
pub(crate) fn print_expiry(expiration: Option<jiff::Timestamp>) {
    match expiration {
        Some(e) => println!("Expires {} (in {})", time(Some(e)), until(Some(e))),
        None => println!("Never expires"),
    }
}
