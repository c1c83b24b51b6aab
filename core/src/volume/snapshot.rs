//! CSI snapshots (`--volume-method snapshot`): the storage system keeps the data, the backup keeps
//! the snapshot's handle.
//!
//! Backing up a claim: find the VolumeSnapshotClass whose driver is the claim's StorageClass
//! provisioner (the default one first), take a VolumeSnapshot, wait for `readyToUse`, record the
//! VolumeSnapshotContent's driver and `snapshotHandle`, set its deletion policy to Retain and remove
//! the two objects: the physical snapshot stays, named by the backup. Restoring: a pre-provisioned
//! VolumeSnapshotContent with that handle, a VolumeSnapshot bound to it in the target namespace,
//! and the claim created with `dataSource` pointing at it. All with the user's own RBAC.

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::kube_message;
use crate::kube_client::Cluster;

pub const GROUP: &str = "snapshot.storage.k8s.io";
/// What a claim's data is in a backup made with snapshots.
pub const FORMAT: &str = "csi-snapshot";
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

/// A physical snapshot, as the backup records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    pub driver: String,
    pub handle: String,
    /// The VolumeSnapshotClass it was taken with.
    pub class: String,
    /// `status.restoreSize` in bytes, when the driver reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    /// The VolumeSnapshotContent kept in the cluster (Retain, labelled [`SNAPSHOT_OF`] with the
    /// backup's name): what deleting the backup deletes, never a handle alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Label of the VolumeSnapshotContent a backup keeps: the backup's name.
pub const SNAPSHOT_OF: &str = "kubectl-backup.dev/snapshot-of";

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", kind))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The VolumeSnapshotClass for the claim's StorageClass: same driver, the default one first.
pub async fn class_for(cluster: &Cluster, storage_class: Option<&str>) -> Result<(String, String), String> {
    let sc_name = storage_class.ok_or("the claim names no StorageClass, so no CSI driver to snapshot it with")?;
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(cluster.client.clone());
    let sc = classes
        .get(sc_name)
        .await
        .map_err(|e| format!("cannot read StorageClass {sc_name:?}: {}", kube_message(&e)))?;
    let driver = sc.provisioner;
    let snapshot_classes: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource("VolumeSnapshotClass"));
    let list = snapshot_classes.list(&Default::default()).await.map_err(|e| {
        format!(
            "cannot list VolumeSnapshotClasses (are the snapshot.storage.k8s.io CRDs installed?): {}",
            kube_message(&e)
        )
    })?;
    let mut matching: Vec<(bool, String)> = list
        .items
        .iter()
        .filter(|c| c.data.get("driver").and_then(Value::as_str) == Some(driver.as_str()))
        .map(|c| {
            let default =
                c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS)).is_some_and(|v| v == "true");
            (!default, c.metadata.name.clone().unwrap_or_default())
        })
        .collect();
    matching.sort();
    let (_, class) = matching.into_iter().next().ok_or_else(|| {
        format!("no VolumeSnapshotClass has driver {driver:?} (the provisioner of StorageClass {sc_name:?})")
    })?;
    Ok((class, driver))
}

/// Takes a snapshot of `claim` and waits until it is ready; the snapshot then outlives the
/// VolumeSnapshot and VolumeSnapshotContent objects, which are removed.
pub async fn take(
    cluster: &Cluster,
    ns: &str,
    claim: &str,
    backup: &str,
    class: &str,
    timeout: Duration,
) -> Result<SnapshotRef, String> {
    let snapshots: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), ns, &resource("VolumeSnapshot"));
    let contents: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource("VolumeSnapshotContent"));
    let name = object_name(claim, backup);
    let snapshot: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": ns, "labels": {super::MOVER_LABEL: backup}},
        "spec": {"volumeSnapshotClassName": class, "source": {"persistentVolumeClaimName": claim}},
    }))
    .map_err(|e| e.to_string())?;
    snapshots
        .create(&PostParams::default(), &snapshot)
        .await
        .map_err(|e| format!("cannot create VolumeSnapshot {ns}/{name}: {}", kube_message(&e)))?;
    let ready = wait_ready(&snapshots, &name, timeout).await;
    let result = match ready {
        Ok(content_name) => record(&contents, &content_name, class).await,
        Err(e) => Err(e),
    };
    if let Ok(s) = &result {
        tracing::debug!(handle = %s.handle, "snapshot taken");
    }
    // Keep the physical snapshot and its content when the VolumeSnapshot goes (Retain), labelled
    // with the backup: deleting the backup deletes through that object.
    let bound = snapshots.get(&name).await.ok().and_then(|s| {
        str_at(&serde_json::to_value(&s).ok()?, "/status/boundVolumeSnapshotContentName").map(str::to_string)
    });
    let result = match (&bound, result) {
        (Some(content), Ok(mut s)) => {
            let patch = json!({"metadata": {"labels": {SNAPSHOT_OF: backup}}, "spec": {"deletionPolicy": "Retain"}});
            match contents.patch(content, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    s.content = Some(content.clone());
                    Ok(s)
                }
                Err(e) => {
                    Err(format!("cannot keep the snapshot (deletionPolicy Retain on {content}): {}", kube_message(&e)))
                }
            }
        }
        (_, r) => r,
    };
    let _ = snapshots.delete(&name, &DeleteParams::default()).await;
    result
}

