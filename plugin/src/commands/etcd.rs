//! `kubectl backup etcd snapshot|list|describe|delete|download|restore`: etcd itself, backed up to a
//! location (a snapshot, a zip of keys, or one JSON document of keys) and back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kubectl_backup_core::etcd::catalog::Etcd;
use kubectl_backup_core::etcd::{
    self, EtcdBackup, EtcdBackupSpec, EtcdBackupType, EtcdListing, EtcdRestore, EtcdSource, SNAPSHOT_FILE,
};
use kubectl_backup_core::input::{parse_duration, validate_name};
use kubectl_backup_core::store::Store;

use super::catalog::{self, Shown, encryption, encryption_short, print_expiry, took};
use crate::args::{Column, Globals, Output, OutputArg};
use crate::output::{age, print_document, size, time, until};
use crate::{open_location, progress};

/// `kubectl backup etcd --help`.
pub(crate) const ETCD_EXAMPLES: &str = "\
Examples:
  # Snapshot etcd, with a client certificate, to the default location
  kubectl backup etcd snapshot etcd-1 --endpoints https://10.0.0.1:2379 --cacert ca.crt --cert client.crt --key client.key

  # List the etcd backups
  kubectl backup etcd list

  # Fetch snapshot etcd-1 into /var/tmp/etcd-restore/snapshot.db, for etcdutl snapshot restore
  kubectl backup etcd restore etcd-1 --data-dir /var/tmp/etcd-restore";

const SNAPSHOT_EXAMPLES: &str = "\
Examples:
  # Snapshot etcd, with a client certificate, to the default location
  kubectl backup etcd snapshot etcd-1 --endpoints https://10.0.0.1:2379 --cacert ca.crt --cert client.crt --key client.key

  # With etcdctl's ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT and ETCDCTL_KEY set:
  # snapshot etcd to S3 and keep it two weeks
  kubectl backup etcd snapshot etcd-2 --location s3://backups/etcd --ttl 336h

  # Encrypt the snapshot; only the holder of team.key can restore it (ETCDCTL_* set)
  kubectl backup etcd snapshot etcd-3 --encrypt-to \"$(age-keygen -y team.key)\"

  # Save the keys under /registry/configmaps/ as one JSON document (ETCDCTL_* set)
  kubectl backup etcd snapshot configmaps-1 --type keys-json --prefix /registry/configmaps/";

/// `kubectl backup etcd list --help`; the other catalog commands follow.
const LIST_EXAMPLES: &str = "\
Examples:
  # List the etcd backups in the default location: type, revision, keys, size
  kubectl backup etcd list

  # List the etcd backups in an S3 bucket, as JSON
  kubectl backup etcd list --location s3://backups/etcd -o json

  # Each etcd backup's name and revision, with the endpoint and member it was read from
  kubectl backup etcd list -o jsonpath='{range .items[*]}{.metadata.name} {.status.revision}{\"\\n\"}{end}'
  kubectl backup etcd list -o wide";

const DESCRIBE_EXAMPLES: &str = "\
Examples:
  # Show etcd backup etcd-1: member, revision, size, SHA-256, encryption
  kubectl backup etcd describe etcd-1

  # Print it as YAML
  kubectl backup etcd describe etcd-1 -o yaml";

const DELETE_EXAMPLES: &str = "\
Examples:
  # Delete etcd backup etcd-1 (asks for confirmation)
  kubectl backup etcd delete etcd-1

  # Delete several etcd backups without asking, e.g. in a script
  kubectl backup etcd delete etcd-1 etcd-2 --yes";

const DOWNLOAD_EXAMPLES: &str = "\
Examples:
  # Download snapshot etcd-1 to etcd-1-snapshot.db (SHA-256 verified)
  kubectl backup etcd download etcd-1

  # Download it to a file of your choice, replacing that file if it exists
  kubectl backup etcd download etcd-1 -f /var/tmp/etcd.db --overwrite

  # Pretty-print a keys-json backup
  kubectl backup etcd download configmaps-1 -f - | jq .";

