//! Writing one object to the target cluster: create, or on conflict skip / update (server-side
//! apply, forced), or in a dry run ask the server to validate and report the diff.

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::plan::Indexed;
use super::transform::changes;
use crate::FIELD_MANAGER;
use crate::collect::Discovered;
use crate::error::kube_message;
use crate::kube_client::{Cluster, Throttle};
use crate::model::{ExistingPolicy, ItemAction, RestoreItem};

/// How objects are written.
#[derive(Clone, Debug)]
pub struct WritePolicy {
    pub existing: ExistingPolicy,
    pub dry_run: bool,
}

/// The API for an archived object in the target cluster, or why there is none.
pub fn resolve(discovered: &Discovered, item: &Indexed) -> Result<(ApiResource, bool), String> {
    let (plural, group) = item.plural_group();
    if let Some(u) = discovered.unavailable_group(group) {
        // Fails at once, without a request: the group did not answer discovery.
        return Err(format!(
            "API group {} is unavailable in the target cluster: {}; restore this backup again once it is served",
            u.group_version(),
            u.reason
        ));
    }
    let Some(r) = discovered.find(plural, group) else {
        return Err(format!(
            "the target cluster does not serve {} (install its CustomResourceDefinition or API first)",
            item.resource
        ));
    };
    let version = item.api_version.rsplit_once('/').map(|(_, v)| v).unwrap_or(&item.api_version).to_string();
    let ar = ApiResource {
        group: group.to_string(),
        version,
        api_version: item.api_version.clone(),
        kind: item.kind.clone(),
        plural: plural.to_string(),
    };
    Ok((ar, r.namespaced))
}

/// Whether an archived object's entry path agrees with what the server says of its resource: its
/// scope (an entry under `namespaces/<ns>/` for a namespaced resource, under `cluster/` for a
/// cluster-scoped one) and its kind.
pub fn check_scope(item: &Indexed, namespaced: bool, kind: &str) -> Result<(), String> {
    match (namespaced, item.namespace.as_deref()) {
        (false, Some(ns)) => Err(format!(
            "entry {:?} files a cluster-scoped {} under namespace {ns:?}: refused, a namespace restore must not create cluster-wide objects",
            item.path, item.resource
        )),
        (true, None) => Err(format!("entry {:?} files a namespaced {} as cluster-scoped", item.path, item.resource)),
        _ if !kind.is_empty() && item.kind != kind => Err(format!(
            "entry {:?} is filed under {}, whose kind is {kind}, but holds a {}",
            item.path, item.resource, item.kind
        )),
        _ => Ok(()),
    }
}

/// Creates (or updates, or validates) one transformed object and says what happened.
pub async fn write(
    cluster: &Cluster,
    discovered: &Discovered,
    item: &Indexed,
    target_namespace: Option<&str>,
    desired: Value,
    policy: &WritePolicy,
    namespace_pending: bool,
) -> RestoreItem {
    let mut report = RestoreItem {
        resource: item.resource.clone(),
        namespace: target_namespace.map(str::to_string),
        name: item.name.clone(),
        action: ItemAction::Failed,
        reason: None,
        diff: None,
    };
    let (ar, namespaced) = match resolve(discovered, item) {
        Ok(r) => r,
        Err(reason) => {
            if policy.dry_run && namespace_pending {
                report.action = ItemAction::WouldCreate;
                report.reason = Some("its API is created earlier in this restore; not validated by the server".into());
            } else {
                report.reason = Some(reason);
            }
            return report;
        }
    };
    if let Err(reason) = check_scope(item, namespaced, "") {
        report.reason = Some(reason);
        return report;
    }
    let api: Api<DynamicObject> = match target_namespace {
        Some(ns) if namespaced => Api::namespaced_with(cluster.client.clone(), ns, &ar),
        _ => Api::all_with(cluster.client.clone(), &ar),
    };
    let obj: DynamicObject = match serde_json::from_value(desired.clone()) {
        Ok(o) => o,
        Err(e) => {
            report.reason = Some(format!("not a Kubernetes object: {e}"));
            return report;
        }
    };
    let target = Target { api, name: item.name.as_str(), desired, obj, throttle: &cluster.throttle };
    if policy.dry_run {
        return validate(&target, policy, namespace_pending, report).await;
    }
    create(&target, policy, report).await
}

/// One object on its way to the server: its API and name, as JSON and as an object.
struct Target<'a> {
    api: Api<DynamicObject>,
    name: &'a str,
    desired: Value,
    obj: DynamicObject,
    throttle: &'a Throttle,
}

