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
use kubectl_backup_core::volume::snapshot;

use clap::Args;

use super::catalog::{Shown, encryption, encryption_short, print_expiry, took};
use super::{exit_for, throttle};
use crate::args::{Column, EncryptArgs, FilterArgs, Globals, Output, OutputArg};
use crate::output::{age, print_document, size, time, until};
use crate::{open_location, progress};

pub async fn create(cli: &Globals, args: &CreateArgs) -> Result<ExitCode> {
    // Check everything we can before touching the cluster or detaching.
    validate_name("backup name", &args.name)?;
    parse_duration("--ttl", &args.ttl)?;
    let filters = args.filters.filters();
    Selection::new(&filters)?;
    if args.in_cluster {
        let request = super::requests::NewBackup {
            name: &args.name,
            filters,
            ttl: &args.ttl,
            include_volumes: args.include_volumes,
        };
        return super::requests::create_backup(cli, request, args.wait, args.output.output).await;
    }
    let seal = args.encrypt.seal()?;
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let location = open_location::open(cli, Some(&cluster.client)).await?;
    location.ensure_writable()?;
    let store = match seal {
        Some(seal) => location.store.clone().with_seal(Some(seal)),
        None => location.store.clone(),
    };
    let spec = BackupSpec {
        filters,
        ttl: Some(args.ttl.clone()),
        storage_location: Some(location.display()),
        schedule: None,
        incremental: args.incremental || location.incremental,
        include_volumes: args.include_volumes.unwrap_or(location.include_volumes || args.volume_method.is_some()),
        volume_method: args.volume_method.unwrap_or_default(),
        mover: args.mover.settings(),
    };

    let detached = super::detached();
    if !args.wait && !detached {
        return super::detach("backup", &args.name);
    }
    let observer = progress::observer(if detached { Output::Json } else { args.output.output }, "objects");
    let run = backup::run(&cluster, &store, &args.name, spec.clone(), observer.clone());
    let doing = "stopping the backup: its LISTs end, a mover Pod is ended after its post hooks run, and what it wrote is removed";
    let result = super::interruptible(doing, run).await;
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
    let stored = match &s.incremental {
        Some(i) if i.objects_not_read > 0 => format!(
            "{} new (incremental: {} objects reused, {} unchanged since the last backup and not read)",
            size(i.bytes_uploaded),
            i.objects_reused,
            i.objects_not_read
        ),
        Some(i) => format!("{} new (incremental: {} objects reused)", size(i.bytes_uploaded), i.objects_reused),
        None => size(b.bytes_stored()),
    };
    println!(
        "Backup \"{}\" {}{took}: {} objects, {} namespaces, {stored} in {location}",
        b.metadata.name,
        s.phase,
        s.progress.items_backed_up,
        s.namespaces.len(),
    );
    print_expiry(s.expiration);
    if !s.volumes.is_empty() {
        println!("Volume data:");
        for v in &s.volumes {
            println!("  - {}", volume_line(v));
        }
    }
    print_messages("Warnings", &s.warnings);
    print_messages("Errors", &s.errors);
}

