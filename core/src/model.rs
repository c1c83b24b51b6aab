//! The documents this project prints (`-o json|yaml`) and stores. Controllers write the same types.
//!
//! Shapes follow Velero's `Backup`/`Restore` where they overlap, so people who know Velero can read them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::API_VERSION;

/// Version of the on-store layout. Readers refuse versions newer than theirs and read older ones.
/// 1: `metadata.json` holds every entry's digest (`objects`) beside the archive.
/// 2: the digests are in a contents file beside the archive ([`crate::contents`]), or, for an
///    incremental backup, in contents chunks stored with the object bodies in the location's packs.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The Kubernetes shape of every document this project prints and stores: `apiVersion`, `kind`,
/// `metadata`, `spec` and `status`. [`Backup`], [`Restore`] and the etcd documents are this with
/// their own spec and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de>, T: Deserialize<'de> + Default"))]
pub struct Envelope<S, T> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default)]
    pub status: T,
}

/// The spec of a kind of document names the kind and the kind of its list.
pub trait Spec {
    const KIND: &'static str;
    const LIST_KIND: &'static str;
}

impl<S: Spec, T: Default> Envelope<S, T> {
    pub fn new(name: &str, spec: S) -> Self {
        Envelope {
            api_version: API_VERSION.into(),
            kind: S::KIND.into(),
            metadata: ObjectMeta { name: name.into(), ..Default::default() },
            spec,
            status: T::default(),
        }
    }
}

impl<S, T> Envelope<S, T> {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
}

/// When a backup or restore ran; part of every status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Timestamp>,
}

/// Which cluster-scoped objects are included: Auto (all of them when all namespaces are
/// included, else only those the included namespaces need: the CRDs of their custom resources, the
/// PersistentVolumes bound to their claims), Always (every cluster-scoped object the resource
/// filters allow) or Never (none).
///
/// Read in the spellings of earlier versions too (`auto`, `true`, `false`): BackupSchedules stored
/// before v1alpha1 took these values, and backup documents in storage keep them
/// ([`ClusterResources::STORED_SPELLINGS`], docs/backup-format.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ClusterResources {
    #[default]
    #[serde(alias = "auto")]
    Auto,
    #[serde(alias = "true")]
    Always,
    #[serde(alias = "false")]
    Never,
}

impl ClusterResources {
    /// The old spelling of each value (`auto`, `true`, `false`): what backup documents in storage
    /// hold, so that every version of kubectl-backup reads them.
    pub const STORED_SPELLINGS: [(ClusterResources, &'static str); 3] =
        [(Self::Auto, "auto"), (Self::Always, "true"), (Self::Never, "false")];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "Auto",
            Self::Always => "Always",
            Self::Never => "Never",
        }
    }

    /// The spelling stored in backup documents.
    pub fn stored_spelling(self) -> &'static str {
        Self::STORED_SPELLINGS.iter().find(|(v, _)| *v == self).map_or("auto", |(_, s)| s)
    }
}

impl std::str::FromStr for ClusterResources {
    type Err = String;
    /// Auto, Always or Never in any case, or the old auto, true and false.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "always" | "true" => Ok(Self::Always),
            "never" | "false" => Ok(Self::Never),
            _ => Err(format!("expected Auto, Always or Never, got {s:?}")),
        }
    }
}

impl std::fmt::Display for ClusterResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rewrites `includeClusterResources` of a Backup document's `spec` in the spelling stored in
/// backup documents (`auto`, `true`, `false`), which every version of kubectl-backup reads: a
/// backup written by this version stays readable by older ones (docs/backup-format.md).
pub fn to_stored_spellings(spec: Option<&mut serde_json::Value>) {
    let Some(field) = spec.and_then(|s| s.get_mut("includeClusterResources")) else { return };
    if let Ok(v) = serde_json::from_value::<ClusterResources>(field.clone()) {
        *field = v.stored_spelling().into();
    }
}

/// What to back up or restore. Empty lists mean "no filter".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    /// Namespaces to include (globs allowed, e.g. team-*); empty or "*": all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    /// Namespaces to leave out (globs allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    /// Resources to include: plural names with their group (deployments.apps), short names,
    /// kinds or globs; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    /// Resources to leave out, named as in includedResources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    /// Only objects with these labels, a Kubernetes label selector such as app=web,tier!=db.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Which cluster-scoped objects are included: Auto (default; all of them when all
    /// namespaces are included, else only those the included namespaces need: the CRDs of their
    /// custom resources, the PersistentVolumes bound to their claims), Always or Never.
    #[serde(default)]
    pub include_cluster_resources: ClusterResources,
}