/// A dry run: asks the server to validate a create, or compares with the object that exists.
async fn validate(
    t: &Target<'_>,
    policy: &WritePolicy,
    namespace_pending: bool,
    mut report: RestoreItem,
) -> RestoreItem {
    match t.throttle.call(|| t.api.get_opt(t.name)).await {
        Ok(None) if namespace_pending => {
            report.action = ItemAction::WouldCreate;
            report.reason =
                Some("its namespace is created earlier in this restore; not validated by the server".into());
            report
        }
        Ok(None) => {
            let pp = PostParams { dry_run: true, field_manager: Some(FIELD_MANAGER.into()) };
            match t.throttle.call(|| t.api.create(&pp, &t.obj)).await {
                Ok(_) => report.action = ItemAction::WouldCreate,
                Err(e) => report.reason = Some(format!("the API server would refuse it: {}", kube_message(&e))),
            }
            report
        }
        Ok(Some(live)) => existing(t, live, policy, report).await,
        Err(e) => {
            report.reason = Some(kube_message(&e));
            report
        }
    }
}

/// Creates the object; if it exists already, skips or updates it according to the policy.
async fn create(t: &Target<'_>, policy: &WritePolicy, mut report: RestoreItem) -> RestoreItem {
    let pp = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
    match t.throttle.call(|| t.api.create(&pp, &t.obj)).await {
        Ok(_) => {
            report.action = ItemAction::Created;
            report
        }
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            match t.throttle.call(|| t.api.get_opt(t.name)).await {
                Ok(Some(live)) => existing(t, live, policy, report).await,
                Ok(None) => {
                    report.reason = Some("it existed, then disappeared while restoring; run the restore again".into());
                    report
                }
                Err(e) => {
                    report.reason = Some(kube_message(&e));
                    report
                }
            }
        }
        Err(e) => {
            report.reason = Some(kube_message(&e));
            report
        }
    }
}

/// An object that already exists: compare, then skip or update according to the policy.
async fn existing(t: &Target<'_>, live: DynamicObject, policy: &WritePolicy, mut report: RestoreItem) -> RestoreItem {
    let live = serde_json::to_value(&live).unwrap_or(Value::Null);
    let ops = changes(&live, &t.desired);
    if !ops.is_empty() {
        report.diff = serde_json::to_value(&ops).ok();
    }
    match policy.existing {
        ExistingPolicy::Skip => {
            report.action = ItemAction::SkippedExists;
            report.reason = Some(if ops.is_empty() {
                "exists, identical to the backup".to_string()
            } else {
                format!("exists and differs in {} field(s); --existing update would change them", ops.len())
            });
        }
        ExistingPolicy::Update if ops.is_empty() => report.action = ItemAction::Unchanged,
        ExistingPolicy::Update => {
            let mut pp = PatchParams::apply(FIELD_MANAGER).force();
            pp.dry_run = policy.dry_run;
            let apply = Patch::Apply(&t.obj);
            match t.throttle.call(|| t.api.patch(t.name, &pp, &apply)).await {
                Ok(_) => report.action = if policy.dry_run { ItemAction::WouldUpdate } else { ItemAction::Updated },
                Err(e) => report.reason = Some(format!("update refused: {}", kube_message(&e))),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::UnavailableGroup;

    #[test]
    fn an_unavailable_group_fails_its_objects_with_the_group_and_the_reason() {
        let v = serde_json::json!({"apiVersion": "stuff.example.org/v1", "kind": "Gizmo", "metadata": {"name": "g"}});
        let item = Indexed::from_json("x", "gizmos.stuff.example.org", Some("ns"), "g", &v);
        let discovered = Discovered {
            resources: vec![],
            unavailable: vec![UnavailableGroup {
                group: "stuff.example.org".into(),
                version: "v1".into(),
                reason: "503: service unavailable".into(),
            }],
        };
        let err = resolve(&discovered, &item).unwrap_err();
        assert!(err.contains("API group stuff.example.org/v1 is unavailable"), "{err}");
        assert!(err.contains("503: service unavailable"), "{err}");
        // Another group missing is the usual "not served" answer.
        let v = serde_json::json!({"apiVersion": "other.example.org/v1", "kind": "Thing", "metadata": {"name": "t"}});
        let item = Indexed::from_json("y", "things.other.example.org", Some("ns"), "t", &v);
        assert!(resolve(&discovered, &item).unwrap_err().contains("does not serve things.other.example.org"));
    }
}
