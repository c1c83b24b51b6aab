//! The etcd documents: `EtcdBackup` (printed, stored as the commit), `EtcdBackupList`, `EtcdRestore`
//! (the report of a restore), and `EtcdSource` (where a backup reads from; a `BackupSchedule` names one).

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{ObjectMeta, Phase};
use crate::{API_VERSION, Error, Result};

/// Version of the etcd on-store layout (`etcd/<name>/metadata.json` + one data file).
pub const FORMAT_VERSION: u32 = 1;

/// What an etcd backup holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EtcdBackupType {
    /// The member's snapshot stream (`snapshot.db` with its SHA-256 trailer): restore it with
    /// `etcdutl snapshot restore` (or `etcdctl snapshot restore` on etcd 3.4).
    #[default]
    Snapshot,
    /// A zip with one entry per key (the key path-escaped), the value as it is.
    Keys,
    /// One JSON document of every key and value (base64 where not UTF-8), with the revision.
    KeysJson,
}

impl EtcdBackupType {
    pub const ALL: [EtcdBackupType; 3] = [Self::Snapshot, Self::Keys, Self::KeysJson];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Keys => "keys",
            Self::KeysJson => "keys-json",
        }
    }

    /// Stem and extension of the data file: `snapshot-<run>.db`, `keys-<run>.zip`, `keys-<run>.json`.
    pub fn file_name(self, run: &str) -> String {
        match self {
            Self::Snapshot => format!("snapshot-{run}.db"),
            Self::Keys => format!("keys-{run}.zip"),
            Self::KeysJson => format!("keys-{run}.json"),
        }
    }

    /// The name `download` writes to when no file is given.
    pub fn download_name(self, backup: &str) -> String {
        match self {
            Self::Snapshot => format!("{backup}-snapshot.db"),
            Self::Keys => format!("{backup}-keys.zip"),
            Self::KeysJson => format!("{backup}-keys.json"),
        }
    }

    /// The format named in `status.format`.
    pub fn format(self) -> &'static str {
        match self {
            Self::Snapshot => "etcd-snapshot",
            Self::Keys => "zip",
            Self::KeysJson => "json",
        }
    }
}

impl std::fmt::Display for EtcdBackupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EtcdBackupType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s.trim()).ok_or_else(|| {
            Error::invalid(
                "--type",
                s,
                "expected snapshot (the etcd snapshot stream), keys (a zip of one file per key) or keys-json (one JSON document)",
            )
        })
    }
}

/// Where an etcd backup reads from: endpoints, client TLS files and, for keys backups, a key prefix.
/// A `BackupSchedule` names one to take etcd backups on a cron.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSource {
    /// Client URLs, e.g. `https://10.0.0.1:2379`. The member with the highest revision is used.
    pub endpoints: Vec<String>,
    /// PEM file of the CA that signed the members' serving certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (with `keyFile`), for members with `--client-cert-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Only keys starting with this (keys and keys-json backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupSpec {
    #[serde(rename = "type")]
    pub kind: EtcdBackupType,
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// How long the backup is kept, e.g. `720h`; `0s` keeps it forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Where the backup is stored (URL or location name), as the user gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The schedule that made this backup, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupStatus {
    pub phase: Phase,
    /// The store revision the backup holds. For keys backups, every key is read at exactly this
    /// revision; for a snapshot, the member's revision when the snapshot started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The member that served the backup (hex, as `etcdctl member list` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_name: Option<String>,
    /// The endpoint the backup was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_version: Option<String>,
    /// Keys in keys and keys-json backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// The data file, relative to the backup's directory.
    #[serde(default)]
    pub file: String,
    /// `etcd-snapshot`, `zip` or `json`.
    #[serde(default)]
    pub format: String,
    /// Bytes stored.
    #[serde(default)]
    pub size: u64,
    /// SHA-256 of the stored bytes, hex.
    #[serde(default)]
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackup {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: EtcdBackupSpec,
    #[serde(default)]
    pub status: EtcdBackupStatus,
}