impl Filters {
    /// True when no namespace filter narrows the set (all namespaces, possibly minus exclusions).
    pub fn all_namespaces(&self) -> bool {
        self.included_namespaces.is_empty() || self.included_namespaces.iter().any(|n| n == "*")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    #[serde(flatten)]
    pub filters: Filters,
    /// How long the backup is kept, e.g. `720h`; `0s` keeps it forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Where the backup is stored (URL or location name), as the user gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_location: Option<String>,
    /// The schedule that made this backup, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Store object bodies once per location, in packs shared by every incremental backup there
    /// (see [`crate::packs`]): a backup uploads only what no earlier one stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// Back up the data of the PersistentVolumeClaims in scope too (`--include-volumes`): a mover
    /// Pod per claim streams its files to the location ([`crate::volume`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_volumes: bool,
    /// How volume data is backed up: files copied by mover Pods (the default) or CSI snapshots.
    #[serde(default, skip_serializing_if = "VolumeMethod::is_default")]
    pub volume_method: VolumeMethod,
    /// How the mover Pods run (not stored: how this run reads volumes, not what it backs up).
    #[serde(skip)]
    pub mover: crate::volume::MoverSettings,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    InProgress,
    Completed,
    PartiallyFailed,
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::InProgress => "InProgress",
            Phase::Completed => "Completed",
            Phase::PartiallyFailed => "PartiallyFailed",
            Phase::Failed => "Failed",
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    pub total_items: u64,
    pub items_backed_up: u64,
    /// While a run moves volume data: the claim being moved and its bytes done of the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_data: Option<VolumeProgress>,
}

/// Bytes of one claim's data moved so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeProgress {
    /// `namespace/claim`.
    pub claim: String,
    pub bytes_done: u64,
    /// About: the size of the claim's files as the mover measured them before reading them.
    pub bytes_total: u64,
}

/// The cluster a backup came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceCluster {
    pub server: String,
    #[serde(default)]
    pub version: String,
}

pub use crate::crypto::Encryption;

/// The one data file of a committed backup of any kind (`status.archive`): the object archive, or an
/// etcd snapshot, zip or JSON document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    /// Object key relative to the backup's directory.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// `tar+zstd` for object backups; `etcd-snapshot`, `zip` or `json` for etcd backups.
    pub format: String,
    #[serde(default)]
    pub encryption: Option<Encryption>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    pub phase: Phase,
    #[serde(flatten)]
    pub timing: Timing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Timestamp>,
    #[serde(default)]
    pub progress: BackupProgress,
    /// Objects per resource, keyed `<resource>[.<group>]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, u64>,
    /// Namespaces with at least one object (or the Namespace object itself) in the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster: Option<SourceCluster>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<StoredFile>,
    /// Set for an incremental backup, which has no archive of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalStatus>,
    /// The PersistentVolumeClaims whose data the backup holds (`--include-volumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeData>,
}

/// How a backup holds volume data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeMethod {
    /// The files, copied to the location by mover Pods.
    #[default]
    Fs,
    /// A CSI VolumeSnapshot, kept by the storage system.
    Snapshot,
}

impl VolumeMethod {
    pub fn is_default(&self) -> bool {
        *self == VolumeMethod::Fs
    }
}

impl std::str::FromStr for VolumeMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fs" => Ok(Self::Fs),
            "snapshot" => Ok(Self::Snapshot),
            _ => Err(format!("{s:?} is neither fs nor snapshot")),
        }
    }
}

/// One PersistentVolumeClaim's data in a backup: a tar+zstd stream of its files, stored in parts
/// beside the archive, each part's SHA-256 checked before its bytes are written back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeData {
    pub namespace: String,
    pub claim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The PersistentVolume the claim was bound to: a restore with the data leaves it out and
    /// lets the claim bind (or be provisioned) anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// The claim's capacity when backed up (`status.capacity.storage`), e.g. `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// `tar+zstd`.
    pub format: String,
    /// Bytes stored (all parts).
    pub size: u64,
    /// SHA-256 of the whole stored stream, hex.
    pub sha256: String,
    /// The stream's parts in order; keys relative to the backup's directory.
    pub parts: Vec<StoredFile>,
    /// What the mover found in the volume.
    pub tree: crate::volume::tree::TreeStats,
    /// How long the mover Pod ran, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// A CSI snapshot's (`--volume-method snapshot`, format `csi-snapshot`, no parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::volume::snapshot::SnapshotRef>,
    /// The hooks run in the Pods using the claim, before and after it was read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::volume::hooks::HookRun>,
    /// In an encrypted location: the key the parts are encrypted to, itself encrypted like the
    /// archive (envelope encryption). A restore gives its mover this volume's key only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<VolumeKey>,
}