const RESTORE_EXAMPLES: &str = "\
Examples:
  # Write snapshot etcd-1 to /var/tmp/etcd-restore/snapshot.db, then run etcdutl snapshot restore
  kubectl backup etcd restore etcd-1 --data-dir /var/tmp/etcd-restore

  # The same for an encrypted snapshot
  kubectl backup etcd restore etcd-2 --data-dir /var/tmp/etcd-restore --identity team.key

  # Write the keys of a keys or keys-json backup into a running etcd, with a client certificate
  kubectl backup etcd restore configmaps-1 --endpoints https://10.0.0.9:2379 --cacert ca.crt --cert client.crt --key client.key

  # With ETCDCTL_CACERT, ETCDCTL_CERT and ETCDCTL_KEY set: first list the keys it would add or
  # change (writing nothing), then write them
  kubectl backup etcd restore configmaps-1 --endpoints https://10.0.0.9:2379 --dry-run
  kubectl backup etcd restore configmaps-1 --endpoints https://10.0.0.9:2379";

#[derive(Debug, Args)]
#[command(
    long_about = "Back up etcd to the location and restore it.\n\nThree types: `snapshot` (the member's snapshot stream, restored with `etcdutl snapshot restore`), `keys` (a zip with one file per key) and `keys-json` (one JSON document of all keys and values). Backups are stored under <location>/etcd/<name>/ with a metadata document written last.",
    // The catalog commands are shared with `kubectl backup`: their examples are set per parent.
    mut_subcommand("list", |c| c.after_help(LIST_EXAMPLES)),
    mut_subcommand("describe", |c| c.after_help(DESCRIBE_EXAMPLES)),
    mut_subcommand("delete", |c| c.after_help(DELETE_EXAMPLES)),
    mut_subcommand("download", |c| c.after_help(DOWNLOAD_EXAMPLES))
)]
pub struct EtcdArgs {
    #[command(subcommand)]
    pub command: EtcdCommand,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Take an etcd backup: a snapshot (default), the keys as a zip, or the keys as JSON.
    #[command(after_help = SNAPSHOT_EXAMPLES)]
    Snapshot(SnapshotArgs),
    #[command(flatten)]
    Catalog(catalog::CatalogCommand),
    /// Restore: a snapshot into DIR/snapshot.db (--data-dir), or keys into a running etcd (--endpoints).
    #[command(after_help = RESTORE_EXAMPLES)]
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
    #[arg(long = "type", default_value = "snapshot", value_parser = backup_type())]
    pub kind: EtcdBackupType,
    /// Only keys starting with this prefix (keys and keys-json).
    #[arg(long, value_name = "KEYPREFIX")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub encrypt: crate::args::EncryptArgs,
    /// How long to keep the backup (e.g. 720h, 30m; 0s keeps it forever).
    #[arg(long, default_value = "720h", value_name = "DURATION")]
    pub ttl: String,
    #[command(flatten)]
    pub output: OutputArg,
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

/// `--type`: one of the types, listed in `--help` and in clap's error for anything else.
fn backup_type() -> impl clap::builder::TypedValueParser<Value = EtcdBackupType> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(EtcdBackupType::ALL.map(EtcdBackupType::as_str))
        .try_map(|s| s.parse::<EtcdBackupType>())
}

pub async fn run(cli: &Globals, args: &EtcdArgs) -> Result<ExitCode> {
    match &args.command {
        EtcdCommand::Snapshot(a) => snapshot(cli, a).await,
        EtcdCommand::Catalog(c) => catalog::run::<Etcd>(cli, c).await,
        EtcdCommand::Restore(a) => restore(cli, a).await,
    }
}

async fn snapshot(cli: &Globals, args: &SnapshotArgs) -> Result<ExitCode> {
    // Check everything we can before connecting.
    validate_name("etcd backup name", &args.name)?;
    let kind = args.kind;
    parse_duration("--ttl", &args.ttl)?;
    let source = args.connection.source(args.prefix.clone())?;
    let seal = args.encrypt.seal()?;
    let location = open_location::open(cli, None).await?;
    location.ensure_writable()?;
    let store = match seal {
        Some(seal) => location.store.clone().with_seal(Some(seal)),
        None => location.store.clone(),
    };
    let spec =
        EtcdBackupSpec { kind, ttl: Some(args.ttl.clone()), location: Some(location.display()), ..Default::default() };
    let observer = progress::observer(args.output.output, "keys");
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
    let took = took(&s.timing);
    let keys = s.keys.map(|k| format!(", {k} keys")).unwrap_or_default();
    println!(
        "etcd backup \"{}\" {}{took}: {} of member {} at revision {}{keys}, {} in {location}",
        b.metadata.name,
        s.phase,
        b.spec.kind,
        s.member_id.as_deref().unwrap_or("?"),
        s.revision.map(|r| r.to_string()).unwrap_or_else(|| "?".into()),
        size(stored_size(b)),
    );
    print_expiry(s.expiration);
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
}

