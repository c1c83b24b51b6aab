//! The etcd documents: `EtcdBackup` (printed, stored as the commit), `EtcdBackupList`, `EtcdRestore`
//! (the report of a restore), and `EtcdSource` (where a backup reads from; a `BackupSchedule` names one).

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{Envelope, Phase, Spec, StoredFile, Timing};
use crate::{Error, Result};

/// Version of the etcd on-store layout (`etcd/<name>/metadata.json` + one data file).
/// 2: the data file is described in `status.archive`, as for object backups (1 kept it flat in
/// `status`; still read).
pub const FORMAT_VERSION: u32 = 2;

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
    /// The data file (format `etcd-snapshot`, `zip` or `json`), as for object backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<StoredFile>,
    #[serde(flatten)]
    pub timing: Timing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub type EtcdBackup = Envelope<EtcdBackupSpec, EtcdBackupStatus>;

impl Spec for EtcdBackupSpec {
    const KIND: &'static str = "EtcdBackup";
    const LIST_KIND: &'static str = "EtcdBackupList";
}

impl EtcdBackup {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.status.expiration.is_some_and(|e| e <= now)
    }
}

pub type EtcdBackupList = crate::model::List<EtcdBackup>;

/// The stored commit document, `etcd/<name>/metadata.json`. Written last: an etcd backup without
/// it does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "serde_json::Value")]
pub struct EtcdMetadata {
    pub format_version: u32,
    pub backup: EtcdBackup,
}

impl TryFrom<serde_json::Value> for EtcdMetadata {
    type Error = serde_json::Error;

    /// Reads format 2 and format 1, which kept the data file's `file`, `format`, `size` and
    /// `sha256` flat in `status` (format 2 nests them in `status.archive`, as object backups do).
    fn try_from(mut v: serde_json::Value) -> std::result::Result<Self, serde_json::Error> {
        if v["formatVersion"] == 1
            && let Some(status) = v.pointer_mut("/backup/status").and_then(|s| s.as_object_mut())
            && !status.contains_key("archive")
        {
            let mut archive = serde_json::Map::new();
            for (old, new) in [("file", "key"), ("format", "format"), ("size", "size"), ("sha256", "sha256")] {
                if let Some(value) = status.remove(old) {
                    archive.insert(new.into(), value);
                }
            }
            status.insert("archive".into(), archive.into());
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Stored {
            format_version: u32,
            backup: EtcdBackup,
        }
        let Stored { format_version, backup } = serde_json::from_value(v)?;
        Ok(EtcdMetadata { format_version, backup })
    }
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
    #[serde(flatten)]
    pub timing: Timing,
}

/// The report of `kubectl backup etcd restore`.
pub type EtcdRestore = Envelope<EtcdRestoreSpec, EtcdRestoreStatus>;

impl Spec for EtcdRestoreSpec {
    const KIND: &'static str = "EtcdRestore";
    const LIST_KIND: &'static str = "EtcdRestoreList";
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
        b.status.archive =
            Some(StoredFile { key: "keys-1.json".into(), size: 10, sha256: "00".repeat(32), ..Default::default() });
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
    fn format_1_metadata_is_still_read() {
        let v1 = serde_json::json!({
            "formatVersion": 1,
            "backup": {
                "apiVersion": "kubectl-backup.dev/v1alpha1", "kind": "EtcdBackup", "metadata": {"name": "old"},
                "spec": {"type": "snapshot", "endpoints": ["https://e:2379"]},
                "status": {"phase": "Completed", "file": "snapshot-1.db", "format": "etcd-snapshot", "size": 7,
                           "sha256": "ab", "startTimestamp": "2024-01-01T00:00:00Z"}
            }
        });
        let m: EtcdMetadata = serde_json::from_value(v1).unwrap();
        let a = m.backup.status.archive.clone().unwrap();
        assert_eq!(
            (a.key.as_str(), a.format.as_str(), a.size, a.sha256.as_str()),
            ("snapshot-1.db", "etcd-snapshot", 7, "ab")
        );
        assert_eq!(m.backup.status.timing.start_timestamp, Some("2024-01-01T00:00:00Z".parse().unwrap()));
        // Format 2 is written nested, as object backups are.
        let v2 = serde_json::to_value(EtcdMetadata { format_version: FORMAT_VERSION, backup: m.backup }).unwrap();
        assert_eq!(v2["backup"]["status"]["archive"]["key"], "snapshot-1.db");
        assert!(v2["backup"]["status"].get("file").is_none());
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