/// A volume's own age identity, sealed to the location's recipients (or passphrase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeKey {
    /// Who can open it: the archive's recipients.
    pub encryption: crate::crypto::Encryption,
    /// The age file of the identity, base64.
    pub sealed: String,
}

pub type Backup = Envelope<BackupSpec, BackupStatus>;

impl Spec for BackupSpec {
    const KIND: &'static str = "Backup";
    const LIST_KIND: &'static str = "BackupList";
}

impl Backup {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.status.expiration.is_some_and(|e| e <= now)
    }

    /// How the stored data is encrypted: the archive's, or an incremental backup's packs'.
    pub fn encryption(&self) -> Option<&Encryption> {
        match (&self.status.archive, &self.status.incremental) {
            (Some(a), _) => a.encryption.as_ref(),
            (None, Some(i)) => i.encryption.as_ref(),
            (None, None) => None,
        }
    }

    /// Bytes this backup's run stored: its archive, or what an incremental run uploaded.
    pub fn bytes_stored(&self) -> u64 {
        match (&self.status.archive, &self.status.incremental) {
            (Some(a), _) => a.size,
            (None, Some(i)) => i.bytes_uploaded,
            (None, None) => 0,
        }
    }
}

/// The `-o json|yaml` form of a `list` command, for every kind of document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    pub api_version: String,
    pub kind: String,
    pub items: Vec<T>,
}

impl<S: Spec, T> List<Envelope<S, T>> {
    pub fn new(items: Vec<Envelope<S, T>>) -> Self {
        List { api_version: API_VERSION.into(), kind: S::LIST_KIND.into(), items }
    }
}

pub type BackupList = List<Backup>;

/// The stored commit document, `backups/<name>/metadata.json`. Written last: a backup without it
/// does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupMetadata {
    pub format_version: u32,
    pub backup: Backup,
    /// Format 1 only: SHA-256 (hex) of every archive entry, keyed by entry path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, String>,
    /// Format 2: where the backup's contents (path, SHA-256 and size of every object) are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<ContentsRef>,
    /// An incremental backup: the packs of the location holding its object bodies and contents
    /// chunks. Garbage collection keeps every pack a committed backup names here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<String>,
}

/// Where a format-2 backup's contents are: a file of its own (plain), or chunks in packs (incremental).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentsRef {
    /// Objects listed.
    pub entries: u64,
    /// A plain backup's contents file, beside its archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<StoredFile>,
    /// An incremental backup's contents chunks (each a blob named by its SHA-256), in order,
    /// listed here (the first incremental backups) or in the blob `list` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// An incremental backup: the blob listing its contents chunks' SHA-256, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// An incremental backup: blobs of changes to apply, in order, to the contents the chunks
    /// hold (each line a contents line, or `{"path": ..., "removed": true}`). A backup of a
    /// workspace that changed little stores its changes since the previous backup of the same
    /// scope, not a new list of every object ([`crate::packs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<String>,
    /// An incremental backup: the `apiVersion` each resource type it holds objects of was listed
    /// at (a type without objects has nothing for a later backup to leave unread). A backup that
    /// continues it leaves an object unread only when its type is listed at the same version
    /// (a custom resource's preferred version can change without any object changing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
}

/// What an incremental backup stored and what it found stored already.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncrementalStatus {
    /// Bytes this run uploaded: new packs, their indexes and the metadata document.
    pub bytes_uploaded: u64,
    /// Object bodies and contents chunks this run stored.
    pub objects_stored: u64,
    /// Object bodies and contents chunks already in the location, referenced again.
    pub objects_reused: u64,
    /// Objects not read at all: the server reported the `resourceVersion` the previous backup of
    /// the same scope recorded for them (their bodies are among the reused).
    #[serde(default)]
    pub objects_not_read: u64,
    /// LISTs the run did not make (one per resource type and namespace): the in-cluster
    /// controller's watch of the type saw every change since the previous backup began, and only
    /// the objects it saw change were read ([`crate::collect::Watched`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lists_skipped: u64,
    /// LISTs the run did not make because the in-cluster controller's watch of the type held no
    /// object of it in the namespace ([`crate::collect::Watched::empty`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lists_empty: u64,
    pub packs_written: u64,
    /// Packs the backup references in all.
    pub packs: u64,
    /// How the packs this backup references are encrypted (the run's recipients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// The part of [`BackupMetadata`] listing needs; skips the per-object digests without allocating them.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupMetadataHead {
    pub format_version: u32,
    pub backup: Backup,
}

