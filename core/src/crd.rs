//! The custom resources the in-cluster component reads: where backups go (`BackupLocation`) and
//! when they run (`BackupSchedule`). The CRDs are generated from these types
//! (`kubectl backup install` and the Helm chart ship the same YAML).
//!
//! Every field describes itself (`kubectl explain backupschedule.spec`); enumerations are
//! CamelCase and the API server refuses other values. v1alpha1 may still change: values stored
//! in the spellings of earlier versions are read as before and rewritten by
//! [`upgrade_stored_schedules`], which `kubectl backup install` runs (docs/in-cluster.md).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Filters;

/// Whether a location may be written and garbage-collected: ReadWrite (default) or ReadOnly
/// (backups are listed and restored but never written or deleted, not even when expired).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AccessMode {
    /// Backups are written here and deleted when they expire.
    #[default]
    ReadWrite,
    /// Backups are read (listed, restored) but never written or deleted, not even when expired.
    ReadOnly,
}

/// A named place backups are stored: the URL and what it takes to reach it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubectl-backup.dev",
    version = "v1alpha1",
    kind = "BackupLocation",
    namespaced,
    status = "BackupLocationStatus",
    shortname = "bl",
    category = "backup-all",
    doc = "A named place backups are stored (an S3, GCS or Azure bucket, or a directory), with what it takes to reach it. kubectl backup location add makes one; the controller checks each one and writes the result to status.",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".spec.default"}"#,
    printcolumn = r#"{"name":"Access","type":"string","jsonPath":".spec.accessMode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocationSpec {
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///path.
    pub url: String,
    /// The bucket's region (S3), e.g. eu-west-1. Default: the provider's environment
    /// (AWS_REGION), else us-east-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3-compatible endpoint (MinIO, Ceph...). Implies path-style requests unless pathStyle is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 path-style requests (http://endpoint/bucket/key) instead of virtual-hosted ones
    /// (http://bucket.endpoint/key). Default: true when endpoint is set, else false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// PEM CA bundle that signed the store's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret in the same namespace whose keys are the provider's environment variables
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY,
    /// GOOGLE_SERVICE_ACCOUNT_KEY, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Used when no location is named (one location of the namespace is the default).
    #[serde(default)]
    pub default: bool,
    /// ReadWrite (default) or ReadOnly: a ReadOnly location is listed and restored from, never
    /// written to or deleted from, not even when its backups expire.
    #[serde(default)]
    pub access_mode: AccessMode,
    /// Client-side encryption of every backup written here (docs/encryption.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<LocationEncryption>,
    /// S3: a role assumed through STS before talking to the bucket, on top of the base credentials
    /// (the credentials Secret, else the controller's environment: IRSA, instance profile...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRoleSpec>,
    /// Store every backup written here incrementally (as `kubectl backup create --incremental`):
    /// object bodies once per location, in packs shared by its incremental backups.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// Back up the data of the PersistentVolumeClaims in scope in every backup written here, unless
    /// the backup says otherwise (`kubectl backup create --include-volumes=false`, a schedule's or
    /// request's `includeVolumes: false`). Mover Pods read the data (docs/volumes.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_volumes: bool,
}

/// An IAM role to assume through STS (`sts:AssumeRole`), as `--role-arn` does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssumeRoleSpec {
    /// The role's ARN, e.g. arn:aws:iam::123456789012:role/backup.
    pub role_arn: String,
    /// The External ID the role's trust policy requires (sts:ExternalId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The role session name (shown in CloudTrail). Default: kubectl-backup-<time>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Lifetime of each set of temporary credentials, in seconds (STS allows 900 to the role's
    /// maximum). Default 3600. They are renewed when three quarters of it has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    /// The STS endpoint, for S3-compatible stores with their own STS (MinIO...). Default: the
    /// region's AWS STS endpoint (or AWS_ENDPOINT_URL_STS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
}

impl AssumeRoleSpec {
    /// From flags: `None` without a role ARN.
    pub fn of(
        role_arn: Option<&str>,
        external_id: Option<&str>,
        session_name: Option<&str>,
        duration_seconds: Option<u32>,
        sts_endpoint: Option<&str>,
    ) -> Option<AssumeRoleSpec> {
        let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        Some(AssumeRoleSpec {
            role_arn: given(role_arn)?,
            external_id: given(external_id),
            session_name: given(session_name),
            duration_seconds,
            sts_endpoint: given(sts_endpoint),
        })
    }