/// `<claim>-<backup>`, cut to a valid object name.
fn object_name(claim: &str, backup: &str) -> String {
    let mut name = format!("{claim}-{backup}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

async fn wait_ready(snapshots: &Api<DynamicObject>, name: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = snapshots
            .get(name)
            .await
            .map_err(|e| format!("cannot read VolumeSnapshot {name}: {}", kube_message(&e)))?;
        let v = serde_json::to_value(&s).map_err(|e| e.to_string())?;
        if let Some(m) = str_at(&v, "/status/error/message") {
            return Err(format!("VolumeSnapshot {name} failed: {m}"));
        }
        if v.pointer("/status/readyToUse") == Some(&Value::Bool(true))
            && let Some(content) = str_at(&v, "/status/boundVolumeSnapshotContentName")
        {
            return Ok(content.to_string());
        }
        if Instant::now() > deadline {
            return Err(format!("VolumeSnapshot {name} was not ready to use within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn record(contents: &Api<DynamicObject>, name: &str, class: &str) -> Result<SnapshotRef, String> {
    let c = contents
        .get(name)
        .await
        .map_err(|e| format!("cannot read VolumeSnapshotContent {name}: {}", kube_message(&e)))?;
    let v = serde_json::to_value(&c).map_err(|e| e.to_string())?;
    let handle =
        str_at(&v, "/status/snapshotHandle").ok_or(format!("VolumeSnapshotContent {name} has no snapshotHandle"))?;
    Ok(SnapshotRef {
        driver: str_at(&v, "/spec/driver").unwrap_or_default().to_string(),
        handle: handle.to_string(),
        class: class.to_string(),
        restore_size: v.pointer("/status/restoreSize").and_then(Value::as_i64),
        content: None,
    })
}

/// The VolumeSnapshot a restored claim's `dataSource` names, in namespace `ns`.
pub fn restored_name(claim: &str, backup: &str) -> String {
    object_name(claim, &format!("from-{backup}"))
}

/// Re-creates the snapshot in namespace `ns`: a pre-provisioned VolumeSnapshotContent with the
/// recorded handle and a VolumeSnapshot bound to it, named [`restored_name`].
pub async fn recreate(cluster: &Cluster, ns: &str, claim: &str, backup: &str, s: &SnapshotRef) -> Result<(), String> {
    let name = restored_name(claim, backup);
    let content_name = object_name(&format!("{ns}-{name}"), "content");
    let contents: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource("VolumeSnapshotContent"));
    let snapshots: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), ns, &resource("VolumeSnapshot"));
    let content: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name, "labels": {crate::RESTORED_FROM_LABEL: backup}},
        "spec": {
            "deletionPolicy": "Retain",
            "driver": s.driver,
            "source": {"snapshotHandle": s.handle},
            "volumeSnapshotClassName": s.class,
            "volumeSnapshotRef": {"namespace": ns, "name": name},
        },
    }))
    .map_err(|e| e.to_string())?;
    let snapshot: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": ns, "labels": {crate::RESTORED_FROM_LABEL: backup}},
        "spec": {"volumeSnapshotClassName": s.class, "source": {"volumeSnapshotContentName": content_name}},
    }))
    .map_err(|e| e.to_string())?;
    let pp = PostParams::default();
    for (api, obj, what) in [(&contents, &content, "VolumeSnapshotContent"), (&snapshots, &snapshot, "VolumeSnapshot")]
    {
        match api.create(&pp, obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(format!(
                    "cannot create {what} {}: {}",
                    obj.metadata.name.as_deref().unwrap_or(""),
                    kube_message(&e)
                ));
            }
        }
    }
    Ok(())
}

/// How long `kubectl backup delete` waits for one snapshot to be deleted in the storage system.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// The physical snapshots backup `b` holds.
pub fn of_backup(b: &crate::model::Backup) -> Vec<&SnapshotRef> {
    b.status.volumes.iter().filter_map(|v| v.snapshot.as_ref()).collect()
}

/// What deleting one snapshot did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Its content was set to Delete and deleted: the CSI snapshotter deletes the snapshot.
    Requested,
    /// This cluster has no content of the backup for it (another cluster's backup, or an earlier
    /// version's): nothing was touched, the snapshot stays in the storage system.
    NotHere(String),
}

/// Deletes the snapshots of `backup` (deleted or expired), one at a time, through the contents the
/// backup kept; the first that cannot be deleted stops it with an error naming its handle.
/// `wait`: until each content is gone (the snapshot deleted in the storage system).
pub async fn delete_all(
    cluster: &Cluster,
    backup: &str,
    snapshots: &[&SnapshotRef],
    wait: Option<Duration>,
) -> Result<Vec<Deleted>, String> {
    let mut out = Vec::new();
    for s in snapshots {
        let d = delete(cluster, backup, s, wait)
            .await
            .map_err(|e| format!("cannot delete CSI snapshot {} (driver {}): {e}", s.handle, s.driver))?;
        out.push(d);
    }
    Ok(out)
}