fn stored_size(b: &EtcdBackup) -> u64 {
    b.status.archive.as_ref().map_or(0, |a| a.size)
}

impl Shown for Etcd {
    const NOUN: &'static str = "etcd backup";
    const COLUMNS: &'static [Column<EtcdBackup>] = &[
        Column::new("NAME", |b| b.metadata.name.clone()),
        Column::new("TYPE", |b| b.spec.kind.to_string()),
        Column::new("REVISION", |b| b.status.revision.map(|r| r.to_string()).unwrap_or_else(|| "-".into())),
        Column::new("KEYS", |b| b.status.keys.map(|k| k.to_string()).unwrap_or_else(|| "-".into())),
        Column::new("SIZE", |b| size(stored_size(b))),
        Column::new("CREATED", |b| age(b.metadata.creation_timestamp)),
        Column::new("EXPIRES", |b| until(b.status.expiration)),
        Column::wide("ENDPOINT", |b| b.status.endpoint.clone().unwrap_or_else(|| b.spec.endpoints.join(","))),
        Column::wide("MEMBER", |b| b.status.member_name.clone().unwrap_or_else(|| "-".into())),
        Column::wide("PREFIX", |b| b.spec.prefix.clone().unwrap_or_else(|| "-".into())),
        Column::wide("WARNINGS", |b| b.status.warnings.len().to_string()),
        Column::wide("ENCRYPTION", |b| encryption_short(b.status.archive.as_ref().and_then(|a| a.encryption.as_ref()))),
        Column::wide("SCHEDULE", |b| b.spec.schedule.clone().unwrap_or_else(|| "-".into())),
        Column::wide("LOCATION", |b| b.spec.location.clone().unwrap_or_else(|| "-".into())),
    ];

    fn print_description(b: &EtcdBackup, location: &str) {
        print_description(b, location)
    }

    async fn list(store: &Store) -> kubectl_backup_core::Result<EtcdListing> {
        etcd::list(store).await
    }

    async fn describe(store: &Store, name: &str) -> kubectl_backup_core::Result<EtcdBackup> {
        etcd::describe(store, name).await
    }

    async fn download_name(store: &Store, name: &str) -> kubectl_backup_core::Result<String> {
        let b = etcd::describe(store, name).await?;
        let file = b.spec.kind.download_name(name);
        let encrypted = b.status.archive.is_some_and(|a| a.encryption.is_some());
        Ok(if encrypted { format!("{file}.age") } else { file })
    }

    fn open_hint(file: &Path) -> String {
        match file.extension() {
            Some(e) if e == "age" => format!(
                " It is encrypted as stored; decrypt it with: age -d -i KEY -o {} {} (or use `kubectl backup etcd restore --identity KEY`)",
                file.with_extension("").display(),
                file.display()
            ),
            _ => String::new(),
        }
    }
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
    if let Some(a) = &s.archive {
        let _ = writeln!(out, "File:          {} ({}, {})", a.key, a.format, size(a.size));
        let _ = writeln!(out, "SHA-256:       {}", a.sha256);
        let _ = writeln!(out, "Encryption:    {}", encryption(a.encryption.as_ref()));
    }
    let t = &s.timing;
    let _ = writeln!(out, "Started:       {} ({} ago)", time(t.start_timestamp), age(t.start_timestamp));
    let _ = writeln!(out, "Completed:     {}", time(t.completion_timestamp));
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

async fn restore(cli: &Globals, args: &RestoreArgs) -> Result<ExitCode> {
    validate_name("etcd backup name", &args.name)?;
    let store = open_location::open(cli, None).await?.store;
    let observer = progress::observer(args.output.output, "keys");
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
        println!(
            "  etcdutl snapshot restore {} --data-dir NEW_DATA_DIR --bump-revision 1000000000 --mark-compacted",
            path.display()
        );
        println!("  (--bump-revision keeps resourceVersions from being reused; see docs/etcd.md)");
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
        assert_eq!(s.kind, EtcdBackupType::KeysJson);
        let src = s.connection.source(s.prefix.clone()).unwrap();
        assert_eq!(src.cert_file.as_deref(), Some(std::path::Path::new("/c.crt")));
        assert_eq!(src.prefix.as_deref(), Some("/registry/"));
        assert_eq!(s.ttl, "720h");
        let cli = Etcd::parse_from(["kubectl-backup-etcd", "get"]);
        assert!(matches!(cli.etcd.command, EtcdCommand::Catalog(catalog::CatalogCommand::List(_))));
    }
}
