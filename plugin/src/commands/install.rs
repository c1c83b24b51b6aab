//! `install` and `uninstall` of the in-cluster component.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::TypeMeta;
use kube::discovery::oneshot;
use kubectl_backup_core::crd;
use kubectl_backup_core::error::kube_message;
use kubectl_backup_core::install::{self, InstallOptions};
use kubectl_backup_core::kube_client::Cluster;
use kubectl_backup_core::store::Location;
use serde_json::Value;

use super::throttle;
use crate::args::{Globals, Output};
use crate::output::print_document;

/// `kubectl backup install --help`.
pub(crate) const INSTALL_EXAMPLES: &str = "\
Examples:
  # Install, storing backups in S3 with the keys in the Secret backup-credentials
  kubectl backup install --location s3://backups/prod --credentials-secret backup-credentials

  # Store backups in a MinIO bucket, with its keys (AWS_* variables) in the Secret minio
  kubectl backup install --location s3://backups --s3-endpoint http://minio:9000 --credentials-secret minio

  # Encrypt every backup to the public key of the age identity team.key
  kubectl backup install --location s3://backups/prod --encrypt-to \"$(age-keygen -y team.key)\"

  # Let cert-manager issue the webhook's certificate; namespaces pr-* are ephemeral workspaces
  kubectl backup install --location s3://backups/prod --cert-manager --ephemeral-pattern 'pr-*'

  # Print the manifests instead of applying them
  kubectl backup install --location s3://backups/prod --dry-run -o yaml > kubectl-backup.yaml";

/// `kubectl backup uninstall --help`.
pub(crate) const UNINSTALL_EXAMPLES: &str = "\
Examples:
  # Remove the in-cluster component (asks for confirmation; backups in storage are kept)
  kubectl backup uninstall

  # Remove it without asking, but keep the CRDs and so every BackupSchedule and BackupLocation
  kubectl backup uninstall --keep-crds --yes

  # Remove a component installed in namespace backup-system
  kubectl backup uninstall --namespace backup-system";

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Namespace of the component (default: --install-namespace, i.e. kubectl-backup).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// A Secret in that namespace with the store's credentials as environment variables
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, GOOGLE_SERVICE_ACCOUNT_KEY...).
    #[arg(long, value_name = "NAME")]
    pub credentials_secret: Option<String>,
    /// Encrypt every backup of the default location to these public keys (age1..., SSH):
    /// schedules, continuous backups and anything written there without its own --encrypt-to.
    #[arg(long, value_delimiter = ',', value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// A Secret in the install namespace whose key `identity` opens them, so that the
    /// controller can restore workspaces from encrypted backups.
    #[arg(long, value_name = "NAME")]
    pub identity_secret: Option<String>,
    /// An annotation of the controller's ServiceAccount, KEY=VALUE (repeatable): IRSA's
    /// eks.amazonaws.com/role-arn=..., GKE's iam.gke.io/gcp-service-account=..., Azure workload
    /// identity's azure.workload.identity/client-id=...
    #[arg(long = "sa-annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub sa_annotations: Vec<(String, String)>,
    /// Image of backup-webhook.
    #[arg(long, value_name = "REF", default_value = install::DEFAULT_IMAGE)]
    pub image: String,
    /// Let cert-manager issue the serving certificate instead of generating a CA here.
    #[arg(long)]
    pub cert_manager: bool,
    /// Ephemeral workspace names (globs), e.g. pr-*.
    #[arg(long = "ephemeral-pattern", value_delimiter = ',', value_name = "GLOB")]
    pub ephemeral_patterns: Vec<String>,
    /// Which namespaces are workspaces (label selector).
    #[arg(long, value_name = "SELECTOR")]
    pub workspace_selector: Option<String>,
    /// A custom resource that is a workspace too (`<plural>.<group>`): creating one named N
    /// restores namespace N from its newest backup.
    #[arg(long = "workspace-resource", value_delimiter = ',', value_name = "PLURAL.GROUP")]
    pub workspace_resources: Vec<String>,
    /// Back up workspaces continuously, on change.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub continuous: bool,
    /// What the webhook logs: a level (error, warn, info, debug, trace) or tracing directives
    /// such as info,backup_webhook=debug. Default: info.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Whom the mover Pods of schedules and continuous backups act as (a user name, e.g.
    /// system:serviceaccount:kubectl-backup:mover, bound to a role that may create Pods and
    /// Secrets in the workspaces: docs/volumes.md). Without it, those backups report their claims
    /// instead of reading them.
    #[arg(long, value_name = "USER")]
    pub volume_identity: Option<String>,
    /// The most bytes of files each mover Pod of schedules and continuous backups reads per
    /// second, as a quantity (50Mi, 100M).
    #[arg(long, value_name = "QUANTITY", value_parser = bandwidth)]
    pub mover_bandwidth: Option<String>,
    /// Print the manifests instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Output of --dry-run: yaml (default) or json.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Output>,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Keep the CustomResourceDefinitions (and so every BackupSchedule and BackupLocation).
    #[arg(long)]
    pub keep_crds: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

