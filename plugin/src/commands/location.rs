//! `location add|list|remove`: BackupLocations in the install namespace.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kubectl_backup_core::crd::{
    AccessMode, AssumeRoleSpec, BackupLocation, BackupLocationSpec, BackupLocationStatus, LocationEncryption,
};
use kubectl_backup_core::error::kube_message;
use kubectl_backup_core::input::validate_name;
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::locations;
use kubectl_backup_core::store::{Location, Provider};

use super::throttle;
use crate::args::{Column, Globals, ListOutputArg};
use crate::output::age;

#[derive(Debug, Args)]
pub struct LocationArgs {
    #[command(subcommand)]
    pub command: LocationCommand,
}

/// `kubectl backup location --help`.
pub(crate) const LOCATION_EXAMPLES: &str = "\
Examples:
  # Register an S3 bucket as the default location, with this shell's AWS_* credentials
  kubectl backup location add prod --url s3://backups/prod --default --credentials-from-env

  # List the registered locations and whether their last check passed
  kubectl backup location list

  # Remove a location; its backups stay in storage
  kubectl backup location remove archive --yes";

const ADD_EXAMPLES: &str = "\
Examples:
  # Register an S3 bucket as the default location, with this shell's AWS_* credentials
  kubectl backup location add prod --url s3://backups/prod --default --credentials-from-env

  # Register a MinIO bucket, with its keys (AWS_* variables) in the Secret minio
  kubectl backup location add lab --url s3://lab --endpoint http://minio:9000 --credentials-secret minio

  # Register an old GCS bucket read-only: restore from it, never write to it
  kubectl backup location add archive --url gs://old-backups --credentials-secret gcs-key --read-only

  # Encrypt every backup written there to the public key of the age identity team.key
  kubectl backup location add safe --url s3://safe --encrypt-to \"$(age-keygen -y team.key)\"";

const LIST_EXAMPLES: &str = "\
Examples:
  # List the registered locations and whether their last check passed
  kubectl backup location list

  # Print them as BackupLocation documents in YAML
  kubectl backup location list -o yaml

  # With region, endpoint, encryption, role and the last check's message
  kubectl backup location list -o wide

  # The URL of the default location
  kubectl backup location list -o jsonpath='{.items[?(@.spec.default==true)].spec.url}'

  # List the locations of a component installed in namespace backup-system
  kubectl backup location list --install-namespace backup-system";

const REMOVE_EXAMPLES: &str = "\
Examples:
  # Remove the location archive (asks for confirmation; its backups stay in storage)
  kubectl backup location remove archive

  # Remove it without asking, e.g. in a script
  kubectl backup location remove archive --yes";

#[derive(Debug, Subcommand)]
pub enum LocationCommand {
    /// Register a location by name (a BackupLocation in the install namespace).
    #[command(after_help = ADD_EXAMPLES)]
    Add(AddArgs),
    /// List registered locations.
    #[command(alias = "ls", alias = "get", after_help = LIST_EXAMPLES)]
    List(ListOutputArg),
    /// Remove a registered location (its backups stay in storage).
    #[command(alias = "rm", alias = "delete", after_help = REMOVE_EXAMPLES)]
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///path.
    #[arg(long, value_name = "URL")]
    pub url: String,
    #[arg(long)]
    pub region: Option<String>,
    /// S3-compatible endpoint.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub path_style: Option<bool>,
    /// PEM CA bundle for the store's certificate (stored in the BackupLocation).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<std::path::PathBuf>,
    /// An existing Secret with the credentials as environment variables.
    #[arg(long, value_name = "NAME", conflicts_with = "credentials_from_env")]
    pub credentials_secret: Option<String>,
    /// Create the Secret `<name>-credentials` from this shell's provider environment (AWS_*, AZURE_*, GOOGLE_*).
    #[arg(long)]
    pub credentials_from_env: bool,
    /// Make it the default location.
    #[arg(long)]
    pub default: bool,
    /// Never write or delete in it (not even expired backups).
    #[arg(long)]
    pub read_only: bool,
    /// Store every backup written here incrementally (as `create --incremental`): object bodies
    /// once per location, in packs shared by its incremental backups.
    #[arg(long)]
    pub incremental: bool,
    /// Back up volume data in every backup written here unless it says otherwise (as
    /// `create --include-volumes`; schedules and Backup requests too).
    #[arg(long)]
    pub include_volumes: bool,
    /// Encrypt every backup written here to these public keys (age1..., SSH); repeatable or
    /// comma-separated. Commands that name their own recipients override it.
    #[arg(long, value_delimiter = ',', value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// A Secret in the install namespace whose key `identity` opens those backups, for the
    /// controller's auto-restore.
    #[arg(long, value_name = "NAME", conflicts_with = "identity_from_file")]
    pub identity_secret: Option<String>,
    /// Create the Secret `<name>-identity` from this private key file and name it as above.
    #[arg(long, value_name = "FILE")]
    pub identity_from_file: Option<std::path::PathBuf>,
    /// Save the location without checking that it can be listed and written to.
    #[arg(long)]
    pub skip_check: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub name: String,
    #[arg(short = 'y', long)]
    pub yes: bool,
}

