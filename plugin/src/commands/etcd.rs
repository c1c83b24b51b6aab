//! `kubectl backup etcd snapshot|list|describe|delete|download|restore`: etcd itself, backed up to a
//! location (a snapshot, a zip of keys, or one JSON document of keys) and back.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kubectl_backup_core::catalog::Destination;
use kubectl_backup_core::etcd::{
    self, EtcdBackup, EtcdBackupList, EtcdBackupSpec, EtcdBackupType, EtcdRestore, EtcdSource, SNAPSHOT_FILE,
};
use kubectl_backup_core::input::{parse_duration, validate_name};
use kubectl_backup_core::progress::{Event, Observer, Quiet};

use crate::args::{Globals, Output, OutputArg};
use crate::open_location;
use crate::output::{age, print_document, print_table, size, table, time, until};

#[derive(Debug, Args)]
#[command(
    long_about = "Back up etcd to the location and restore it.\n\nThree types: `snapshot` (the member's snapshot stream, restored with `etcdutl snapshot restore`), `keys` (a zip with one file per key) and `keys-json` (one JSON document of all keys and values). Backups are stored under <location>/etcd/<name>/ with a metadata document written last."
)]
pub struct EtcdArgs {
    #[command(subcommand)]
    pub command: EtcdCommand,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Take an etcd backup: a snapshot (default), the keys as a zip, or the keys as JSON.
    Snapshot(SnapshotArgs),
    /// List the etcd backups in the location.
    #[command(alias = "get", alias = "ls")]
    List(ListArgs),
    /// Show one etcd backup: type, revision, member, cluster, size, SHA-256, times.
    Describe(DescribeArgs),
    /// Delete etcd backups from the location.
    #[command(alias = "rm")]
    Delete(DeleteArgs),
    /// Download an etcd backup's file (snapshot.db, keys zip or keys JSON), verified.
    Download(DownloadArgs),
    /// Restore: a snapshot into DIR/snapshot.db (--data-dir), or keys into a running etcd (--endpoints).
    Restore(RestoreArgs),
}