pub async fn install(cli: &Globals, a: &InstallArgs) -> Result<ExitCode> {
    let namespace = a.namespace.clone().unwrap_or_else(|| cli.location.install_namespace.clone());
    kubectl_backup_core::input::validate_name("--namespace", &namespace)?;
    let url = cli
        .location
        .location
        .clone()
        .ok_or_else(|| anyhow!("--location URL is required: where the in-cluster component stores backups"))?;
    Location::parse(&url)?;
    let opts = InstallOptions {
        namespace: namespace.clone(),
        image: a.image.clone(),
        location_url: url,
        credentials_secret: a.credentials_secret.clone(),
        s3_endpoint: cli.location.s3_endpoint.clone(),
        region: cli.location.region.clone(),
        cert_manager: a.cert_manager,
        ephemeral_patterns: a.ephemeral_patterns.clone(),
        workspace_selector: a.workspace_selector.clone(),
        workspace_resources: a.workspace_resources.clone(),
        continuous: a.continuous,
        encrypt_to: a.encrypt_to.clone(),
        identity_secret: a.identity_secret.clone(),
        sa_annotations: a.sa_annotations.iter().cloned().collect(),
        path_style: cli.location.path_style,
        ca_bundle: match &cli.location.ca_cert {
            Some(f) => Some(std::fs::read_to_string(f).map_err(|e| anyhow!("--ca-cert {}: {e}", f.display()))?),
            None => None,
        },
        assume_role: cli.location.role.spec(),
        log_level: a.log_level.clone(),
        volume_identity: a.volume_identity.clone(),
        mover_bandwidth: a.mover_bandwidth.clone(),
    };
    if !opts.encrypt_to.is_empty() {
        kubectl_backup_core::crypto::Seal::recipients(&opts.encrypt_to)?;
    }
    let tls = if a.cert_manager { None } else { Some(install::generate_tls(&namespace)?) };
    let objects = install::render(&opts, tls.as_ref());
    if a.dry_run {
        match a.output.unwrap_or(Output::Yaml) {
            Output::Json => print_document(
                &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}),
                Output::Json,
            )?,
            _ => print!("{}", install::to_yaml(&objects)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    if let Some(secret) = &a.credentials_secret {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cluster.client.clone(), &namespace);
        if !matches!(secrets.get_opt(secret).await, Ok(Some(_))) {
            eprintln!(
                "warning: Secret {secret:?} does not exist in {namespace:?} yet; the webhook will not start until it does"
            );
        }
    }
    for obj in &objects {
        apply(&cluster, obj).await?;
        if obj["kind"] == "CustomResourceDefinition" {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if let Some(late) = crd::wait_established(&cluster, &[name], Duration::from_secs(30)).await.pop() {
                bail!("{late}");
            }
        }
    }
    // Schedules stored by an earlier version with the old spellings (includeClusterResources: true,
    // etcd type keys-json) are rewritten to the values the CRD now validates.
    let rewritten = crd::upgrade_stored_schedules(&cluster).await?;
    if !rewritten.is_empty() {
        println!(
            "rewrote {} BackupSchedule(s) stored with the spellings of an earlier version (auto/true/false, snapshot/keys/keys-json) to the CamelCase values: {}",
            rewritten.len(),
            rewritten.join(", ")
        );
    }
    // The webhook would create it from its flags when it starts; applied here too so it exists now
    // and a re-install with another --location updates it.
    apply(&cluster, &install::default_location(&opts)).await?;
    // Kubernetes 1.20 has no kubernetes.io/metadata.name label for the webhook's namespaceSelector
    // to exclude kube-system by: label it (our own namespace is labelled in its manifest).
    label_kube_system(&cluster, Some(install::ADMISSION_SKIP_VALUE)).await;
    println!(
        "kubectl-backup installed in namespace {namespace:?} ({} objects). The webhook runs image {}.\nCheck it with: kubectl -n {namespace} rollout status deployment/{}",
        objects.len() + 1,
        a.image,
        install::APP
    );
    Ok(ExitCode::SUCCESS)
}

/// Sets (or with `None` removes) the admission-skip label on kube-system. A failure is a warning:
/// the webhook ignores kube-system anyway, the label only keeps requests from being sent.
async fn label_kube_system(cluster: &Cluster, value: Option<&str>) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {install::ADMISSION_SKIP_LABEL: value}}});
    if let Err(e) = api.patch("kube-system", &PatchParams::default(), &Patch::Merge(&patch)).await {
        eprintln!(
            "warning: could not {} the label {} on kube-system: {}",
            if value.is_some() { "set" } else { "remove" },
            install::ADMISSION_SKIP_LABEL,
            kube_message(&e)
        );
    }
}

