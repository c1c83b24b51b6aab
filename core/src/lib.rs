//! The engine shared by `kubectl-backup` (the plugin) and `backup-webhook` (admission + controllers).
//!
//! Data flows one way; each module does one step:
//! - [`store`] — a location URL -> an object store (S3, GCS, Azure, local directory)
//! - [`collect`] — discovery, filters, parallel paged LIST -> a stream of objects
//! - [`archive`] — objects -> a zstd-compressed tar; a verifying reader
//! - [`contents`] — the catalog: path, SHA-256 and size of every object, streamed beside the archive
//! - [`packs`] — content-addressed packs shared by incremental backups, and their garbage collection
//! - [`backup`] — collect -> archive -> multipart upload -> metadata written last (the commit)
//! - [`catalog`] — list / describe / delete / download committed backups
//! - [`restore`] — verify -> plan -> transform -> apply -> report
//! - [`model`] — the `Backup` / `Restore` documents every command prints and every controller writes

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod collect;
pub mod commit;
pub mod committed;
pub mod contents;
pub mod crd;
pub mod crypto;
pub mod error;
pub mod etcd;
pub mod filter;
pub mod input;
pub mod install;
pub mod interrupt;
pub mod kube_client;
pub mod locations;
pub mod model;
pub mod packs;
pub mod pki;
pub mod progress;
pub mod requests;
pub mod restore;
pub mod retention;
pub mod runlog;
pub mod schedule;
pub mod selector;
pub mod store;
pub mod volume;

pub use error::{Error, Result};

/// The API group of everything this project defines (labels, annotations, documents, CRDs).
pub const GROUP: &str = "kubectl-backup.dev";
/// `apiVersion` of the documents we print and store.
pub const API_VERSION: &str = "kubectl-backup.dev/v1alpha1";
/// Namespaces (workspaces) with this label set to `"true"` are skipped by backups and auto-restore.
pub const EPHEMERAL_LABEL: &str = "kubectl-backup.dev/ephemeral";
/// Asks for a new workspace to be ephemeral (set on a Namespace or workspace resource at creation).
pub const EPHEMERAL_ANNOTATION: &str = "kubectl-backup.dev/ephemeral";
/// The backup a new workspace is restored from; set by the webhook, acted on by its restore worker.
pub const RESTORE_FROM_ANNOTATION: &str = "kubectl-backup.dev/restore-from";
/// The restore worker's progress on a workspace: InProgress, then Completed, PartiallyFailed or Failed.
pub const RESTORE_STATUS_ANNOTATION: &str = "kubectl-backup.dev/restore-status";
/// Every restored object carries this label with the backup's name.
pub const RESTORED_FROM_LABEL: &str = "kubectl-backup.dev/restored-from";
/// Field manager used for every write we make to the API server.
pub const FIELD_MANAGER: &str = "kubectl-backup";