// ---------------------------------------------------------------------------------------------
// Restore

/// What to do with an object that already exists in the target cluster.
/// Written CamelCase (`Skip`, `Update`) as every enum of the CRDs; the lower-case spellings of
/// the first restore records are read too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ExistingPolicy {
    /// Leave the live object untouched and report it.
    #[default]
    #[serde(alias = "skip")]
    Skip,
    /// Bring the live object back to the backed-up state (server-side apply, forced).
    #[serde(alias = "update")]
    Update,
}

impl std::str::FromStr for ExistingPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" | "none" => Ok(Self::Skip),
            "update" => Ok(Self::Update),
            other => Err(format!("expected skip or update, got {other:?}")),
        }
    }
}

impl std::fmt::Display for ExistingPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Skip => "skip",
            Self::Update => "update",
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    pub backup_name: String,
    #[serde(flatten)]
    pub filters: Filters,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_mapping: BTreeMap<String, String>,
    #[serde(default)]
    pub existing_resource_policy: ExistingPolicy,
    #[serde(default)]
    pub preserve_node_ports: bool,
    #[serde(default)]
    pub dry_run: bool,
    /// Restore the objects only, not the data of the volumes the backup holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_volume_data: bool,
    /// `--storage-class-mapping old:new`: the StorageClass of restored claims and volumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_class_mapping: BTreeMap<String, String>,
    /// How the mover Pods run (not stored).
    #[serde(skip)]
    pub mover: crate::volume::MoverSettings,
}

/// What happened (or, in a dry run, would happen) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ItemAction {
    Created,
    Updated,
    /// Exists and `--existing skip`.
    SkippedExists,
    /// Not restored by design (managed by a restored owner, filtered, ...).
    SkippedPolicy,
    Failed,
    /// Dry run: would be created.
    WouldCreate,
    /// Dry run: exists and differs; would be updated.
    WouldUpdate,
    /// Exists and equals the backed-up state: nothing to do.
    Unchanged,
}

impl std::fmt::Display for ItemAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::SkippedExists => "skipped (exists)",
            Self::SkippedPolicy => "skipped (policy)",
            Self::Failed => "failed",
            Self::WouldCreate => "would create",
            Self::WouldUpdate => "would update",
            Self::Unchanged => "unchanged",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreItem {
    /// `<resource>[.<group>]`
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub action: ItemAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For objects that exist and differ: the changed fields as a JSON patch from live to backed-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<serde_json::Value>,
}

