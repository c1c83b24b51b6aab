//! Which store a command or controller uses: a URL, the name of a `BackupLocation` in the install
//! namespace, or — when none is given — `$KUBECTL_BACKUP_LOCATION`, the cluster's default
//! `BackupLocation`, or the embedded local directory, in that order.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::crd::{AccessMode, BackupLocation};
use crate::crypto::{Seal, Unseal};
use crate::error::kube_message;
use crate::input::validate_name;
use crate::store::{LOCATION_ENV, Location, Store, StoreOptions};
use crate::{Error, Result};

/// Where `kubectl backup install` puts the in-cluster component and its BackupLocations.
pub const DEFAULT_INSTALL_NAMESPACE: &str = "kubectl-backup";
/// Overrides the install namespace for the plugin.
pub const INSTALL_NAMESPACE_ENV: &str = "KUBECTL_BACKUP_NAMESPACE";

/// An opened location.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub store: Store,
    /// The BackupLocation it came from, if any.
    pub name: Option<String>,
    pub access: AccessMode,
    /// Backups written here are incremental (the BackupLocation's `incremental`).
    pub incremental: bool,
    /// Backups written here include volume data unless told otherwise (`includeVolumes`).
    pub include_volumes: bool,
}

impl Resolved {
    /// What to print: `name (url)` or the URL.
    pub fn display(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} ({})", self.store.url()),
            None => self.store.url().to_string(),
        }
    }

    pub fn ensure_writable(&self) -> Result<()> {
        if self.access == AccessMode::ReadOnly {
            return Err(Error::Location {
                location: self.display(),
                reason: "the BackupLocation is ReadOnly: backups can be listed and restored, not written or deleted"
                    .into(),
            });
        }
        Ok(())
    }
}

/// True when `text` names a BackupLocation rather than giving a URL.
pub fn is_name(text: &str) -> bool {
    !text.contains("://")
}

/// Resolves `given` (a URL or a BackupLocation name). `client` is needed for names and for the
/// cluster's default location; without one, names are an error and the default falls through.
pub async fn resolve(
    client: Option<&Client>,
    namespace: &str,
    given: Option<&str>,
    options: &StoreOptions,
) -> Result<Resolved> {
    if let Some(text) = given {
        if !is_name(text) {
            return Ok(Resolved {
                store: Store::open_url(text, options)?,
                name: None,
                access: AccessMode::ReadWrite,
                incremental: false,
                include_volumes: false,
            });
        }
        validate_name("location name", text)?;
        let client = client
            .ok_or_else(|| Error::invalid("location", text, "a BackupLocation name needs a cluster connection"))?;
        let api: Api<BackupLocation> = Api::namespaced(client.clone(), namespace);
        let bl = api.get_opt(text).await.map_err(|e| not_readable(text, namespace, &e))?.ok_or_else(|| {
            Error::invalid("location", text, format!("no BackupLocation {text:?} in namespace {namespace:?} (see `kubectl backup location list`), and not a URL"))
        })?;
        return open(client, namespace, &bl, options).await;
    }
    if let Ok(url) = std::env::var(LOCATION_ENV)
        && !url.trim().is_empty()
    {
        return Box::pin(resolve(client, namespace, Some(url.trim()), options)).await;
    }
    if let Some(client) = client
        && let Some(bl) = default_location(client, namespace).await
    {
        return open(client, namespace, &bl, options).await;
    }
    Ok(Resolved {
        store: Store::open_url(&Location::default_url()?, options)?,
        name: None,
        access: AccessMode::ReadWrite,
        incremental: false,
        include_volumes: false,
    })
}

fn not_readable(name: &str, namespace: &str, e: &kube::Error) -> Error {
    Error::invalid(
        "location",
        name,
        format!("cannot read BackupLocation {name:?} in namespace {namespace:?}: {}", kube_message(e)),
    )
}

