//! What a restore will do, decided before the first write: which objects, in which order, and which
//! are skipped because a restored owner's controller recreates them. Pure functions over an index
//! of the archive; the archive itself is read again when objects are applied.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::filter::{ResourceNames, Selection};
use crate::model::ClusterResources;

/// The order objects are created in. Lower first; each group finishes before the next starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Then wait until each is Established and served.
    CustomResourceDefinitions,
    Namespaces,
    StorageClasses,
    Volumes,
    Roles,
    ServiceAccounts,
    RoleBindings,
    Configuration,
    Services,
    Workloads,
    Other,
    /// Last, so a restored webhook cannot block the restore.
    AdmissionWebhooks,
}

impl Priority {
    pub const ALL: [Priority; 12] = [
        Priority::CustomResourceDefinitions,
        Priority::Namespaces,
        Priority::StorageClasses,
        Priority::Volumes,
        Priority::Roles,
        Priority::ServiceAccounts,
        Priority::RoleBindings,
        Priority::Configuration,
        Priority::Services,
        Priority::Workloads,
        Priority::Other,
        Priority::AdmissionWebhooks,
    ];

    pub fn of(resource: &str) -> Priority {
        match resource {
            "customresourcedefinitions.apiextensions.k8s.io" => Priority::CustomResourceDefinitions,
            "namespaces" => Priority::Namespaces,
            "storageclasses.storage.k8s.io" => Priority::StorageClasses,
            "persistentvolumes" | "persistentvolumeclaims" => Priority::Volumes,
            "clusterroles.rbac.authorization.k8s.io" | "roles.rbac.authorization.k8s.io" => Priority::Roles,
            "serviceaccounts" => Priority::ServiceAccounts,
            "clusterrolebindings.rbac.authorization.k8s.io" | "rolebindings.rbac.authorization.k8s.io" => {
                Priority::RoleBindings
            }
            "secrets" | "configmaps" | "limitranges" | "resourcequotas" | "priorityclasses.scheduling.k8s.io" => {
                Priority::Configuration
            }
            "services" => Priority::Services,
            "deployments.apps"
            | "statefulsets.apps"
            | "daemonsets.apps"
            | "replicasets.apps"
            | "jobs.batch"
            | "cronjobs.batch"
            | "pods"
            | "replicationcontrollers" => Priority::Workloads,
            "mutatingwebhookconfigurations.admissionregistration.k8s.io"
            | "validatingwebhookconfigurations.admissionregistration.k8s.io" => Priority::AdmissionWebhooks,
            _ => Priority::Other,
        }
    }
}

/// One archived object as the plan sees it.
#[derive(Clone, Debug)]
pub struct Indexed {
    pub path: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    pub api_version: String,
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    /// `(kind, name)` of the controller owner, if any.
    pub controller: Option<(String, String)>,
    /// Services: whether the Service has a selector (its Endpoints are then managed).
    pub has_selector: bool,
    /// Secrets: the type; PVCs: the bound volume.
    pub secret_type: Option<String>,
    pub volume_name: Option<String>,
    /// PVCs and PVs: `spec.storageClassName`.
    pub storage_class: Option<String>,
    /// SHA-256 of the object's bytes as verified, checked again each time they are read.
    pub sha256: String,
}

impl Indexed {
    pub fn from_json(path: &str, resource: &str, namespace: Option<&str>, name: &str, v: &Value) -> Indexed {
        let meta = &v["metadata"];
        let labels = meta["labels"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
            .unwrap_or_default();
        let controller = meta["ownerReferences"].as_array().into_iter().flatten().find_map(|r| {
            (r["controller"].as_bool() == Some(true))
                .then(|| (r["kind"].as_str().unwrap_or("").to_string(), r["name"].as_str().unwrap_or("").to_string()))
        });
        Indexed {
            path: path.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            api_version: v["apiVersion"].as_str().unwrap_or("").to_string(),
            kind: v["kind"].as_str().unwrap_or("").to_string(),
            labels,
            controller,
            has_selector: v["spec"]["selector"].as_object().is_some_and(|s| !s.is_empty()),
            secret_type: v["type"].as_str().map(str::to_string),
            volume_name: v["spec"]["volumeName"].as_str().map(str::to_string),
            storage_class: v["spec"]["storageClassName"].as_str().filter(|c| !c.is_empty()).map(str::to_string),
            sha256: String::new(),
        }
    }

    /// `(plural, group)` from the resource key and apiVersion.
    pub fn plural_group(&self) -> (&str, &str) {
        let group = self.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let plural = if group.is_empty() {
            self.resource.as_str()
        } else {
            self.resource.strip_suffix(&format!(".{group}")).unwrap_or(&self.resource)
        };
        (plural, group)
    }
}

/// The decision for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Restore(Priority),
    /// Not restored by design; the reason is reported.
    Skip(String),
    /// Filtered out: not reported, not counted.
    Filtered,
}