impl RestoreItem {
    /// "secrets credentials: <why>", for the reports of what was not restored.
    pub fn failure(&self) -> String {
        format!("{} {}: {}", self.resource, self.name, self.reason.as_deref().unwrap_or("failed"))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    pub total_items: u64,
    pub items_restored: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreCounts {
    pub created: u64,
    pub updated: u64,
    pub skipped_exists: u64,
    pub skipped_policy: u64,
    pub failed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub would_create: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub would_update: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RestoreCounts {
    /// One line for Events, statuses and logs: "created 3, updated 0, ...".
    pub fn summary(&self) -> String {
        format!(
            "created {}, updated {}, unchanged {}, skipped (exists) {}, skipped (policy) {}, failed {}",
            self.created, self.updated, self.unchanged, self.skipped_exists, self.skipped_policy, self.failed
        )
    }

    pub fn add(&mut self, action: ItemAction) {
        let slot = match action {
            ItemAction::Created => &mut self.created,
            ItemAction::Updated => &mut self.updated,
            ItemAction::SkippedExists => &mut self.skipped_exists,
            ItemAction::SkippedPolicy => &mut self.skipped_policy,
            ItemAction::Failed => &mut self.failed,
            ItemAction::WouldCreate => &mut self.would_create,
            ItemAction::WouldUpdate => &mut self.would_update,
            ItemAction::Unchanged => &mut self.unchanged,
        };
        *slot += 1;
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    pub phase: Phase,
    #[serde(flatten)]
    pub timing: Timing,
    pub progress: RestoreProgress,
    pub counts: RestoreCounts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<RestoreItem>,
}

pub type Restore = Envelope<RestoreSpec, RestoreStatus>;

impl Spec for RestoreSpec {
    const KIND: &'static str = "Restore";
    const LIST_KIND: &'static str = "RestoreList";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_json_has_the_documented_shape() {
        let mut b = Backup::new(
            "nightly",
            BackupSpec {
                filters: Filters { included_namespaces: vec!["shop".into()], ..Default::default() },
                ttl: Some("720h".into()),
                ..Default::default()
            },
        );
        b.status.phase = Phase::PartiallyFailed;
        b.status.progress = BackupProgress { total_items: 3, items_backed_up: 2, volume_data: None };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["apiVersion"], "kubectl-backup.dev/v1alpha1");
        assert_eq!(v["kind"], "Backup");
        assert_eq!(v["metadata"]["name"], "nightly");
        assert_eq!(v["spec"]["includedNamespaces"][0], "shop");
        assert_eq!(v["spec"]["includeClusterResources"], "Auto");
        assert_eq!(v["spec"]["ttl"], "720h");
        assert_eq!(v["status"]["phase"], "PartiallyFailed");
        assert_eq!(v["status"]["progress"]["totalItems"], 3);
        assert_eq!(v["status"]["progress"]["itemsBackedUp"], 2);
        let back: Backup = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn metadata_head_skips_object_digests() {
        let meta = BackupMetadata {
            format_version: FORMAT_VERSION,
            backup: Backup::new("a", BackupSpec::default()),
            objects: [("resources/configmaps/namespaces/x/y.json".to_string(), "00".repeat(32))].into(),
            contents: None,
            packs: Vec::new(),
        };
        let text = serde_json::to_string(&meta).unwrap();
        let head: BackupMetadataHead = serde_json::from_str(&text).unwrap();
        assert_eq!(head.backup.name(), "a");
        assert_eq!(head.format_version, FORMAT_VERSION);
    }

    #[test]
    fn cluster_resources_parse_old_and_new_spellings_and_reject_unknown() {
        for (text, want) in [
            ("auto", ClusterResources::Auto),
            ("Auto", ClusterResources::Auto),
            ("Always", ClusterResources::Always),
            ("always", ClusterResources::Always),
            ("true", ClusterResources::Always),
            ("Never", ClusterResources::Never),
            ("false", ClusterResources::Never),
        ] {
            assert_eq!(text.parse::<ClusterResources>().unwrap(), want, "{text}");
        }
        assert!("yes".parse::<ClusterResources>().unwrap_err().contains("Auto, Always or Never"));
    }

    #[test]
    fn cluster_resources_serialize_camel_case_and_read_the_old_spellings() {
        assert_eq!(serde_json::to_value(ClusterResources::Always).unwrap(), "Always");
        for (old, new) in [("auto", "Auto"), ("true", "Always"), ("false", "Never")] {
            let a: ClusterResources = serde_json::from_value(old.into()).unwrap();
            let b: ClusterResources = serde_json::from_value(new.into()).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.stored_spelling(), old);
        }
        assert!(serde_json::from_value::<ClusterResources>("Sometimes".into()).is_err());
    }

    /// A backup document written by an earlier version (includeClusterResources: "true") is read,
    /// and one written now stores the old spelling, which those versions read.
    #[test]
    fn backup_documents_keep_the_spelling_every_version_reads() {
        let old = serde_json::json!({
            "formatVersion": 1,
            "backup": {
                "apiVersion": "kubectl-backup.dev/v1alpha1", "kind": "Backup",
                "metadata": {"name": "old", "creationTimestamp": "2025-01-02T03:04:05Z"},
                "spec": {"includedNamespaces": ["shop"], "includeClusterResources": "true", "ttl": "720h"},
                "status": {"phase": "Completed", "progress": {"totalItems": 2, "itemsBackedUp": 2}}
            },
            "objects": {"resources/configmaps/namespaces/shop/a.json": "0".repeat(64)}
        });
        let read: BackupMetadata = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(read.backup.spec.filters.include_cluster_resources, ClusterResources::Always);
        let mut written = serde_json::to_value(&read).unwrap();
        assert_eq!(written["backup"]["spec"]["includeClusterResources"], "Always");
        to_stored_spellings(written.pointer_mut("/backup/spec"));
        assert_eq!(written, old, "stored as it was read");
        to_stored_spellings(None);
    }
}