/// The BackupLocation marked default, if the cluster has one (and answers quickly).
async fn default_location(client: &Client, namespace: &str) -> Option<BackupLocation> {
    let api: Api<BackupLocation> = Api::namespaced(client.clone(), namespace);
    let list = tokio::time::timeout(Duration::from_secs(5), api.list(&ListParams::default())).await.ok()?.ok()?;
    let mut defaults: Vec<BackupLocation> = list.items.into_iter().filter(|b| b.spec.default).collect();
    defaults.sort_by_key(|b| b.name_any());
    defaults.into_iter().next()
}

/// Opens a BackupLocation: its URL and options, and the credentials from its Secret when this
/// identity may read it (otherwise the process environment's credentials are used).
pub async fn open(client: &Client, namespace: &str, bl: &BackupLocation, base: &StoreOptions) -> Result<Resolved> {
    let name = bl.name_any();
    let mut options = base.clone();
    let spec = &bl.spec;
    if spec.endpoint.is_some() {
        options.s3_endpoint = spec.endpoint.clone();
    }
    if spec.region.is_some() {
        options.region = spec.region.clone();
    }
    if spec.path_style.is_some() {
        options.path_style = spec.path_style;
    }
    if let Some(ca) = &spec.ca_bundle {
        options.ca_pem = Some(ca.as_bytes().to_vec());
    }
    if let Some(role) = &spec.assume_role {
        options.assume_role = Some(role.to_options());
    }
    if let Some(secret) = &spec.credentials_secret {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match api.get_opt(secret).await {
            Ok(Some(s)) => {
                for (k, v) in s.data.unwrap_or_default() {
                    if let Ok(text) = String::from_utf8(v.0) {
                        options.credentials.push((k, text));
                    }
                }
            }
            Ok(None) => {
                return Err(Error::Location {
                    location: format!("{name} ({})", spec.url),
                    reason: format!("its credentials Secret {secret:?} does not exist in namespace {namespace:?}"),
                });
            }
            Err(e) => {
                tracing::info!(location = %name, error = %kube_message(&e), "cannot read the location's credentials Secret; using this environment's credentials");
            }
        }
    }
    let store = Store::open_url(&spec.url, &options).map_err(|e| match e {
        Error::Invalid { reason, value, .. } => {
            Error::Location { location: name.clone(), reason: format!("{value}: {reason}") }
        }
        other => other,
    })?;
    let store = match &spec.encryption {
        Some(e) => {
            let seal = if e.recipients.is_empty() { None } else { Some(Seal::recipients(&e.recipients)?) };
            let unseal = match &e.identity_secret {
                Some(secret) => identity_from_secret(client, namespace, &name, secret).await,
                None => Unseal::default(),
            };
            store.with_seal(seal).with_unseal(unseal)
        }
        None => store,
    };
    Ok(Resolved {
        store,
        name: Some(name),
        access: spec.access_mode,
        incremental: spec.incremental,
        include_volumes: spec.include_volumes,
    })
}

/// The key `identity` of the location's identity Secret. Whoever may not read it (most users:
/// they bring their own `--identity`) goes on without it.
async fn identity_from_secret(client: &Client, namespace: &str, location: &str, secret: &str) -> Unseal {
    let mut unseal = Unseal::default();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(secret).await {
        Ok(Some(s)) => {
            let text = s.data.unwrap_or_default().remove(IDENTITY_KEY).and_then(|v| String::from_utf8(v.0).ok());
            let from = format!("Secret {namespace}/{secret}");
            match text.map(|t| unseal.add_identity(&from, t)) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(location, error = %e, "the location's identity Secret holds no usable key")
                }
                None => tracing::warn!(location, secret, "the location's identity Secret has no key {IDENTITY_KEY:?}"),
            }
        }
        Ok(None) => tracing::warn!(location, secret, "the location's identity Secret does not exist"),
        Err(e) => tracing::debug!(location, error = %kube_message(&e), "cannot read the location's identity Secret"),
    }
    unseal
}

/// The key of a location's identity Secret that holds the private key.
pub const IDENTITY_KEY: &str = "identity";

/// What [`create_if_missing`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// A BackupLocation of that name exists; it is left as it is (it may have been edited since).
    Existed,
}