async fn create_secret(cluster: &Cluster, ns: &str, name: &str, data: BTreeMap<String, ByteString>) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(ns.into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| anyhow!("creating Secret {name} in {ns}: {}", kube_message(&e)))?;
    Ok(())
}

pub async fn run(cli: &Globals, args: &LocationArgs) -> Result<ExitCode> {
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    let ns = cli.location.install_namespace.as_str();
    let api: Api<BackupLocation> = Api::namespaced(cluster.client.clone(), ns);
    match &args.command {
        LocationCommand::Add(a) => add(&cluster, ns, &api, a, cli.location.role.spec()).await,
        LocationCommand::List(o) => list(&api, o).await,
        LocationCommand::Remove(r) => remove(&api, ns, r).await,
    }
}

async fn add(
    cluster: &Cluster,
    ns: &str,
    api: &Api<BackupLocation>,
    a: &AddArgs,
    role: Option<AssumeRoleSpec>,
) -> Result<ExitCode> {
    validate_name("location name", &a.name)?;
    let parsed = Location::parse(&a.url)?;
    let ca_bundle = match &a.ca_bundle {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| anyhow!("--ca-bundle {}: {e}", p.display()))?),
        None => None,
    };
    let mut credentials_secret = a.credentials_secret.clone();
    if a.credentials_from_env {
        let prefix = match parsed.provider {
            Provider::S3 => "AWS_",
            Provider::Gcs => "GOOGLE_",
            Provider::Azure => "AZURE_",
            Provider::File => bail!("--credentials-from-env: a file:// location has no credentials"),
        };
        let data: BTreeMap<String, ByteString> = std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect();
        if data.is_empty() {
            bail!("--credentials-from-env: no {prefix}* variable is set in this shell");
        }
        let secret_name = format!("{}-credentials", a.name);
        create_secret(cluster, ns, &secret_name, data).await?;
        credentials_secret = Some(secret_name);
    }
    if !a.encrypt_to.is_empty() {
        kubectl_backup_core::crypto::Seal::recipients(&a.encrypt_to)?;
    }
    let mut identity_secret = a.identity_secret.clone();
    if let Some(file) = &a.identity_from_file {
        // Refuse a file that holds no usable key before creating anything.
        kubectl_backup_core::crypto::Unseal::identity_files(std::slice::from_ref(file))?;
        let text = std::fs::read(file).map_err(|e| anyhow!("--identity-from-file {}: {e}", file.display()))?;
        let secret_name = format!("{}-identity", a.name);
        let data = BTreeMap::from([(locations::IDENTITY_KEY.to_string(), ByteString(text))]);
        create_secret(cluster, ns, &secret_name, data).await?;
        identity_secret = Some(secret_name);
    }
    let spec = BackupLocationSpec {
        url: a.url.clone(),
        region: a.region.clone(),
        endpoint: a.endpoint.clone(),
        path_style: a.path_style,
        ca_bundle,
        credentials_secret,
        default: a.default,
        access_mode: if a.read_only { AccessMode::ReadOnly } else { AccessMode::ReadWrite },
        encryption: LocationEncryption::of(&a.encrypt_to, identity_secret.as_deref()),
        assume_role: role,
        incremental: a.incremental,
        include_volumes: a.include_volumes,
    };
    if a.default {
        // One default: clear it elsewhere.
        for mut other in api.list(&ListParams::default()).await.map_err(|e| anyhow!("{}", kube_message(&e)))?.items {
            if other.spec.default && other.name_any() != a.name {
                other.spec.default = false;
                other.metadata.managed_fields = None;
                api.replace(&other.name_any(), &PostParams::default(), &other)
                    .await
                    .map_err(|e| anyhow!("{}", kube_message(&e)))?;
            }
        }
    }
    let bl = BackupLocation::new(&a.name, spec);
    // Checked before it is saved (listed; written to unless ReadOnly), as the controller checks it
    // every --location-check-interval: a typo shows up here and not at 2 a.m.
    let held = if a.skip_check { None } else { Some(check_before_saving(cluster, ns, &bl).await?) };
    api.create(&PostParams::default(), &bl)
        .await
        .map_err(|e| anyhow!("creating BackupLocation {} in {ns}: {}", a.name, kube_message(&e)))?;
    match held {
        Some(n) => println!("location \"{}\" added ({}); checked, it holds {n} backup(s)", a.name, a.url),
        None => println!("location \"{}\" added ({}); not checked (--skip-check)", a.name, a.url),
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens and checks a location about to be saved; returns how many backups it holds.
async fn check_before_saving(cluster: &Cluster, ns: &str, bl: &BackupLocation) -> Result<usize> {
    let name = bl.name_any();
    let not_added =
        |e: &dyn std::fmt::Display| anyhow!("location {name:?} not added: {e} (--skip-check saves it anyway)");
    let r = locations::open(&cluster.client, ns, bl, &Default::default()).await.map_err(|e| not_added(&e))?;
    let checked = async {
        locations::check(&r.store, r.access).await?;
        kubectl_backup_core::catalog::list(&r.store).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(30), checked).await {
        Ok(Ok(listing)) => Ok(listing.backups.len()),
        Ok(Err(e)) => Err(not_added(&e)),
        Err(_) => Err(not_added(&"no answer within 30s")),
    }
}

/// The columns of `location list` (and `-o wide`).
const COLUMNS: &[Column<BackupLocation>] = &[
    Column::new("NAME", |b| b.name_any()),
    Column::new("URL", |b| b.spec.url.clone()),
    Column::new("DEFAULT", |b| b.spec.default.to_string()),
    Column::new("ACCESS", |b| format!("{:?}", b.spec.access_mode)),
    Column::new("PHASE", |b| status(b).phase.clone().unwrap_or_else(|| "-".into())),
    Column::new("LAST CHECKED", |b| {
        let checked = status(b).last_validation_time.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        checked.map(|c| format!("{} ago", age(Some(c)))).unwrap_or_else(|| "-".into())
    }),
    Column::new("CREDENTIALS", |b| b.spec.credentials_secret.clone().unwrap_or_else(|| "-".into())),
    Column::new("AGE", |b| age(b.metadata.creation_timestamp.as_ref().map(|t| t.0))),
    Column::wide("REGION", |b| b.spec.region.clone().unwrap_or_else(|| "-".into())),
    Column::wide("ENDPOINT", |b| b.spec.endpoint.clone().unwrap_or_else(|| "-".into())),
    Column::wide("ENCRYPTED TO", |b| {
        let n = b.spec.encryption.as_ref().map_or(0, |e| e.recipients.len());
        if n == 0 { "-".into() } else { format!("{n} recipient(s)") }
    }),
    Column::wide("ROLE", |b| b.spec.assume_role.as_ref().map(|r| r.role_arn.clone()).unwrap_or_else(|| "-".into())),
    Column::wide("MESSAGE", |b| status(b).message.clone().unwrap_or_else(|| "-".into())),
];

fn status(b: &BackupLocation) -> &BackupLocationStatus {
    static NONE: std::sync::LazyLock<BackupLocationStatus> = std::sync::LazyLock::new(Default::default);
    b.status.as_ref().unwrap_or(&NONE)
}

async fn list(api: &Api<BackupLocation>, output: &ListOutputArg) -> Result<ExitCode> {
    let list =
        api.list(&ListParams::default()).await.map_err(|e| anyhow!("listing BackupLocations: {}", kube_message(&e)))?;
    let document = serde_json::json!({
        "apiVersion": kubectl_backup_core::API_VERSION, "kind": "BackupLocationList", "items": list.items
    });
    output.print("backuplocation.kubectl-backup.dev", COLUMNS, &list.items, &document)?;
    Ok(ExitCode::SUCCESS)
}

async fn remove(api: &Api<BackupLocation>, ns: &str, r: &RemoveArgs) -> Result<ExitCode> {
    let question = format!("Remove location {} (its backups stay in storage)?", r.name);
    if !super::confirm("remove a location", &question, r.yes)? {
        return Ok(ExitCode::FAILURE);
    }
    api.delete(&r.name, &DeleteParams::default())
        .await
        .map_err(|e| anyhow!("removing BackupLocation {} in {ns}: {}", r.name, kube_message(&e)))?;
    println!("location \"{}\" removed; its backups are still in storage", r.name);
    Ok(ExitCode::SUCCESS)
}