/// The API of an object (any kind, including CRDs just created), by discovery.
async fn api_for(cluster: &Cluster, obj: &Value) -> Result<(Api<DynamicObject>, ApiResource)> {
    let tm: TypeMeta = serde_json::from_value(obj.clone()).context("an object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&tm).map_err(|e| anyhow!("{e}"))?;
    let (ar, caps) = oneshot::pinned_kind(&cluster.client, &gvk).await.map_err(|e| {
        anyhow!(
            "the cluster does not serve {}/{} ({}){}",
            tm.api_version,
            tm.kind,
            kube_message(&e),
            if tm.api_version.starts_with("cert-manager") {
                "; install cert-manager first or drop --cert-manager"
            } else {
                ""
            }
        )
    })?;
    let api = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
        _ => Api::all_with(cluster.client.clone(), &ar),
    };
    Ok((api, ar))
}

async fn apply(cluster: &Cluster, obj: &Value) -> Result<()> {
    let (api, _) = api_for(cluster, obj).await?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let pp = PatchParams::apply(kubectl_backup_core::FIELD_MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(obj))
        .await
        .map_err(|e| anyhow!("applying {} {name}: {}", obj["kind"].as_str().unwrap_or("?"), kube_message(&e)))?;
    Ok(())
}

pub async fn uninstall(cli: &Globals, a: &UninstallArgs) -> Result<ExitCode> {
    let namespace = a.namespace.clone().unwrap_or_else(|| cli.location.install_namespace.clone());
    let question = format!("Uninstall kubectl-backup from namespace {namespace}? Backups in storage are kept.");
    if !super::confirm("uninstall", &question, a.yes)? {
        return Ok(ExitCode::FAILURE);
    }
    let cluster = Cluster::connect(&cli.kube.options(), throttle(cli)).await?;
    // What install renders, in reverse: the webhook configuration first so namespace creation is
    // never slowed by a webhook that is going away.
    let opts = InstallOptions {
        namespace: namespace.clone(),
        image: String::new(),
        location_url: String::new(),
        credentials_secret: None,
        s3_endpoint: None,
        region: None,
        cert_manager: true,
        ephemeral_patterns: vec![],
        workspace_selector: None,
        workspace_resources: vec![],
        continuous: false,
        encrypt_to: vec![],
        identity_secret: None,
        sa_annotations: Default::default(),
        path_style: None,
        ca_bundle: None,
        assume_role: None,
        log_level: None,
        volume_identity: None,
        mover_bandwidth: None,
    };
    let mut objects = install::render(&opts, None);
    objects.retain(|o| o["kind"] != "BackupLocation" && o["kind"] != "Issuer" && o["kind"] != "Certificate");
    objects.push(serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": install::TLS_SECRET, "namespace": namespace}}));
    // What the webhook made itself.
    objects.push(serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": install::SIGNING_KEY_SECRET, "namespace": namespace}}));
    objects.push(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": install::STATE_CONFIGMAP, "namespace": namespace}}));
    objects.sort_by_key(|o| match o["kind"].as_str() {
        Some("MutatingWebhookConfiguration") => 0,
        Some("Deployment") => 1,
        Some("CustomResourceDefinition") => 8,
        Some("Namespace") => 9,
        _ => 5,
    });
    let mut removed = 0;
    for obj in &objects {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if (kind == "CustomResourceDefinition" && a.keep_crds) || name.is_empty() {
            continue;
        }
        let Ok((api, _)) = api_for(&cluster, obj).await else { continue };
        if kind == "Namespace" {
            // Only a namespace install created (labelled); never one that held other things before.
            match api.get_opt(name).await {
                Ok(Some(o))
                    if o.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                        .is_some_and(|v| v == "kubectl-backup") => {}
                _ => continue,
            }
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                println!("deleted {kind} {name}");
                removed += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => eprintln!("warning: could not delete {kind} {name}: {}", kube_message(&e)),
        }
    }
    label_kube_system(&cluster, None).await;
    println!("kubectl-backup uninstalled ({removed} objects removed); backups in storage are kept.");
    Ok(ExitCode::SUCCESS)
}

/// `KEY=VALUE`, the key a valid annotation key (an optional DNS prefix and `/`, then a name).
fn parse_annotation(s: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 63 || !name.chars().all(valid) || key.len() > 316 {
        return Err(format!("{key:?} is not an annotation key (e.g. eks.amazonaws.com/role-arn)"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `--mover-bandwidth`, checked here and passed to the webhook as it was written.
fn bandwidth(q: &str) -> Result<String, String> {
    kubectl_backup_core::volume::parse_bandwidth(q).map(|_| q.to_string())
}