/// Creates BackupLocation `name` in `namespace` with `spec` unless one of that name exists. The
/// in-cluster controller does this at startup from its `--default-location-*` flags, so the install
/// manifests hold no custom resource and apply in one go.
pub async fn create_if_missing(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: crate::crd::BackupLocationSpec,
) -> Result<Ensured> {
    let api: Api<BackupLocation> = Api::namespaced(client.clone(), namespace);
    let context = |what: &str| format!("{what} BackupLocation {name:?} in namespace {namespace:?}");
    if api.get_opt(name).await.map_err(|e| Error::kube(context("reading"), e))?.is_some() {
        return Ok(Ensured::Existed);
    }
    let mut bl = BackupLocation::new(name, spec);
    bl.metadata.namespace = Some(namespace.to_string());
    bl.metadata.labels = Some(
        [("app.kubernetes.io/part-of", "kubectl-backup"), ("app.kubernetes.io/managed-by", "kubectl-backup")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let pp = kube::api::PostParams { dry_run: false, field_manager: Some(crate::FIELD_MANAGER.into()) };
    match api.create(&pp, &bl).await {
        Ok(_) => Ok(Ensured::Created),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Ensured::Existed),
        Err(e) => Err(Error::kube(context("creating"), e)),
    }
}

/// The object a check writes and removes: under the location's root, never a backup's name.
pub const CHECK_OBJECT: &str = ".kubectl-backup-check";

/// The marker a location's root holds: what wrote it and the layout of what is stored under it.
pub const MARKER_OBJECT: &str = "kubectl-backup.json";
/// The layout (`backups/NAME/...`, `etcd/NAME/...`) this build reads and writes.
pub const LAYOUT_VERSION: u64 = 1;
const MARKER_TOOL: &str = "kubectl-backup";

/// Whether a location works: its root can be listed, its marker (if any) names a layout this build
/// understands and, unless it is ReadOnly (which is never written to), an object can be written
/// and removed, and the marker is written when missing. The error says which step failed.
pub async fn check(store: &Store, access: AccessMode) -> Result<()> {
    use object_store::ObjectStoreExt;
    let fail = |what: &str, e: object_store::Error| Error::Location {
        location: store.url().to_string(),
        reason: format!("{what}: {}", crate::store::store_message(&e)),
    };
    store.objects().list_with_delimiter(None).await.map_err(|e| fail("cannot list it", e))?;
    let marker = object_store::path::Path::from(MARKER_OBJECT);
    let found = match store.objects().get(&marker).await {
        Ok(got) => Some(got.bytes().await.map_err(|e| fail("cannot read its marker", e))?),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(fail("cannot read its marker", e)),
    };
    if let Some(bytes) = &found {
        check_marker(store, bytes)?;
    }
    if access == AccessMode::ReadWrite {
        let probe = object_store::path::Path::from(CHECK_OBJECT);
        store
            .objects()
            .put(&probe, bytes::Bytes::from_static(b"ok").into())
            .await
            .map_err(|e| fail("cannot write to it", e))?;
        store.objects().delete(&probe).await.map_err(|e| fail("cannot delete from it", e))?;
        if found.is_none() {
            let body = serde_json::json!({"tool": MARKER_TOOL, "layoutVersion": LAYOUT_VERSION});
            let opts = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
            match store.objects().put_opts(&marker, body.to_string().into_bytes().into(), opts).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(fail("cannot write its marker", e)),
            }
        }
    }
    Ok(())
}

/// A marker from another tool, or from a newer kubectl-backup, makes the location unusable here.
fn check_marker(store: &Store, bytes: &[u8]) -> Result<()> {
    let fail = |reason: String| Error::Location { location: store.url().to_string(), reason };
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if value["tool"] != MARKER_TOOL {
        return Err(fail(format!("its {MARKER_OBJECT} is not a kubectl-backup marker: another tool's data is here")));
    }
    match value["layoutVersion"].as_u64() {
        Some(v) if v <= LAYOUT_VERSION => Ok(()),
        Some(v) => Err(fail(format!(
            "it was written with layout version {v}, newer than this kubectl-backup understands ({LAYOUT_VERSION}): upgrade kubectl-backup"
        ))),
        None => Err(fail(format!("its {MARKER_OBJECT} has no layoutVersion"))),
    }
}