    /// What the store opens with.
    pub fn to_options(&self) -> crate::store::AssumeRole {
        crate::store::AssumeRole {
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            session_name: self.session_name.clone(),
            duration: self.duration_seconds.map(|s| std::time::Duration::from_secs(s.into())),
            sts_endpoint: self.sts_endpoint.clone(),
        }
    }
}

/// Who can read the backups written to a location, and the key the controller reads them with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationEncryption {
    /// Public keys (`age1...`, `ssh-ed25519 ...`, `ssh-rsa ...`) every backup written here is
    /// encrypted to, unless a command names its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// A Secret in the same namespace whose key `identity` holds a private key that opens these
    /// backups: the controller reads it to restore workspaces. Without it the controller writes
    /// encrypted backups it cannot read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<String>,
}

impl LocationEncryption {
    /// From flags: `None` when neither recipients nor a Secret are named.
    pub fn of(recipients: &[String], identity_secret: Option<&str>) -> Option<LocationEncryption> {
        let recipients: Vec<String> =
            recipients.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
        let identity_secret = identity_secret.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        (!recipients.is_empty() || identity_secret.is_some())
            .then_some(LocationEncryption { recipients, identity_secret })
    }
}

/// What the controller found when it last checked the location (every
/// --location-check-interval).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocationStatus {
    /// Available (the last check could list the location, and write to it unless ReadOnly) or
    /// Unavailable (see message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Available", "Unavailable"]))]
    pub phase: Option<String>,
    /// Why the last check failed (redacted), or what it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the location was last checked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_validation_time: Option<String>,
    /// `Ready`: True when the last check could list the location (and, for ReadWrite, write to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// What a scheduled etcd backup holds: Snapshot (default; the member's snapshot, restored with
/// etcdutl snapshot restore), Keys (a zip with one entry per key) or KeysJson (one JSON document
/// of every key and value). Read in the old spellings too: snapshot, keys, keys-json.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EtcdScheduleType {
    #[default]
    #[serde(alias = "snapshot")]
    Snapshot,
    #[serde(alias = "keys")]
    Keys,
    #[serde(alias = "keys-json")]
    KeysJson,
}

impl EtcdScheduleType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "Snapshot",
            Self::Keys => "Keys",
            Self::KeysJson => "KeysJson",
        }
    }
}

impl From<EtcdScheduleType> for crate::etcd::EtcdBackupType {
    fn from(t: EtcdScheduleType) -> Self {
        match t {
            EtcdScheduleType::Snapshot => Self::Snapshot,
            EtcdScheduleType::Keys => Self::Keys,
            EtcdScheduleType::KeysJson => Self::KeysJson,
        }
    }
}

impl std::str::FromStr for EtcdScheduleType {
    type Err = String;
    /// Snapshot, Keys or KeysJson in any case, or the old snapshot, keys and keys-json.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "snapshot" => Ok(Self::Snapshot),
            "keys" => Ok(Self::Keys),
            "keysjson" | "keys-json" => Ok(Self::KeysJson),
            _ => Err(format!("expected Snapshot, Keys or KeysJson, got {s:?}")),
        }
    }
}

impl std::fmt::Display for EtcdScheduleType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// etcd as the source of a scheduled backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdScheduleSource {
    /// The etcd members' client URLs, e.g. https://10.0.0.1:2379; the first that answers is used.
    pub endpoints: Vec<String>,
    /// Snapshot (default), Keys or KeysJson.
    #[serde(default)]
    pub r#type: EtcdScheduleType,
    /// Only keys under this prefix (Keys and KeysJson).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A Secret in the schedule's namespace with `ca.crt`, `tls.crt` and `tls.key` for client TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
}

/// Backups on a schedule.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubectl-backup.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    namespaced,
    status = "BackupScheduleStatus",
    shortname = "bs",
    category = "backup-all",
    doc = "Backups taken on a schedule by the in-cluster controller, of Kubernetes objects or of an etcd. A schedule outside the install namespace backs up only its own namespace.",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".spec.paused"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"string","jsonPath":".status.lastBackup"}"#,
    printcolumn = r#"{"name":"Last Result","type":"string","jsonPath":".status.lastResult"}"#,
    printcolumn = r#"{"name":"Last Run","type":"date","jsonPath":".status.lastRunTime"}"#,
    printcolumn = r#"{"name":"Next Run","type":"string","jsonPath":".status.nextRunTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// A cron expression (5 fields, or 6 with seconds) or a preset: @hourly, @daily, @weekly,
    /// @every-2-weeks, @monthly, @every-2-months.
    pub schedule: String,
    /// IANA time zone of the schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Backups are named <namePrefix>-<YYYYMMDDhhmmss> (default: the schedule's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// What to back up. In a namespace other than the install namespace, only that namespace.
    #[serde(default, flatten)]
    pub filters: Filters,
    /// How long each backup is kept (default 720h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// The BackupLocation (default: the default location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// No runs while true (kubectl backup schedule pause / resume); a run under way finishes.
    #[serde(default)]
    pub paused: bool,
    /// Back up an etcd instead of Kubernetes objects (install namespace only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdScheduleSource>,
    /// Back up the data of the PersistentVolumeClaims in scope too (default: the BackupLocation's
    /// includeVolumes). The controller's mover Pods act as the identity the admin named
    /// (backup-webhook --volume-identity); without one, the claims are reported, not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_volumes: Option<bool>,
}