impl EtcdBackup {
    pub fn new(name: &str, spec: EtcdBackupSpec) -> Self {
        EtcdBackup {
            api_version: API_VERSION.into(),
            kind: "EtcdBackup".into(),
            metadata: ObjectMeta { name: name.into(), ..Default::default() },
            spec,
            status: EtcdBackupStatus::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.status.expiration.is_some_and(|e| e <= now)
    }
}

impl crate::model::Listed for EtcdBackup {
    const LIST_KIND: &'static str = "EtcdBackupList";
}

pub type EtcdBackupList = crate::model::List<EtcdBackup>;

/// The stored commit document, `etcd/<name>/metadata.json`. Written last: an etcd backup without
/// it does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMetadata {
    pub format_version: u32,
    pub backup: EtcdBackup,
}

/// Where a restore writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreSpec {
    pub backup_name: String,
    #[serde(rename = "type")]
    pub kind: EtcdBackupType,
    /// Snapshot restores: the directory `snapshot.db` is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Keys restores: the etcd written to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreCounts {
    pub added: u64,
    pub changed: u64,
    pub unchanged: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreStatus {
    pub phase: Phase,
    /// The revision the backup was taken at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Snapshot restores: the file written, verified (size, SHA-256 and the snapshot's own trailer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Keys restores: what was (or, in a dry run, would be) written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<EtcdRestoreCounts>,
    /// Keys that did not exist (people-readable; `\xNN` for bytes that are not printable UTF-8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Keys whose value differed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Timestamp>,
}

/// The report of `kubectl backup etcd restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestore {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: EtcdRestoreSpec,
    #[serde(default)]
    pub status: EtcdRestoreStatus,
}

impl EtcdRestore {
    pub fn new(spec: EtcdRestoreSpec) -> Self {
        EtcdRestore {
            api_version: API_VERSION.into(),
            kind: "EtcdRestore".into(),
            metadata: ObjectMeta { name: spec.backup_name.clone(), ..Default::default() },
            spec,
            status: EtcdRestoreStatus::default(),
        }
    }
}

/// A member id or cluster id as etcdctl prints it: lower-case hex.
pub fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_backup_json_has_the_documented_shape() {
        let mut b = EtcdBackup::new(
            "nightly",
            EtcdBackupSpec {
                kind: EtcdBackupType::KeysJson,
                endpoints: vec!["https://10.0.0.1:2379".into()],
                prefix: Some("/registry/".into()),
                ttl: Some("720h".into()),
                ..Default::default()
            },
        );
        b.status.phase = Phase::Completed;
        b.status.revision = Some(42);
        b.status.member_id = Some(hex_id(0x8e9e05c52164694d));
        b.status.cluster_id = Some(hex_id(0xcdf818194e3a8c32));
        b.status.size = 10;
        b.status.sha256 = "00".repeat(32);
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["apiVersion"], "kubectl-backup.dev/v1alpha1");
        assert_eq!(v["kind"], "EtcdBackup");
        assert_eq!(v["metadata"]["name"], "nightly");
        assert_eq!(v["spec"]["type"], "keys-json");
        assert_eq!(v["spec"]["endpoints"][0], "https://10.0.0.1:2379");
        assert_eq!(v["spec"]["prefix"], "/registry/");
        assert_eq!(v["status"]["phase"], "Completed");
        assert_eq!(v["status"]["revision"], 42);
        assert_eq!(v["status"]["memberId"], "8e9e05c52164694d");
        assert_eq!(v["status"]["clusterId"], "cdf818194e3a8c32");
        let back: EtcdBackup = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn types_parse_and_name_their_files() {
        for t in EtcdBackupType::ALL {
            assert_eq!(t.as_str().parse::<EtcdBackupType>().unwrap(), t);
        }
        assert_eq!(EtcdBackupType::Keys.file_name("1-a"), "keys-1-a.zip");
        let err = "full".parse::<EtcdBackupType>().unwrap_err().to_string();
        assert!(err.contains("--type") && err.contains("keys-json"), "{err}");
    }

    #[test]
    fn source_is_camel_case() {
        let s: EtcdSource = serde_json::from_value(serde_json::json!({
            "endpoints": ["https://e:2379"], "caFile": "/ca", "certFile": "/c", "keyFile": "/k", "prefix": "/registry/"
        }))
        .unwrap();
        assert_eq!(s.ca_file.as_deref(), Some(std::path::Path::new("/ca")));
        assert_eq!(s.key_file.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(s.prefix.as_deref(), Some("/registry/"));
    }
}