/// Decides every object: filtered out, skipped by policy (with a reason), or restored in a group.
pub fn decide(
    items: &[Indexed],
    selection: &Selection,
    short_names: &dyn Fn(&str, &str) -> Vec<String>,
) -> Vec<Decision> {
    // Objects present in the backup, to know whether an owner comes back with its dependents.
    let present: HashSet<(Option<&str>, &str, &str)> =
        items.iter().map(|i| (i.namespace.as_deref(), i.kind.as_str(), i.name.as_str())).collect();
    let selector_services: HashSet<(Option<&str>, &str)> = items
        .iter()
        .filter(|i| i.resource == "services" && i.has_selector)
        .map(|i| (i.namespace.as_deref(), i.name.as_str()))
        .collect();

    // First pass: the namespaced objects that pass the filters, for "auto" cluster-scoped objects.
    let included_ns_object = |i: &Indexed| includes_namespaced(i, selection, short_names);
    let needed = Needed::of(items, &included_ns_object);

    items
        .iter()
        .map(|i| {
            let wanted = match &i.namespace {
                Some(_) => included_ns_object(i),
                None => includes_cluster_scoped(i, selection, short_names, &needed),
            };
            if !wanted {
                return Decision::Filtered;
            }
            if let Some(reason) = skip_reason(i, &present, &selector_services) {
                return Decision::Skip(reason);
            }
            Decision::Restore(Priority::of(&i.resource))
        })
        .collect()
}

/// What the namespaced objects that pass the filters need: their CRDs, bound volumes, namespaces.
#[derive(Default)]
struct Needed<'a> {
    crds: HashSet<String>,
    pvs: HashSet<&'a str>,
    namespaces: HashSet<&'a str>,
}

