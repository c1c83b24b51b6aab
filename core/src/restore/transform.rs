//! Turning a backed-up object into one the target API server accepts: strip what the server owns,
//! clear what it assigns, map namespaces, and label the object with the backup it came from.
//! Pure functions over JSON; no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::RESTORED_FROM_LABEL;

/// Options that change how objects are transformed.
#[derive(Clone, Debug, Default)]
pub struct TransformOptions {
    pub backup_name: String,
    pub namespace_mapping: BTreeMap<String, String>,
    pub preserve_node_ports: bool,
    /// `--storage-class-mapping`: the StorageClass of restored claims and volumes.
    pub storage_class_mapping: BTreeMap<String, String>,
    /// Claims (source namespace, name) whose data this restore writes into a new volume: they
    /// are created unbound, to be bound or provisioned anew.
    pub fresh_claims: std::collections::BTreeSet<(String, String)>,
    /// Claims (source namespace, name) restored from a CSI snapshot: the VolumeSnapshot their
    /// `dataSource` names.
    pub snapshot_sources: BTreeMap<(String, String), String>,
}

impl TransformOptions {
    /// The namespace objects of `ns` go to.
    pub fn map_namespace<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespace_mapping.get(ns).map(String::as_str).unwrap_or(ns)
    }
}

const STRIPPED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
    "ownerReferences",
];

/// Transforms one object for creation. `resource` is `<plural>[.<group>]`.
pub fn transform(resource: &str, mut obj: Value, opts: &TransformOptions) -> Value {
    let Some(o) = obj.as_object_mut() else { return obj };
    o.remove("status");
    let meta = o.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if let Some(m) = meta.as_object_mut() {
        for k in STRIPPED_METADATA {
            m.remove(*k);
        }
        if let Some(ns) = m.get("namespace").and_then(Value::as_str).map(str::to_string) {
            m.insert("namespace".into(), Value::String(opts.map_namespace(&ns).to_string()));
        }
        let labels = m.entry("labels").or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Some(l) = labels.as_object_mut() {
            l.insert(RESTORED_FROM_LABEL.into(), Value::String(opts.backup_name.clone()));
        }
    }
    match resource {
        "namespaces" => {
            if let Some(name) =
                o.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).map(str::to_string)
            {
                let mapped = opts.map_namespace(&name).to_string();
                set(o, &["metadata", "name"], Value::String(mapped.clone()));
                // The name label the API server adds (1.21+) must follow the new name.
                if let Some(l) = o.get_mut("metadata").and_then(|m| m.get_mut("labels")).and_then(Value::as_object_mut)
                    && l.contains_key("kubernetes.io/metadata.name")
                {
                    l.insert("kubernetes.io/metadata.name".into(), Value::String(mapped));
                }
            }
        }
        "services" => transform_service(o, opts.preserve_node_ports),
        "pods" => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("nodeName");
            }
        }
        "serviceaccounts" => {
            // References to token Secrets: those are not restored; the token controller makes new ones.
            let name = o.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(secrets) = o.get_mut("secrets").and_then(Value::as_array_mut) {
                let prefix = format!("{name}-token-");
                secrets.retain(|s| !s.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with(&prefix)));
                if secrets.is_empty() {
                    o.remove("secrets");
                }
            }
        }
        "jobs.batch" => transform_job(o),
        "persistentvolumeclaims" => {
            map_storage_class(o, opts);
            let ns = meta_str(o, "namespace").map(|n| n.to_string());
            let name = meta_str(o, "name").unwrap_or_default().to_string();
            // `metadata.namespace` is the target's already: find the source's.
            let ours =
                |(src, claim): &&(String, String)| claim == &name && ns.as_deref() == Some(opts.map_namespace(src));
            if opts.fresh_claims.iter().any(|k| ours(&k)) {
                unbind_claim(o);
            }
            let snapshot = opts.snapshot_sources.iter().find(|(k, _)| ours(k)).map(|(_, v)| v.clone());
            if let Some(snapshot) = snapshot
                && let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut)
            {
                let from = serde_json::json!({"apiGroup": crate::volume::snapshot::GROUP, "kind": "VolumeSnapshot", "name": snapshot});
                spec.remove("dataSourceRef");
                spec.insert("dataSource".into(), from);
            }
        }
        "persistentvolumes" => {
            map_storage_class(o, opts);
            if let Some(claim) = o.get_mut("spec").and_then(|s| s.get_mut("claimRef")).and_then(Value::as_object_mut) {
                claim.remove("uid");
                claim.remove("resourceVersion");
                if let Some(ns) = claim.get("namespace").and_then(Value::as_str).map(str::to_string) {
                    claim.insert("namespace".into(), Value::String(opts.map_namespace(&ns).to_string()));
                }
            }
        }
        "rolebindings.rbac.authorization.k8s.io" | "clusterrolebindings.rbac.authorization.k8s.io" => {
            if let Some(subjects) = o.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects {
                    if let Some(s) = s.as_object_mut()
                        && let Some(ns) = s.get("namespace").and_then(Value::as_str).map(str::to_string)
                    {
                        s.insert("namespace".into(), Value::String(opts.map_namespace(&ns).to_string()));
                    }
                }
            }
        }
        _ => {}
    }
    obj
}