/// One claim's data: `shop/data: 53 files, 1.2 GiB read, 210 MiB stored in 4 parts (12.3s)`.
fn volume_line(v: &kubectl_backup_core::model::VolumeData) -> String {
    if let Some(s) = &v.snapshot {
        return format!(
            "{}/{}: CSI snapshot {} (driver {}, VolumeSnapshotClass {}) ({:.1}s)",
            v.namespace,
            v.claim,
            s.handle,
            s.driver,
            s.class,
            v.duration_ms as f64 / 1000.0
        );
    }
    let mut line = format!(
        "{}/{}: {} files, {} read, {} stored in {} part(s) ({:.1}s)",
        v.namespace,
        v.claim,
        v.tree.files,
        size(v.tree.bytes),
        size(v.size),
        v.parts.len(),
        v.duration_ms as f64 / 1000.0
    );
    if !v.tree.skipped.is_empty() {
        line.push_str(&format!("; not stored: {}", v.tree.skipped.join(", ")));
    }
    line
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
    const COLUMNS: &'static [Column<Backup>] = &[
        Column::new("NAME", |b| b.metadata.name.clone()),
        Column::new("PHASE", |b| b.status.phase.to_string()),
        Column::new("OBJECTS", |b| b.status.progress.items_backed_up.to_string()),
        Column::new("SIZE", |b| match (&b.status.archive, &b.status.incremental) {
            (Some(a), _) => size(a.size),
            // An incremental backup's size is what its run added to the location's packs.
            (None, Some(i)) => format!("+{}", size(i.bytes_uploaded)),
            (None, None) => "-".into(),
        }),
        Column::new("CREATED", |b| age(b.metadata.creation_timestamp)),
        Column::new("EXPIRES", |b| {
            if b.status.phase == Phase::InProgress { "-".into() } else { until(b.status.expiration) }
        }),
        Column::wide("NAMESPACES", |b| {
            let f = &b.spec.filters;
            if f.included_namespaces.is_empty() { "*".into() } else { f.included_namespaces.join(",") }
        }),
        Column::wide("ERRORS", |b| b.status.errors.len().to_string()),
        Column::wide("WARNINGS", |b| b.status.warnings.len().to_string()),
        Column::wide("ENCRYPTION", |b| encryption_short(b.encryption())),
        Column::wide("SCHEDULE", |b| b.spec.schedule.clone().unwrap_or_else(|| "-".into())),
        Column::wide("LOCATION", |b| b.spec.storage_location.clone().unwrap_or_else(|| "-".into())),
    ];

    async fn before_delete(cli: &Globals, store: &Store, name: &str, keep_snapshots: bool) -> Result<()> {
        // Leftovers of a run that never committed have no snapshots to delete; a backup that
        // cannot be read is not deleted (its snapshots would be lost track of).
        let head = kubectl_backup_core::committed::read::<Objects, kubectl_backup_core::model::BackupMetadataHead>(
            store, name,
        )
        .await?;
        let Some(head) = head else { return Ok(()) };
        let snapshots = snapshot::of_backup(&head.backup);
        if snapshots.is_empty() {
            return Ok(());
        }
        if keep_snapshots {
            let n = snapshots.len();
            eprintln!(
                "note: the {n} CSI snapshot(s) of backup {name:?} are left in the storage system (--keep-snapshots)"
            );
            return Ok(());
        }
        let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
        let done =
            snapshot::delete_all(&cluster, name, &snapshots, Some(snapshot::DELETE_TIMEOUT)).await.map_err(|e| {
                anyhow::anyhow!("backup {name:?} is kept: {e} (--keep-snapshots deletes it and leaves its snapshots)")
            })?;
        for (s, d) in snapshots.iter().zip(&done) {
            match d {
                snapshot::Deleted::Requested => println!("deleted CSI snapshot {} of backup \"{name}\"", s.handle),
                snapshot::Deleted::NotHere(why) => {
                    eprintln!("note: CSI snapshot {} of backup {name:?} is left in the storage system: {why}", s.handle)
                }
            }
        }
        Ok(())
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

    async fn download(
        store: &Store,
        name: &str,
        dest: kubectl_backup_core::catalog::Destination<'_>,
    ) -> kubectl_backup_core::Result<u64> {
        catalog::download(store, name, dest).await
    }

    async fn download_name(store: &Store, name: &str) -> kubectl_backup_core::Result<String> {
        let b = catalog::describe(store, name).await?;
        let encrypted = b.encryption().is_some();
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
    }
    if let Some(i) = &s.incremental {
        let _ = writeln!(
            out,
            "Incremental:        {} packs ({} new), {} objects stored, {} reused ({} not read: unchanged), {} uploaded",
            i.packs,
            i.packs_written,
            i.objects_stored,
            i.objects_reused,
            i.objects_not_read,
            size(i.bytes_uploaded)
        );
    }
    if s.archive.is_some() || s.incremental.is_some() {
        let _ = writeln!(out, "Encryption:         {}", encryption(b.encryption()));
    }
    let _ = writeln!(out, "Objects:            {}", s.progress.items_backed_up);
    if let Some(v) = &s.progress.volume_data {
        let _ = writeln!(
            out,
            "Moving volume data: PersistentVolumeClaim {}: {} of about {}",
            v.claim,
            size(v.bytes_done),
            size(v.bytes_total)
        );
    }
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
    if !s.volumes.is_empty() {
        let _ = writeln!(out, "Volume data:");
        for v in &s.volumes {
            let _ = writeln!(out, "  {}", volume_line(v));
            for h in &v.hooks {
                let when = h.when.map(|w| format!("{w:?}").to_lowercase()).unwrap_or_default();
                let code = h.exit_code.map_or("no exit code".to_string(), |c| format!("exit code {c}"));
                let error = h.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
                let _ = writeln!(out, "    {when} hook {:?} in {}/{}: {code}{error}", h.command, h.pod, h.container);
                for line in h.output.lines() {
                    let _ = writeln!(out, "      | {line}");
                }
            }
        }
    }
    drop(out);
    print_messages("Warnings", &s.warnings);
    print_messages("Errors", &s.errors);
}

/// `kubectl backup create --help`.
pub(crate) const CREATE_EXAMPLES: &str = "\
Examples:
  # Back up the whole cluster (every namespace and the cluster-scoped objects)
  kubectl backup create cluster-1 -A

  # Have the in-cluster controller take it (a Backup resource in namespace shop)
  kubectl backup create shop-1 -n shop --in-cluster

  # Back up namespace shop to an S3 bucket and keep it for a week
  kubectl backup create shop-1 -n shop --ttl 168h --location s3://backups/prod

  # Back up the web app of every team-* namespace, without its Secrets
  kubectl backup create web-1 --include-namespaces 'team-*' -l app=web --exclude-resources secrets

  # Encrypt the backup to an SSH public key; only its private key can restore it
  kubectl backup create shop-2 -n shop --encrypt-to \"$(cat ~/.ssh/id_ed25519.pub)\"