/// How to reach etcd (the flags and environment variables etcdctl uses).
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectionArgs {
    /// etcd client URLs, comma-separated, e.g. https://10.0.0.1:2379. The member with the highest
    /// revision is used.
    #[arg(long, value_delimiter = ',', env = "ETCDCTL_ENDPOINTS", value_name = "URL[,URL...]")]
    pub endpoints: Vec<String>,
    /// PEM file of the CA that signed etcd's serving certificate.
    #[arg(long, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, for etcd with --client-cert-auth.
    #[arg(long, env = "ETCDCTL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "ETCDCTL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl ConnectionArgs {
    fn source(&self, prefix: Option<String>) -> Result<EtcdSource> {
        let endpoints: Vec<String> =
            self.endpoints.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        if endpoints.is_empty() {
            bail!("no etcd endpoint: pass --endpoints https://HOST:2379 (or set ETCDCTL_ENDPOINTS)");
        }
        Ok(EtcdSource {
            endpoints,
            ca_file: self.cacert.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            prefix: prefix.filter(|p| !p.is_empty()),
        })
    }
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Name of the etcd backup (a DNS-1123 label, e.g. etcd-2024-06-01).
    pub name: String,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// What to store: snapshot (the etcd snapshot stream, snapshot.db), keys (a zip with one file
    /// per key) or keys-json (one JSON document of all keys and values).
    #[arg(long = "type", default_value = "snapshot", value_name = "snapshot|keys|keys-json")]
    pub kind: String,
    /// Only keys starting with this prefix (keys and keys-json).
    #[arg(long, value_name = "KEYPREFIX")]
    pub prefix: Option<String>,
    /// How long to keep the backup (e.g. 720h, 30m; 0s keeps it forever).
    #[arg(long, default_value = "720h", value_name = "DURATION")]
    pub ttl: String,
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
    /// etcd backups to delete.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    pub name: String,
    /// Where to write the file (default: NAME-snapshot.db, NAME-keys.zip or NAME-keys.json; '-' for
    /// standard output).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The etcd backup to restore.
    pub name: String,
    /// Snapshot backups: write DIR/snapshot.db (verified), ready for `etcdutl snapshot restore`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replace DIR/snapshot.db if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// keys and keys-json backups: the etcd to write the keys into (with --cacert/--cert/--key).
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Write nothing: list the keys that would be added or changed, and count those unchanged.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

pub async fn run(cli: &Globals, args: &EtcdArgs) -> Result<ExitCode> {
    match &args.command {
        EtcdCommand::Snapshot(a) => snapshot(cli, a).await,
        EtcdCommand::List(a) => list(cli, a).await,
        EtcdCommand::Describe(a) => describe(cli, a).await,
        EtcdCommand::Delete(a) => delete(cli, a).await,
        EtcdCommand::Download(a) => download(cli, a).await,
        EtcdCommand::Restore(a) => restore(cli, a).await,
    }
}

async fn snapshot(cli: &Globals, args: &SnapshotArgs) -> Result<ExitCode> {
    // Check everything we can before connecting.
    validate_name("etcd backup name", &args.name)?;
    let kind: EtcdBackupType = args.kind.parse()?;
    parse_duration("--ttl", &args.ttl)?;
    let source = args.connection.source(args.prefix.clone())?;
    let location = open_location::open(cli, None).await?;
    location.ensure_writable()?;
    let store = location.store.clone();
    let spec =
        EtcdBackupSpec { kind, ttl: Some(args.ttl.clone()), location: Some(location.display()), ..Default::default() };
    let observer = observer(args.output.output);
    let result = etcd::run_with(&source, &store, &args.name, spec, observer.clone()).await;
    drop(observer);
    let backup = result?;
    match args.output.output {
        Output::Table => print_summary(&backup, store.url()),
        format => print_document(&backup, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(b: &EtcdBackup, location: &str) {
    let s = &b.status;
    let took = match (s.start_timestamp, s.completion_timestamp) {
        (Some(a), Some(z)) => format!(" in {:.1}s", (z.as_millisecond() - a.as_millisecond()) as f64 / 1000.0),
        _ => String::new(),
    };
    let keys = s.keys.map(|k| format!(", {k} keys")).unwrap_or_default();
    println!(
        "etcd backup \"{}\" {}{took}: {} of member {} at revision {}{keys}, {} in {location}",
        b.metadata.name,
        s.phase,
        b.spec.kind,
        s.member_id.as_deref().unwrap_or("?"),
        s.revision.map(|r| r.to_string()).unwrap_or_else(|| "?".into()),
        size(s.size),
    );
    match s.expiration {
        Some(e) => println!("Expires {} (in {})", time(Some(e)), until(Some(e))),
        None => println!("Never expires"),
    }
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
}

async fn list(cli: &Globals, args: &ListArgs) -> Result<ExitCode> {
    let store = open_location::open(cli, None).await?.store;
    let listing = etcd::list(&store).await?;
    match args.output.output {
        Output::Table => {
            if listing.backups.is_empty() {
                eprintln!("No etcd backups in {}.", store.url());
            } else {
                let mut t = table(&["NAME", "TYPE", "REVISION", "KEYS", "SIZE", "CREATED", "EXPIRES"]);
                for b in &listing.backups {
                    let s = &b.status;
                    t.add_row(vec![
                        b.metadata.name.clone(),
                        b.spec.kind.to_string(),
                        s.revision.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                        s.keys.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
                        size(s.size),
                        age(b.metadata.creation_timestamp),
                        until(s.expiration),
                    ]);
                }
                print_table(&t);
            }
        }
        format => print_document(&EtcdBackupList::new(listing.backups.clone()), format)?,
    }
    if !listing.incomplete.is_empty() {
        eprintln!(
            "{} etcd backup(s) without metadata (interrupted or still running): {} (`kubectl backup etcd delete NAME` removes them)",
            listing.incomplete.len(),
            listing.incomplete.join(", ")
        );
    }
    for (name, reason) in &listing.unreadable {
        eprintln!("warning: etcd backup {name:?} is unreadable: {reason}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe(cli: &Globals, args: &DescribeArgs) -> Result<ExitCode> {
    let store = open_location::open(cli, None).await?.store;
    let b = etcd::describe(&store, &args.name).await?;
    match args.output.output {
        Output::Table => print_description(&b, store.url()),
        format => print_document(&b, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_description(b: &EtcdBackup, location: &str) {
    let s = &b.status;
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Name:          {}", b.metadata.name);
    let _ = writeln!(out, "Type:          {}", b.spec.kind);
    let _ = writeln!(out, "Phase:         {}", s.phase);
    let _ = writeln!(out, "Location:      {location}");
    if let Some(sched) = &b.spec.schedule {
        let _ = writeln!(out, "Schedule:      {sched}");
    }
    let _ = writeln!(out, "Endpoints:     {}", b.spec.endpoints.join(", "));
    if let Some(p) = &b.spec.prefix {
        let _ = writeln!(out, "Prefix:        {p}");
    }
    let member = match (&s.member_id, &s.member_name) {
        (Some(id), Some(n)) => format!("{id} ({n})"),
        (Some(id), None) => id.clone(),
        _ => "-".into(),
    };
    let _ = writeln!(out, "Member:        {member} at {}", dash(s.endpoint.as_deref()));
    let _ = writeln!(out, "Cluster ID:    {}", dash(s.cluster_id.as_deref()));
    let _ = writeln!(out, "etcd version:  {}", dash(s.etcd_version.as_deref()));
    let _ = writeln!(out, "Revision:      {}", s.revision.map(|r| r.to_string()).unwrap_or_else(|| "-".into()));
    if let Some(k) = s.keys {
        let _ = writeln!(out, "Keys:          {k}");
    }
    let _ = writeln!(out, "File:          {} ({}, {})", s.file, s.format, size(s.size));
    let _ = writeln!(out, "SHA-256:       {}", s.sha256);
    let _ = writeln!(out, "Started:       {} ({} ago)", time(s.start_timestamp), age(s.start_timestamp));
    let _ = writeln!(out, "Completed:     {}", time(s.completion_timestamp));
    let _ = match s.expiration {
        Some(e) => writeln!(out, "Expires:       {} (in {})", time(Some(e)), until(Some(e))),
        None => writeln!(out, "Expires:       never"),
    };
    if !s.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for w in &s.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
}

async fn delete(cli: &Globals, args: &DeleteArgs) -> Result<ExitCode> {
    for name in &args.names {
        validate_name("etcd backup name", name)?;
    }
    let location = open_location::open(cli, None).await?;
    location.ensure_writable()?;
    let store = location.store;
    let question = format!("Delete etcd backup(s) {} from {}?", args.names.join(", "), store.url());
    if !super::confirm("delete", &question, args.yes)? {
        return Ok(ExitCode::FAILURE);
    }
    let mut failed = false;
    for name in &args.names {
        match etcd::delete(&store, name).await {
            Ok(d) if d.committed => println!("etcd backup \"{name}\" deleted"),
            Ok(d) => println!("removed {} leftover file(s) of interrupted etcd backup \"{name}\"", d.files),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn download(cli: &Globals, args: &DownloadArgs) -> Result<ExitCode> {
    validate_name("etcd backup name", &args.name)?;
    let store = open_location::open(cli, None).await?.store;
    let file = match &args.file {
        Some(f) => f.clone(),
        None => PathBuf::from(etcd::describe(&store, &args.name).await?.spec.kind.download_name(&args.name)),
    };
    if file.as_os_str() == "-" {
        if std::io::stdout().is_terminal() {
            bail!("refusing to write binary data to a terminal; redirect standard output or use -f FILE");
        }
        etcd::download(&store, &args.name, Destination::Stdout).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if file.exists() && !args.overwrite {
        bail!("{} already exists; pass --overwrite or choose another file with -f", file.display());
    }
    let n = etcd::download(&store, &args.name, Destination::File(&file)).await?;
    eprintln!("Downloaded etcd backup \"{}\" to {} ({}, SHA-256 verified).", args.name, file.display(), size(n));
    Ok(ExitCode::SUCCESS)
}

async fn restore(cli: &Globals, args: &RestoreArgs) -> Result<ExitCode> {
    validate_name("etcd backup name", &args.name)?;
    let store = open_location::open(cli, None).await?.store;
    let observer = observer(args.output.output);
    let result = match &args.data_dir {
        Some(dir) => {
            if args.dry_run {
                bail!(
                    "--dry-run applies to keys restores (--endpoints); a snapshot restore only writes DIR/{SNAPSHOT_FILE}"
                );
            }
            etcd::restore_snapshot(&store, &args.name, dir, args.overwrite, observer.clone()).await
        }
        None if args.connection.endpoints.is_empty() => {
            bail!(
                "say where to restore: --data-dir DIR for a snapshot (writes DIR/{SNAPSHOT_FILE}), or --endpoints URL for keys and keys-json backups"
            )
        }
        None => {
            let target = args.connection.source(None)?;
            etcd::restore_keys(&store, &args.name, &target, args.dry_run, observer.clone()).await
        }
    };
    drop(observer);
    let report = result?;
    match args.output.output {
        Output::Table => print_restore(&report),
        format => print_document(&report, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_restore(r: &EtcdRestore) {
    let s = &r.status;
    if let Some(path) = &s.snapshot {
        println!(
            "Wrote {} ({}; size, SHA-256 and the snapshot's own checksum verified), revision {}.",
            path.display(),
            size(s.size.unwrap_or(0)),
            s.revision.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
        );
        println!("Restore it into a new, empty data directory, then start etcd on that directory:");
        println!("  etcdutl snapshot restore {} --data-dir NEW_DATA_DIR", path.display());
        println!("  (etcd 3.4: ETCDCTL_API=3 etcdctl snapshot restore {} --data-dir NEW_DATA_DIR)", path.display());
        return;
    }
    let c = s.counts.clone().unwrap_or_default();
    let target = s.endpoint.as_deref().unwrap_or("etcd");
    if r.spec.dry_run {
        println!(
            "Dry run of etcd backup \"{}\" into {target}: would add {}, change {}; {} unchanged. Nothing was written.",
            r.spec.backup_name, c.added, c.changed, c.unchanged
        );
    } else {
        println!(
            "Restored etcd backup \"{}\" into {target}: {} added, {} changed, {} unchanged.",
            r.spec.backup_name, c.added, c.changed, c.unchanged
        );
    }
    let verb = |dry: &'static str, done: &'static str| if r.spec.dry_run { dry } else { done };
    if !s.added.is_empty() {
        println!("{}:", verb("Would add", "Added"));
        for k in &s.added {
            println!("  + {k}");
        }
    }
    if !s.changed.is_empty() {
        println!("{}:", verb("Would change", "Changed"));
        for k in &s.changed {
            println!("  ~ {k}");
        }
    }
}

/// A spinner (or, for a keys restore, a bar) on stderr when it is a terminal and the output is a
/// table; otherwise nothing.
fn observer(output: Output) -> Arc<dyn Observer> {
    if output != Output::Table || !std::io::stderr().is_terminal() {
        return Arc::new(Quiet);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Arc::new(Bar {
        bar,
        started: Instant::now(),
        what: std::sync::Mutex::new(String::new()),
        uploaded: AtomicU64::new(0),
    })
}

struct Bar {
    bar: ProgressBar,
    started: Instant,
    what: std::sync::Mutex<String>,
    uploaded: AtomicU64,
}

impl Bar {
    fn what(&self) -> String {
        self.what.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

impl Observer for Bar {
    fn event(&self, event: Event) {
        match event {
            Event::Waiting { what } => {
                self.bar.set_message(what.clone());
                if let Ok(mut w) = self.what.lock() {
                    *w = what;
                }
            }
            Event::Archived { items, bytes } => {
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                let keys = if items > 0 { format!("{items} keys, ") } else { String::new() };
                self.bar.set_message(format!(
                    "{}: {keys}{} ({}/s), {} uploaded",
                    self.what(),
                    size(bytes),
                    size((bytes as f64 / secs) as u64),
                    size(self.uploaded.load(Ordering::Relaxed))
                ));
            }
            Event::Uploading { bytes } => {
                self.uploaded.store(bytes, Ordering::Relaxed);
            }
            Event::Verified { items } => self.bar.set_message(format!("verified the backup ({items} keys)")),
            Event::RestorePlanned { total } => {
                self.bar.set_length(total);
                self.bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} keys {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                self.bar.set_message("");
            }
            Event::Restored { done, total } => {
                self.bar.set_length(total);
                self.bar.set_position(done);
            }
            Event::Planned { .. } | Event::Listed { .. } => {}
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `kubectl backup etcd ...`, parsed without the rest of the command tree.
    #[derive(Parser)]
    struct Etcd {
        #[command(flatten)]
        _globals: Globals,
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    #[test]
    fn etcd_flags_parse_like_etcdctl() {
        let cli = Etcd::parse_from([
            "kubectl-backup-etcd",
            "snapshot",
            "nightly",
            "--endpoints",
            "https://a:2379,https://b:2379",
            "--cacert",
            "/ca.crt",
            "--cert",
            "/c.crt",
            "--key",
            "/c.key",
            "--type",
            "keys-json",
            "--prefix",
            "/registry/",
            "-o",
            "json",
        ]);
        let EtcdCommand::Snapshot(s) = cli.etcd.command else { panic!("not etcd snapshot") };
        assert_eq!(s.connection.endpoints, vec!["https://a:2379", "https://b:2379"]);
        assert_eq!(s.kind.parse::<EtcdBackupType>().unwrap(), EtcdBackupType::KeysJson);
        let src = s.connection.source(s.prefix.clone()).unwrap();
        assert_eq!(src.cert_file.as_deref(), Some(std::path::Path::new("/c.crt")));
        assert_eq!(src.prefix.as_deref(), Some("/registry/"));
        assert_eq!(s.ttl, "720h");
        let cli = Etcd::parse_from(["kubectl-backup-etcd", "get"]);
        assert!(matches!(cli.etcd.command, EtcdCommand::List(_)));
    }
}