/// Annotations the PersistentVolume controller and provisioners set on a bound claim.
const BINDING_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// A claim without its binding: bound or provisioned anew in the target cluster.
fn unbind_claim(o: &mut Map<String, Value>) {
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("volumeName");
    }
    if let Some(a) = o.get_mut("metadata").and_then(|m| m.get_mut("annotations")).and_then(Value::as_object_mut) {
        for k in BINDING_ANNOTATIONS {
            a.remove(*k);
        }
    }
}

fn map_storage_class(o: &mut Map<String, Value>, opts: &TransformOptions) {
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let Some(class) = spec.get("storageClassName").and_then(Value::as_str) else { return };
    if let Some(to) = opts.storage_class_mapping.get(class) {
        spec.insert("storageClassName".into(), Value::String(to.clone()));
    }
}

fn meta_str<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get("metadata").and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn set(o: &mut Map<String, Value>, path: &[&str], v: Value) {
    let mut cur = o;
    for (i, k) in path.iter().enumerate() {
        if i == path.len() - 1 {
            cur.insert((*k).to_string(), v);
            return;
        }
        let next = cur.entry((*k).to_string()).or_insert_with(|| Value::Object(Map::new()));
        match next.as_object_mut() {
            Some(m) => cur = m,
            None => return,
        }
    }
}

fn transform_service(o: &mut Map<String, Value>, preserve_node_ports: bool) {
    // Node ports the user wrote down (in kubectl's last-applied annotation) are kept; ports the
    // server assigned are dropped so the target assigns free ones.
    let declared = declared_node_ports(o);
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !headless {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if !preserve_node_ports {
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                let keep = p.get("nodePort").and_then(Value::as_i64).is_some_and(|n| declared.contains(&n));
                if !keep {
                    p.remove("nodePort");
                }
            }
        }
        let keep_hc = spec.get("healthCheckNodePort").and_then(Value::as_i64).is_some_and(|n| declared.contains(&n));
        if !keep_hc {
            spec.remove("healthCheckNodePort");
        }
    }
}

fn declared_node_ports(o: &Map<String, Value>) -> Vec<i64> {
    let Some(text) = o
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("kubectl.kubernetes.io/last-applied-configuration"))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let Ok(applied) = serde_json::from_str::<Value>(text) else { return Vec::new() };
    let spec = &applied["spec"];
    let mut ports: Vec<i64> =
        spec["ports"].as_array().into_iter().flatten().filter_map(|p| p["nodePort"].as_i64()).collect();
    ports.extend(spec["healthCheckNodePort"].as_i64());
    ports
}

/// A Job's selector and `controller-uid` labels are generated from its old UID; the API server
/// refuses them on create unless the selector is manual.
fn transform_job(o: &mut Map<String, Value>) {
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    spec.remove("selector");
    if let Some(labels) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("metadata"))
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove("controller-uid");
        labels.remove("batch.kubernetes.io/controller-uid");
    }
}

/// The changes applying `desired` to `live` would make, as a JSON patch: only fields present in
/// `desired` count (server-side apply leaves other fields alone), and server-owned metadata and
/// status are ignored. Empty when nothing would change.
pub fn changes(live: &Value, desired: &Value) -> Vec<json_patch::PatchOperation> {
    let mut want = desired.clone();
    if let Some(o) = want.as_object_mut() {
        o.remove("status");
        // The restored-from label is ours, not a difference from the backup.
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            let live_has = live["metadata"]["labels"].get(RESTORED_FROM_LABEL).is_some();
            if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                if !live_has {
                    labels.remove(RESTORED_FROM_LABEL);
                }
                if labels.is_empty() {
                    meta.remove("labels");
                }
            }
        }
    }
    let projected = project(live, &want);
    json_patch::diff(&projected, &want).0
}

