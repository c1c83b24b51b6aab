//! Declarative backups and restores: `Backup` and `Restore` resources that the in-cluster
//! controller acts on once each, so GitOps tools (and `kubectl backup create|restore --in-cluster`)
//! can ask for one. Their status is the run's progress and outcome; Events mark each step.
//!
//! The Rust types are `BackupRequest` and `RestoreRequest` (the engine's own `Backup` and `Restore`
//! are the documents stored in the location); the kinds are `Backup` and `Restore`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::EtcdScheduleSource;
use crate::model::{ExistingPolicy, Filters};

/// A backup taken once by the in-cluster controller. In a namespace other than the install
/// namespace it backs up only that namespace, to a BackupLocation (never a URL).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubectl-backup.dev",
    version = "v1alpha1",
    kind = "Backup",
    root = "BackupRequest",
    doc = "A backup the in-cluster controller takes once: create one to ask for a backup (kubectl backup create --in-cluster, or GitOps).",
    namespaced,
    status = "RequestStatus",
    shortname = "kbb",
    category = "backup-all",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Items","type":"integer","jsonPath":".status.progress.itemsDone"}"#,
    printcolumn = r#"{"name":"Location","type":"string","jsonPath":".status.location"}"#,
    printcolumn = r#"{"name":"Requested By","type":"string","priority":1,"jsonPath":".status.requestedBy"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequestSpec {
    /// What to back up (the filters of `kubectl backup create`). Outside the install namespace:
    /// only the resource's own namespace.
    #[serde(default, flatten)]
    pub filters: Filters,
    /// How long the backup is kept, e.g. 720h (the default); 0s keeps it forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// The BackupLocation to write to (default: the default location). In the install namespace
    /// a URL is accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Back up an etcd instead of Kubernetes objects (install namespace only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdScheduleSource>,
    /// Back up the data of the PersistentVolumeClaims in scope too (default: the BackupLocation's
    /// includeVolumes). The mover Pods are created as the person who created this resource: their
    /// RBAC and Pod Security decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_volumes: Option<bool>,
}

/// A restore run once by the in-cluster controller, with the rights of the person who created
/// this resource (impersonation), never the controller's own. In a namespace other than the
/// install namespace it restores only that namespace's objects, into that namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubectl-backup.dev",
    version = "v1alpha1",
    kind = "Restore",
    root = "RestoreRequest",
    doc = "A restore the in-cluster controller runs once, as the person who created this resource (kubectl backup restore --in-cluster, or GitOps).",
    namespaced,
    status = "RequestStatus",
    shortname = "kbr",
    category = "backup-all",
    printcolumn = r#"{"name":"Backup","type":"string","jsonPath":".spec.backupName"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Done","type":"integer","jsonPath":".status.progress.itemsDone"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.progress.totalItems"}"#,
    printcolumn = r#"{"name":"Requested By","type":"string","priority":1,"jsonPath":".status.requestedBy"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequestSpec {
    /// The backup to restore.
    pub backup_name: String,
    /// What to restore (the filters of `kubectl backup restore`). Outside the install namespace:
    /// only the resource's own namespace.
    #[serde(default, flatten)]
    pub filters: Filters,
    /// Restore namespace A into namespace B (install namespace only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_mapping: BTreeMap<String, String>,
    /// What to do with objects that already exist: Skip (the default: leave them and report them)
    /// or Update (bring them back to the backed-up state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_resource_policy: Option<ExistingPolicy>,
    /// The BackupLocation to read from (default: the default location). In the install namespace
    /// a URL is accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Where a Backup or Restore request is: the run's progress and outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// InProgress, then Completed, PartiallyFailed or Failed. A request runs once: a finished one
    /// is never run again (create another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The user the API server authenticated when this resource was created (a restore acts as
    /// them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The location the backup was written to or read from (credentials redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub start_time: Option<String>,
    /// When the run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completion_time: Option<String>,
    /// Objects done so far, of how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RequestProgress>,
    /// A restore: the name its record and log have in the location
    /// (`kubectl backup restore describe NAME`, `kubectl backup logs restore/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// A one-line outcome: counts, or why the request failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The run's errors (redacted; at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The run's warnings (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `Ready`: True once the run completed, False while it runs or when it failed or was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// Objects done so far, of how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestProgress {
    /// Objects planned (0 while not known yet).
    pub total_items: u64,
    /// Objects backed up or restored.
    pub items_done: u64,
}

/// Phases after which a request is never acted on again.
pub const FINISHED: [&str; 3] = ["Completed", "PartiallyFailed", "Failed"];

impl RequestStatus {
    pub fn finished(&self) -> bool {
        self.phase.as_deref().is_some_and(|p| FINISHED.contains(&p))
    }
}

/// The resource name (`<plural>.<group>`) the webhook's mark on a request names.
pub const BACKUP_RESOURCE: &str = "backups.kubectl-backup.dev";
pub const RESTORE_RESOURCE: &str = "restores.kubectl-backup.dev";