fn handle_of(content: &Value) -> Option<&str> {
    str_at(content, "/status/snapshotHandle").or_else(|| str_at(content, "/spec/source/snapshotHandle"))
}

/// Deletes one snapshot through the VolumeSnapshotContent its backup kept — only when that object
/// carries the backup's label and the recorded handle, and no other content (a restored snapshot)
/// uses the handle: a backup's metadata, which whoever may write the location can change, never
/// names what is deleted by itself. The content's deletion policy is set to Delete and the content
/// deleted; the CSI snapshotter then deletes the snapshot in the storage system.
pub async fn delete(
    cluster: &Cluster,
    backup: &str,
    s: &SnapshotRef,
    wait: Option<Duration>,
) -> Result<Deleted, String> {
    let contents: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource("VolumeSnapshotContent"));
    let Some(name) = &s.content else {
        return Ok(Deleted::NotHere("the backup names no VolumeSnapshotContent".into()));
    };
    let content = match contents.get_opt(name).await {
        Ok(Some(c)) => serde_json::to_value(c).map_err(|e| e.to_string())?,
        Ok(None) => return Ok(Deleted::NotHere(format!("no VolumeSnapshotContent {name} in this cluster"))),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Ok(Deleted::NotHere("this cluster has no VolumeSnapshotContents".into()));
        }
        Err(e) => return Err(format!("cannot read VolumeSnapshotContent {name}: {}", kube_message(&e))),
    };
    if str_at(&content, &format!("/metadata/labels/{}", SNAPSHOT_OF.replace('/', "~1"))) != Some(backup)
        || handle_of(&content) != Some(s.handle.as_str())
    {
        return Err(format!(
            "VolumeSnapshotContent {name} is not this backup's snapshot (its {SNAPSHOT_OF} label or handle differs): left alone"
        ));
    }
    let all = contents
        .list(&Default::default())
        .await
        .map_err(|e| format!("cannot list VolumeSnapshotContents: {}", kube_message(&e)))?;
    for other in all.items {
        let other_name = other.metadata.name.clone().unwrap_or_default();
        let v = serde_json::to_value(&other).map_err(|e| e.to_string())?;
        if other_name != *name && handle_of(&v) == Some(s.handle.as_str()) {
            return Err(format!(
                "VolumeSnapshotContent {other_name} (a restored snapshot?) uses the same snapshot: delete it first"
            ));
        }
    }
    let patch = json!({"spec": {"deletionPolicy": "Delete"}});
    contents.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| {
        format!("cannot set deletionPolicy Delete on VolumeSnapshotContent {name}: {}", kube_message(&e))
    })?;
    match contents.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Deleted::Requested),
        Err(e) => return Err(format!("cannot delete VolumeSnapshotContent {name}: {}", kube_message(&e))),
    }
    let Some(timeout) = wait else { return Ok(Deleted::Requested) };
    let deadline = Instant::now() + timeout;
    loop {
        match contents.get_opt(name).await {
            Ok(None) => return Ok(Deleted::Requested),
            Ok(Some(c)) if Instant::now() > deadline => {
                let v = serde_json::to_value(&c).unwrap_or_default();
                let why = str_at(&v, "/status/error/message").unwrap_or("no error reported");
                return Err(format!("VolumeSnapshotContent {name} is still there after {timeout:?} ({why})"));
            }
            Ok(Some(_)) => {}
            Err(e) => return Err(format!("cannot read VolumeSnapshotContent {name}: {}", kube_message(&e))),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The preflight of a restore from snapshots: a warning for each VolumeSnapshotClass the target
/// cluster lacks (or for the snapshot CRDs missing), naming the claim that needs it.
pub async fn missing_classes(cluster: &Cluster, claims: &[(String, &SnapshotRef)]) -> Vec<String> {
    let classes: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource("VolumeSnapshotClass"));
    let mut warnings = Vec::new();
    let mut checked = std::collections::BTreeSet::new();
    for (claim, s) in claims {
        if !checked.insert(s.class.clone()) {
            continue;
        }
        match classes.get_opt(&s.class).await {
            Ok(Some(_)) => {}
            Ok(None) => warnings.push(format!(
                "VolumeSnapshotClass {:?} (of PersistentVolumeClaim {claim}) does not exist in the target cluster: its snapshot cannot be re-created; create one for driver {:?}",
                s.class, s.driver
            )),
            Err(e) => warnings.push(format!(
                "cannot check VolumeSnapshotClass {:?} (of PersistentVolumeClaim {claim}; are the snapshot.storage.k8s.io CRDs installed?): {}",
                s.class,
                kube_message(&e)
            )),
        }
    }
    warnings
}