/// `live` restricted to the shape of `desired`: objects keep only the keys `desired` has; arrays
/// and scalars are taken whole.
fn project(live: &Value, desired: &Value) -> Value {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            let mut out = Map::new();
            for (k, dv) in d {
                if k == "status" {
                    continue;
                }
                if let Some(lv) = l.get(k) {
                    out.insert(k.clone(), project(lv, dv));
                }
            }
            Value::Object(out)
        }
        (l, _) => l.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> TransformOptions {
        TransformOptions {
            backup_name: "nightly".into(),
            namespace_mapping: [("shop".to_string(), "shop-copy".to_string())].into(),
            preserve_node_ports: false,
            ..Default::default()
        }
    }

    #[test]
    fn claims_whose_data_is_restored_are_unbound_and_storage_classes_mapped() {
        let pvc = |ns: &str| {
            json!({"metadata": {"name": "data", "namespace": ns,
                "annotations": {"pv.kubernetes.io/bind-completed": "yes", "team": "a"}},
                "spec": {"volumeName": "pv-1", "storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}})
        };
        let o = TransformOptions {
            storage_class_mapping: [("fast".to_string(), "standard".to_string())].into(),
            fresh_claims: [("shop".to_string(), "data".to_string())].into(),
            ..opts()
        };
        // shop -> shop-copy: the claim is the one whose data is restored.
        let out = transform("persistentvolumeclaims", pvc("shop"), &o);
        assert_eq!(out["metadata"]["namespace"], "shop-copy");
        assert_eq!(out["spec"].get("volumeName"), None, "{out}");
        assert_eq!(out["spec"]["storageClassName"], "standard");
        assert_eq!(out["metadata"]["annotations"], json!({"team": "a"}));
        // Another namespace's claim of the same name keeps its binding; its class is mapped too.
        let other = transform("persistentvolumeclaims", pvc("web"), &o);
        assert_eq!(other["spec"]["volumeName"], "pv-1");
        assert_eq!(other["spec"]["storageClassName"], "standard");
        // Without data to restore, a claim keeps its volume.
        let plain = transform("persistentvolumeclaims", pvc("shop"), &opts());
        assert_eq!(
            (plain["spec"]["volumeName"].as_str(), plain["spec"]["storageClassName"].as_str()),
            (Some("pv-1"), Some("fast"))
        );
        let from_snapshot = TransformOptions {
            snapshot_sources: [(("shop".to_string(), "data".to_string()), "data-from-nightly".to_string())].into(),
            ..o.clone()
        };
        let out = transform("persistentvolumeclaims", pvc("shop"), &from_snapshot);
        assert_eq!(
            out["spec"]["dataSource"],
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "data-from-nightly"})
        );
        assert_eq!(out["spec"].get("volumeName"), None, "{out}");
        let pv = json!({"metadata": {"name": "pv-1"}, "spec": {"storageClassName": "fast"}});
        assert_eq!(transform("persistentvolumes", pv, &o)["spec"]["storageClassName"], "standard");
    }

    #[test]
    fn strips_server_fields_and_labels_the_object() {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "shop", "uid": "u", "resourceVersion": "9", "generation": 2,
                          "creationTimestamp": "2024-01-01T00:00:00Z", "managedFields": [], "selfLink": "/x",
                          "ownerReferences": [{"kind": "X"}], "labels": {"app": "web"}},
            "data": {"k": "v"}, "status": {"x": 1}
        });
        let out = transform("configmaps", obj, &opts());
        assert_eq!(
            out,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a", "namespace": "shop-copy", "labels": {"app": "web", "kubectl-backup.dev/restored-from": "nightly"}},
                   "data": {"k": "v"}})
        );
    }

    #[test]
    fn services_lose_assigned_ips_and_ports() {
        let svc = json!({"metadata": {"name": "s", "namespace": "other"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                     "ports": [{"port": 80, "nodePort": 30080}]}});
        let out = transform("services", svc.clone(), &opts());
        assert_eq!(out["spec"].get("clusterIP"), None);
        assert_eq!(out["spec"].get("clusterIPs"), None);
        assert_eq!(out["spec"]["ports"][0].get("nodePort"), None);
        let keep = transform("services", svc, &TransformOptions { preserve_node_ports: true, ..opts() });
        assert_eq!(keep["spec"]["ports"][0]["nodePort"], 30080);
        // headless stays headless
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        assert_eq!(transform("services", headless, &opts())["spec"]["clusterIP"], "None");
        // a node port written in last-applied is the user's: kept
        let declared = json!({"metadata": {"name": "d", "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
            "{\"spec\":{\"ports\":[{\"port\":80,\"nodePort\":30555}]}}"}},
            "spec": {"ports": [{"port": 80, "nodePort": 30555}, {"port": 81, "nodePort": 31000}]}});
        let out = transform("services", declared, &opts());
        assert_eq!(out["spec"]["ports"][0]["nodePort"], 30555);
        assert_eq!(out["spec"]["ports"][1].get("nodePort"), None);
    }

    #[test]
    fn namespace_mapping_rewrites_references() {
        let rb = json!({"metadata": {"name": "rb", "namespace": "shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}, {"kind": "User", "name": "alice"}]});
        let out = transform("rolebindings.rbac.authorization.k8s.io", rb, &opts());
        assert_eq!(out["metadata"]["namespace"], "shop-copy");
        assert_eq!(out["subjects"][0]["namespace"], "shop-copy");
        assert_eq!(out["subjects"][1].get("namespace"), None);
        let crb = json!({"metadata": {"name": "crb"}, "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "shop"}]});
        assert_eq!(
            transform("clusterrolebindings.rbac.authorization.k8s.io", crb, &opts())["subjects"][0]["namespace"],
            "shop-copy"
        );
        let pv = json!({"metadata": {"name": "pv"}, "spec": {"claimRef": {"namespace": "shop", "name": "data", "uid": "u", "resourceVersion": "1"}}});
        let out = transform("persistentvolumes", pv, &opts());
        assert_eq!(out["spec"]["claimRef"], json!({"namespace": "shop-copy", "name": "data"}));
        let ns = json!({"metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}});
        let out = transform("namespaces", ns, &opts());
        assert_eq!(out["metadata"]["name"], "shop-copy");
        assert_eq!(out["metadata"]["labels"]["kubernetes.io/metadata.name"], "shop-copy");
    }

    #[test]
    fn pods_jobs_and_service_accounts() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": []}});
        assert_eq!(transform("pods", pod, &opts())["spec"].get("nodeName"), None);
        let job = json!({"metadata": {"name": "j"}, "spec": {"selector": {"matchLabels": {"controller-uid": "u"}},
            "template": {"metadata": {"labels": {"controller-uid": "u", "job-name": "j"}}}}});
        let out = transform("jobs.batch", job, &opts());
        assert_eq!(out["spec"].get("selector"), None);
        assert_eq!(out["spec"]["template"]["metadata"]["labels"], json!({"job-name": "j"}));
        let sa =
            json!({"metadata": {"name": "web"}, "secrets": [{"name": "web-token-abcde"}, {"name": "pull-secret"}]});
        assert_eq!(transform("serviceaccounts", sa, &opts())["secrets"], json!([{"name": "pull-secret"}]));
        let sa = json!({"metadata": {"name": "web"}, "secrets": [{"name": "web-token-abcde"}]});
        assert_eq!(
            transform("serviceaccounts", sa, &opts()).get("secrets"),
            None,
            "no empty list that would clear the live one"
        );
    }

    #[test]
    fn changes_are_limited_to_what_apply_would_touch() {
        let live = json!({"metadata": {"name": "a", "uid": "u", "resourceVersion": "5", "labels": {"x": "1"}}, "data": {"k": "live", "extra": "e"}, "status": {}});
        let same = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "live", "extra": "e"}});
        assert!(changes(&live, &same).is_empty());
        let labelled = json!({"metadata": {"name": "a", "labels": {"x": "1", "kubectl-backup.dev/restored-from": "b"}}, "data": {"k": "live"}});
        assert!(changes(&live, &labelled).is_empty(), "our own label is not a change");
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "backup", "extra": "e"}});
        let ops = changes(&live, &desired);
        assert_eq!(ops.len(), 1);
        assert_eq!(
            serde_json::to_value(&ops[0]).unwrap(),
            json!({"op": "replace", "path": "/data/k", "value": "backup"})
        );
    }
}