impl<'a> Needed<'a> {
    fn of(items: &'a [Indexed], included: &dyn Fn(&Indexed) -> bool) -> Needed<'a> {
        let mut needed = Needed::default();
        for i in items.iter().filter(|i| i.namespace.is_some()) {
            if included(i) {
                let (plural, group) = i.plural_group();
                if !group.is_empty() {
                    needed.crds.insert(format!("{plural}.{group}"));
                }
                if let Some(v) = &i.volume_name {
                    needed.pvs.insert(v);
                }
                needed.namespaces.insert(i.namespace.as_deref().unwrap_or_default());
            }
        }
        needed
    }
}

/// Whether a namespaced object passes the namespace, resource and label filters.
fn includes_namespaced(i: &Indexed, selection: &Selection, short_names: &dyn Fn(&str, &str) -> Vec<String>) -> bool {
    let ns = i.namespace.as_deref().unwrap_or_default();
    if !selection.includes_namespace(ns, false) {
        return false;
    }
    let (plural, group) = i.plural_group();
    let shorts = short_names(plural, group);
    let names = ResourceNames { plural, group, kind: &i.kind, singular: "", short_names: &shorts };
    selection.includes_resource(&names) && selection.selector.as_ref().is_none_or(|s| s.matches(&i.labels))
}

/// Whether a cluster-scoped object is restored: a Namespace with its namespace's objects, others
/// per `cluster_resources` (with "auto", the CRDs and volumes `needed` names).
fn includes_cluster_scoped(
    i: &Indexed,
    selection: &Selection,
    short_names: &dyn Fn(&str, &str) -> Vec<String>,
    needed: &Needed<'_>,
) -> bool {
    let (plural, group) = i.plural_group();
    let shorts = short_names(plural, group);
    let names = ResourceNames { plural, group, kind: &i.kind, singular: "", short_names: &shorts };
    let is_ns = i.resource == "namespaces";
    let wanted = if is_ns {
        // A Namespace object comes with its namespace's objects unless excluded by name.
        selection.includes_namespace(&i.name, false)
            && !selection.excludes_resource_explicitly(&names)
            && (selection.all_namespaces()
                || needed.namespaces.contains(i.name.as_str())
                || selection.names_namespace_explicitly(&i.name))
    } else {
        match selection.cluster_resources {
            ClusterResources::Never => false,
            ClusterResources::Always => selection.includes_resource(&names),
            ClusterResources::Auto if selection.all_namespaces() => selection.includes_resource(&names),
            ClusterResources::Auto => match i.resource.as_str() {
                "customresourcedefinitions.apiextensions.k8s.io" => needed.crds.contains(&i.name),
                "persistentvolumes" => needed.pvs.contains(i.name.as_str()),
                _ => false,
            },
        }
    };
    wanted && selection.selector.as_ref().is_none_or(|s| is_ns || s.matches(&i.labels))
}

/// Objects whose controllers recreate them are not restored.
fn skip_reason(
    i: &Indexed,
    present: &HashSet<(Option<&str>, &str, &str)>,
    selector_services: &HashSet<(Option<&str>, &str)>,
) -> Option<String> {
    if let Some((kind, name)) = &i.controller
        && present.contains(&(i.namespace.as_deref(), kind.as_str(), name.as_str()))
    {
        return Some(format!("managed by {kind}/{name}, which is restored; its controller recreates it"));
    }
    match i.resource.as_str() {
        "secrets" if i.secret_type.as_deref() == Some("kubernetes.io/service-account-token") => {
            Some("service account token; the token controller creates a new one".into())
        }
        "configmaps" if i.name == "kube-root-ca.crt" => {
            Some("created in every namespace by the root CA publisher".into())
        }
        "endpoints" if selector_services.contains(&(i.namespace.as_deref(), i.name.as_str())) => {
            Some(format!("managed for Service {}, which is restored", i.name))
        }
        "endpointslices.discovery.k8s.io" if i.labels.contains_key("kubernetes.io/service-name") => {
            Some("managed by the EndpointSlice controller for its Service".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Filters;
    use serde_json::json;

    fn idx(resource: &str, ns: Option<&str>, name: &str, v: Value) -> Indexed {
        Indexed::from_json("p", resource, ns, name, &v)
    }

    fn no_shorts(_: &str, _: &str) -> Vec<String> {
        vec![]
    }

    fn sample() -> Vec<Indexed> {
        vec![
            idx("namespaces", None, "shop", json!({"apiVersion": "v1", "kind": "Namespace"})),
            idx("namespaces", None, "other", json!({"apiVersion": "v1", "kind": "Namespace"})),
            idx(
                "deployments.apps",
                Some("shop"),
                "web",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"labels": {"app": "web"}}}),
            ),
            idx(
                "replicasets.apps",
                Some("shop"),
                "web-1",
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]}}),
            ),
            idx(
                "replicasets.apps",
                Some("shop"),
                "orphan",
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"ownerReferences": [{"kind": "Deployment", "name": "gone", "controller": true}]}}),
            ),
            idx(
                "secrets",
                Some("shop"),
                "default-token-x",
                json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token"}),
            ),
            idx("configmaps", Some("shop"), "kube-root-ca.crt", json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            idx(
                "services",
                Some("shop"),
                "web",
                json!({"apiVersion": "v1", "kind": "Service", "spec": {"selector": {"app": "web"}}}),
            ),
            idx("endpoints", Some("shop"), "web", json!({"apiVersion": "v1", "kind": "Endpoints"})),
            idx("widgets.example.org", Some("shop"), "w", json!({"apiVersion": "example.org/v1", "kind": "Widget"})),
            idx(
                "customresourcedefinitions.apiextensions.k8s.io",
                None,
                "widgets.example.org",
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}),
            ),
            idx(
                "customresourcedefinitions.apiextensions.k8s.io",
                None,
                "gadgets.example.org",
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}),
            ),
            idx(
                "persistentvolumeclaims",
                Some("shop"),
                "data",
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": {"volumeName": "pv-1"}}),
            ),
            idx("persistentvolumes", None, "pv-1", json!({"apiVersion": "v1", "kind": "PersistentVolume"})),
            idx("persistentvolumes", None, "pv-2", json!({"apiVersion": "v1", "kind": "PersistentVolume"})),
            idx(
                "clusterroles.rbac.authorization.k8s.io",
                None,
                "admin",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"}),
            ),
            idx("configmaps", Some("other"), "x", json!({"apiVersion": "v1", "kind": "ConfigMap"})),
        ]
    }

    #[test]
    fn owned_objects_and_controller_made_objects_are_skipped() {
        let items = sample();
        let d = decide(&items, &Selection::new(&Filters::default()).unwrap(), &no_shorts);
        assert!(matches!(&d[3], Decision::Skip(r) if r.contains("Deployment/web")));
        assert_eq!(
            d[4],
            Decision::Restore(Priority::Workloads),
            "an orphan whose owner is not in the backup is restored"
        );
        assert!(matches!(&d[5], Decision::Skip(r) if r.contains("token")));
        assert!(matches!(&d[6], Decision::Skip(_)));
        assert!(matches!(&d[8], Decision::Skip(r) if r.contains("Service web")));
        assert_eq!(d[10], Decision::Restore(Priority::CustomResourceDefinitions));
        assert_eq!(
            d[15],
            Decision::Restore(Priority::Roles),
            "everything cluster-scoped when all namespaces are restored"
        );
    }

    #[test]
    fn a_namespace_scoped_restore_brings_only_what_it_needs() {
        let items = sample();
        let sel = Selection::new(&Filters { included_namespaces: vec!["shop".into()], ..Default::default() }).unwrap();
        let d = decide(&items, &sel, &no_shorts);
        assert_eq!(d[0], Decision::Restore(Priority::Namespaces));
        assert_eq!(d[1], Decision::Filtered, "other namespace");
        assert_eq!(d[10], Decision::Restore(Priority::CustomResourceDefinitions), "CRD of a restored custom resource");
        assert_eq!(d[11], Decision::Filtered, "unrelated CRD");
        assert_eq!(d[13], Decision::Restore(Priority::Volumes), "PV bound to a restored PVC");
        assert_eq!(d[14], Decision::Filtered, "unrelated PV");
        assert_eq!(d[15], Decision::Filtered, "cluster role");
        assert_eq!(d[16], Decision::Filtered);
    }

    #[test]
    fn selectors_and_resource_filters_apply() {
        let items = sample();
        let sel = Selection::new(&Filters { label_selector: Some("app=web".into()), ..Default::default() }).unwrap();
        let d = decide(&items, &sel, &no_shorts);
        assert_eq!(d[2], Decision::Restore(Priority::Workloads));
        assert_eq!(d[9], Decision::Filtered);
        let sel =
            Selection::new(&Filters { included_resources: vec!["widgets.example.org".into()], ..Default::default() })
                .unwrap();
        let d = decide(&items, &sel, &no_shorts);
        assert_eq!(d[9], Decision::Restore(Priority::Other));
        assert_eq!(d[2], Decision::Filtered);
    }

    #[test]
    fn priorities_follow_the_documented_order() {
        let order = [
            "customresourcedefinitions.apiextensions.k8s.io",
            "namespaces",
            "storageclasses.storage.k8s.io",
            "persistentvolumes",
            "roles.rbac.authorization.k8s.io",
            "serviceaccounts",
            "rolebindings.rbac.authorization.k8s.io",
            "secrets",
            "services",
            "deployments.apps",
            "widgets.example.org",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        ];
        let p: Vec<Priority> = order.iter().map(|r| Priority::of(r)).collect();
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(p, sorted);
        assert_eq!(p.len(), Priority::ALL.len());
    }
}