/// What the controller records of the schedule's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// When the last run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_run_time: Option<String>,
    /// When the next run is due (RFC 3339); empty while paused or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_run_time: Option<String>,
    /// The name of the last backup taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// Completed, PartiallyFailed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// Why the last run failed or the schedule was refused; cleared once fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last successful run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_success_time: Option<String>,
    /// The backup a run under way is taking (set when the run is claimed, cleared when it ends).
    /// Found set when a run is due, it means the controller stopped during that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run: Option<String>,
    /// `Ready`: False with the reason when the controller refuses the schedule (e.g. a tenant
    /// schedule naming a URL, or firing more often than the admin allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// Waits until each named CustomResourceDefinition is Established (polling GET, which needs
/// fewer rights than a watch). Returns a message per CRD that is not within `timeout`. The one
/// wait for CRDs: restore and install use it.
pub async fn wait_established(
    cluster: &crate::kube_client::Cluster,
    names: &[String],
    timeout: std::time::Duration,
) -> Vec<String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(cluster.client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut late = Vec::new();
    for name in names {
        loop {
            let established = match cluster.throttle.call(|| api.get_opt(name)).await {
                Ok(Some(crd)) => crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True"),
                _ => false,
            };
            if established {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                late.push(format!(
                    "CustomResourceDefinition {name:?} was not established within {}s",
                    timeout.as_secs()
                ));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    late
}

/// The JSON merge patch that rewrites a stored BackupSchedule `spec` from the spellings of
/// earlier versions (`includeClusterResources: auto|true|false`, `etcd.type:
/// snapshot|keys|keys-json`) to the CamelCase values the CRD now requires, or `None` when it has
/// none. Only those two fields are touched.
pub fn legacy_spellings_patch(spec: &serde_json::Value) -> Option<serde_json::Value> {
    let mut patch = serde_json::Map::new();
    if let Some(old) = spec.get("includeClusterResources").and_then(|v| v.as_str())
        && let Ok(new) = serde_json::from_value::<crate::model::ClusterResources>(old.into())
        && new.as_str() != old
    {
        patch.insert("includeClusterResources".into(), new.as_str().into());
    }
    if let Some(old) = spec.pointer("/etcd/type").and_then(|v| v.as_str())
        && let Ok(new) = serde_json::from_value::<EtcdScheduleType>(old.into())
        && new.as_str() != old
    {
        patch.insert("etcd".into(), serde_json::json!({"type": new.as_str()}));
    }
    (!patch.is_empty()).then(|| serde_json::json!({"spec": patch}))
}

/// Rewrites every stored BackupSchedule (all namespaces) that still holds the spellings of earlier
/// versions, with [`legacy_spellings_patch`]; returns `namespace/name` of each one rewritten.
/// `kubectl backup install` runs it once the CRDs are applied: the API server validates the whole
/// object on every write, status included, so a schedule left with an old value could not record
/// its runs.
pub async fn upgrade_stored_schedules(cluster: &crate::kube_client::Cluster) -> crate::Result<Vec<String>> {
    use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
    let resource = ApiResource::erase::<BackupSchedule>(&());
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource);
    let failed =
        |what: String, e: kube::Error| crate::Error::Other(format!("{what}: {}", crate::error::kube_message(&e)));
    let list = api.list(&ListParams::default()).await.map_err(|e| failed("listing BackupSchedules".into(), e))?;
    let mut rewritten = Vec::new();
    for s in list.items {
        let Some(patch) = s.data.get("spec").and_then(legacy_spellings_patch) else { continue };
        let (ns, name) = (s.metadata.namespace.unwrap_or_default(), s.metadata.name.unwrap_or_default());
        Api::<DynamicObject>::namespaced_with(cluster.client.clone(), &ns, &resource)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| failed(format!("rewriting BackupSchedule {ns}/{name}"), e))?;
        rewritten.push(format!("{ns}/{name}"));
    }
    Ok(rewritten)
}

/// The CRDs, as the API server takes them.
pub fn definitions() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        BackupLocation::crd(),
        BackupSchedule::crd(),
        crate::requests::BackupRequest::crd(),
        crate::requests::RestoreRequest::crd(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_are_namespaced_v1alpha1_with_status() {
        for crd in definitions() {
            assert_eq!(crd.spec.group, "kubectl-backup.dev");
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, "v1alpha1");
            assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        }
    }

    /// Every property of both CRDs describes itself in `kubectl explain`, and no description is
    /// the derive's default.
    #[test]
    fn every_property_has_a_description() {
        fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            let described = schema["description"].as_str().is_some_and(|d| !d.trim().is_empty());
            if !described || schema["description"].as_str().is_some_and(|d| d.contains("Auto-generated")) {
                missing.push(path.to_string());
            }
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                walk(property, &format!("{path}.{name}"), missing);
            }
            if schema["items"]["properties"].is_object() {
                for (name, property) in schema["items"]["properties"].as_object().into_iter().flatten() {
                    walk(property, &format!("{path}[].{name}"), missing);
                }
            }
        }
        for crd in definitions() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let mut missing = Vec::new();
            walk(&schema["openAPIV3Schema"], &crd.spec.names.kind, &mut missing);
            assert!(missing.is_empty(), "no description: {missing:?}");
        }
    }

    /// The enumerations are CamelCase, so the API server refuses anything else.
    #[test]
    fn enums_list_the_camel_case_values() {
        let spec =
            |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
                serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"]["properties"].clone()
            };
        use kube::CustomResourceExt;
        let schedule = spec(&BackupSchedule::crd());
        let location = spec(&BackupLocation::crd());
        let values = |v: &serde_json::Value| {
            // An optional field's enum also lists null (it is nullable).
            let mut e: Vec<String> =
                v["enum"].as_array().unwrap().iter().filter_map(|x| x.as_str()).map(str::to_string).collect();
            e.sort();
            e
        };
        assert_eq!(values(&schedule["spec"]["properties"]["includeClusterResources"]), ["Always", "Auto", "Never"]);
        assert_eq!(schedule["spec"]["properties"]["includeClusterResources"]["default"], "Auto");
        assert_eq!(
            values(&schedule["spec"]["properties"]["etcd"]["properties"]["type"]),
            ["Keys", "KeysJson", "Snapshot"]
        );
        assert_eq!(values(&location["spec"]["properties"]["accessMode"]), ["ReadOnly", "ReadWrite"]);
        assert_eq!(values(&location["status"]["properties"]["phase"]), ["Available", "Unavailable"]);
    }

    #[test]
    fn old_spellings_are_read_and_patched_to_the_new_ones() {
        let stored = serde_json::json!({
            "schedule": "@daily", "includeClusterResources": "true",
            "etcd": {"endpoints": ["https://e:2379"], "type": "keys-json"}
        });
        let s: BackupScheduleSpec = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(s.filters.include_cluster_resources, crate::model::ClusterResources::Always);
        assert_eq!(s.etcd.as_ref().unwrap().r#type, EtcdScheduleType::KeysJson);
        assert_eq!(
            legacy_spellings_patch(&stored).unwrap(),
            serde_json::json!({"spec": {"includeClusterResources": "Always", "etcd": {"type": "KeysJson"}}})
        );
        let written = serde_json::to_value(&s).unwrap();
        assert_eq!(written["includeClusterResources"], "Always");
        assert_eq!(legacy_spellings_patch(&written), None, "nothing to rewrite in the new spellings");
        assert_eq!(legacy_spellings_patch(&serde_json::json!({"schedule": "@daily"})), None);
        assert_eq!(
            legacy_spellings_patch(&serde_json::json!({"includeClusterResources": "auto"})).unwrap(),
            serde_json::json!({"spec": {"includeClusterResources": "Auto"}})
        );
        assert_eq!("keys-json".parse::<EtcdScheduleType>().unwrap(), EtcdScheduleType::KeysJson);
        assert_eq!("keysjson".parse::<EtcdScheduleType>().unwrap(), EtcdScheduleType::KeysJson);
        assert!("full".parse::<EtcdScheduleType>().unwrap_err().contains("Snapshot, Keys or KeysJson"));
    }

    #[test]
    fn schedule_spec_flattens_filters() {
        let s: BackupScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@daily", "includedNamespaces": ["shop"], "ttl": "168h"
        }))
        .unwrap();
        assert_eq!(s.filters.included_namespaces, vec!["shop"]);
        assert_eq!(s.ttl.as_deref(), Some("168h"));
        assert!(!s.paused);
    }
}