";

/// `kubectl backup list --help` (set in `cli.rs`: the catalog commands are shared with `etcd`).
pub(crate) const LIST_EXAMPLES: &str = "\
Examples:
  # List the backups in the default location
  kubectl backup list

  # List the backups in the registered location archive, with namespaces, errors, encryption
  kubectl backup list --location archive -o wide

  # The names of the backups in a MinIO bucket, one per line (paths as in -o json)
  kubectl backup list --location s3://backups/dev --s3-endpoint http://minio:9000 -o jsonpath='{range .items[*]}{.metadata.name}{\"\\n\"}{end}'

  # List the backups in another AWS account's bucket, through an IAM role
  kubectl backup list --location s3://prod --role-arn arn:aws:iam::123456789012:role/backup";

/// `kubectl backup describe --help`.
pub(crate) const DESCRIBE_EXAMPLES: &str = "\
Examples:
  # Show what backup shop-1 holds: filters, objects per resource, warnings
  kubectl backup describe shop-1

  # Print the whole backup document as YAML
  kubectl backup describe shop-1 -o yaml

  # Describe a backup in the registered location archive
  kubectl backup describe shop-1 --location archive";

/// `kubectl backup delete --help`.
pub(crate) const DELETE_EXAMPLES: &str = "\
Examples:
  # Delete backup shop-1 (asks for confirmation)
  kubectl backup delete shop-1

  # Delete several backups without asking, e.g. in a script
  kubectl backup delete shop-1 shop-2 --yes";

/// `kubectl backup download --help`.
pub(crate) const DOWNLOAD_EXAMPLES: &str = "\
Examples:
  # Download backup shop-1 to shop-1.tar.zst (SHA-256 verified)
  kubectl backup download shop-1

  # Download it to a file of your choice, replacing that file if it exists
  kubectl backup download shop-1 -f /tmp/shop.tar.zst --overwrite

  # Unpack an unencrypted backup here without keeping the archive
  kubectl backup download shop-1 -f - | tar --zstd -xf -";

/// How volume data is moved.
#[derive(Debug, Args, Clone)]
pub struct MoverArgs {
    /// The image of the mover Pods that read and write volume data (the backup-webhook image).
    #[arg(long, env = "KUBECTL_BACKUP_MOVER_IMAGE", default_value = kubectl_backup_core::volume::DEFAULT_IMAGE, value_name = "IMAGE")]
    pub mover_image: String,
    /// The most bytes of files each mover Pod reads or writes per second, as a quantity (50Mi,
    /// 100M), so that moving a volume leaves the rest of a busy disk or network to its workloads.
    #[arg(long, value_name = "QUANTITY", value_parser = kubectl_backup_core::volume::parse_bandwidth)]
    pub mover_bandwidth: Option<u64>,
}

impl MoverArgs {
    /// What this run's mover Pods run as.
    pub fn settings(&self) -> kubectl_backup_core::volume::MoverSettings {
        kubectl_backup_core::volume::MoverSettings {
            image: self.mover_image.clone(),
            bytes_per_second: self.mover_bandwidth,
            time_limit: None,
        }
    }
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
    /// Store object bodies once per location, in packs shared by every incremental backup there:
    /// uploads only what no earlier incremental backup stored. The default when the BackupLocation
    /// says `incremental: true`.
    #[arg(long, conflicts_with = "in_cluster")]
    pub incremental: bool,
    /// Back up the data of the PersistentVolumeClaims in scope too: a mover Pod per claim (in the
    /// claim's namespace, created with your credentials) streams its files to the location through
    /// presigned URLs. Needs an S3, GCS or Azure location that Pods can reach. The default is the
    /// BackupLocation's includeVolumes. With --in-cluster, the controller's movers act as you.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub include_volumes: Option<bool>,
    /// How volume data is backed up (implies --include-volumes): fs copies the files through mover
    /// Pods; snapshot takes a CSI VolumeSnapshot with the VolumeSnapshotClass of the claim's driver
    /// and records its handle (the storage system keeps the data).
    #[arg(long, value_name = "fs|snapshot", conflicts_with = "in_cluster")]
    pub volume_method: Option<kubectl_backup_core::model::VolumeMethod>,
    #[command(flatten)]
    pub mover: MoverArgs,
    /// Have the in-cluster controller take it: creates a Backup resource (in the one namespace
    /// backed up, else the install namespace) and follows its status. Needs the in-cluster
    /// component; --location names a BackupLocation (or, in the install namespace, a URL).
    #[arg(long, conflicts_with_all = ["encrypt_to", "encrypt_passphrase_file"])]
    pub in_cluster: bool,
    /// Wait for the backup to finish. With --wait=false it runs in the background; follow it with
    /// `kubectl backup describe NAME`.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArg,
}
