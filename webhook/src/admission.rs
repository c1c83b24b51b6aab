//! The admission decision: pure functions, no I/O. `mutate` answers one AdmissionRequest from the
//! policy and the in-memory index of backups; `decide` is the same decision for the restore
//! worker's catch-up of workspaces created while the webhook was down.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kubectl_backup_core::EPHEMERAL_LABEL;
use kubectl_backup_core::input::{NamePattern, parse_patterns};
use kubectl_backup_core::selector::LabelSelector;
use serde_json::Value;

use crate::index::Index;
use crate::mark::{Key, MARK_ANNOTATION, Mark, Requester};

pub use kubectl_backup_core::{EPHEMERAL_ANNOTATION, RESTORE_FROM_ANNOTATION, RESTORE_STATUS_ANNOTATION};
/// How many times the worker started restoring a workspace; it gives up after a few.
pub const RESTORE_ATTEMPTS_ANNOTATION: &str = "kubectl-backup.dev/restore-attempts";

/// Namespaces that are never workspaces.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// What makes a workspace and which are ephemeral.
#[derive(Clone, Debug)]
pub struct Policy {
    pub ephemeral: Vec<NamePattern>,
    pub selector: Option<LabelSelector>,
    /// Never mutated: system namespaces and the webhook's own.
    pub excluded: BTreeSet<String>,
    /// Custom resources that are workspaces: `(group, plural)`.
    pub workspace_resources: Vec<(String, String)>,
}

impl Policy {
    pub fn new(
        ephemeral: &[String],
        selector: Option<&str>,
        own_namespace: &str,
        workspace_resources: &[String],
    ) -> kubectl_backup_core::Result<Policy> {
        let mut excluded: BTreeSet<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
        excluded.insert(own_namespace.to_string());
        let workspace_resources = workspace_resources
            .iter()
            .map(|r| {
                r.split_once('.').map(|(p, g)| (g.to_string(), p.to_string())).ok_or_else(|| {
                    kubectl_backup_core::Error::invalid(
                        "--workspace-resource",
                        r.as_str(),
                        "expected <plural>.<group>, e.g. workspaces.example.org",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            ephemeral: parse_patterns("--ephemeral-pattern", ephemeral)?,
            selector: selector.map(LabelSelector::parse).transpose()?,
            excluded,
            workspace_resources,
        })
    }

    /// Whether an object of this kind is a workspace (a Namespace, or a configured resource).
    pub fn is_workspace_kind(&self, group: &str, plural: &str) -> bool {
        (group.is_empty() && plural == "namespaces")
            || self.workspace_resources.iter().any(|(g, p)| g == group && p == plural)
    }
}

/// The decision for a new workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a workspace (system namespace, own namespace, selector does not match).
    NotAWorkspace,
    /// Ephemeral: labelled, never backed up, never restored.
    Ephemeral,
    /// A backup has it: restore from this backup.
    Restore(String),
    /// A workspace with no backup.
    Nothing,
    /// A Backup or Restore request: marked with its creator and spec.
    Request,
}

/// Decides for a workspace named `name` with these labels and annotations.
pub fn decide(
    policy: &Policy,
    name: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    index: &Index,
) -> Decision {
    if policy.excluded.contains(name) {
        return Decision::NotAWorkspace;
    }
    if policy.selector.as_ref().is_some_and(|s| !s.matches(labels)) {
        return Decision::NotAWorkspace;
    }
    let asked = annotations.get(EPHEMERAL_ANNOTATION).is_some_and(|v| v == "true")
        || labels.get(EPHEMERAL_LABEL).is_some_and(|v| v == "true");
    if asked || policy.ephemeral.iter().any(|p| p.matches(name)) {
        return Decision::Ephemeral;
    }
    match index.newest(name) {
        Some(backup) => Decision::Restore(backup),
        None => Decision::Nothing,
    }
}

/// Annotations only this component writes. A creator who sets them gets them removed: only the
/// webhook decides whether and from what a workspace is restored.
pub const OUR_ANNOTATIONS: [&str; 4] =
    [RESTORE_FROM_ANNOTATION, RESTORE_STATUS_ANNOTATION, MARK_ANNOTATION, RESTORE_ATTEMPTS_ANNOTATION];

/// Answers one admission request. Never denies: at worst it allows without a patch.
///
/// For a new workspace it removes any of [`OUR_ANNOTATIONS`] the creator set, and for one that is
/// not ephemeral adds a [`Mark`] signed with `key`: the requester as the API server authenticated
/// them, and the time, from which the restore worker picks the newest earlier backup. The
/// `restore-from` annotation it adds (when the index knows a backup) is for people; the worker
/// trusts only the mark.
pub fn mutate(
    req: &AdmissionRequest<DynamicObject>,
    policy: &Policy,
    index: &Index,
    key: &Key,
    now: Timestamp,
) -> (AdmissionResponse, Decision) {
    let resp = AdmissionResponse::from(req);
    if req.operation == Operation::Create && request_kind(&req.resource.group, &req.resource.resource).is_some() {
        return (mark_request(req, key, now), Decision::Request);
    }
    if req.operation != Operation::Create || !policy.is_workspace_kind(&req.resource.group, &req.resource.resource) {
        return (resp, Decision::NotAWorkspace);
    }
    let Some(obj) = &req.object else { return (resp, Decision::NotAWorkspace) };
    let name = obj.metadata.name.clone().unwrap_or_else(|| req.name.clone());
    if name.is_empty() {
        return (resp, Decision::NotAWorkspace); // generateName: the name is not known yet
    }
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    let mut annotations = obj.metadata.annotations.clone().unwrap_or_default();
    let mut ops = Vec::new();
    let mut ignored = Vec::new();
    for k in OUR_ANNOTATIONS {
        if annotations.remove(k).is_some() {
            ops.push(PatchOperation::Remove(RemoveOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations", k]),
            }));
            ignored.push(k.to_string());
        }
    }
    // Created by a restore (the worker's, as the workspace's creator): not a new workspace.
    let decision = if labels.contains_key(kubectl_backup_core::RESTORED_FROM_LABEL) {
        Decision::NotAWorkspace
    } else {
        decide(policy, &name, &labels, &annotations, index)
    };
    match &decision {
        Decision::Ephemeral if labels.get(EPHEMERAL_LABEL).map(String::as_str) != Some("true") => {
            ops.extend(add_key(obj.metadata.labels.is_none(), "labels", EPHEMERAL_LABEL, "true").0);
        }
        Decision::Restore(_) | Decision::Nothing => {
            let kind = if req.resource.group.is_empty() {
                req.resource.resource.clone()
            } else {
                format!("{}.{}", req.resource.resource, req.resource.group)
            };
            let u = &req.user_info;
            let is_namespace = req.resource.group.is_empty() && req.resource.resource == "namespaces";
            let mark = Mark {
                kind,
                namespace: obj
                    .metadata
                    .namespace
                    .clone()
                    .or_else(|| req.namespace.clone())
                    .filter(|n| !n.is_empty() && !is_namespace),
                name: name.clone(),
                requester: Requester {
                    user: u.username.clone().unwrap_or_default(),
                    groups: u.groups.clone().unwrap_or_default(),
                    extra: u.extra.clone().unwrap_or_default().into_iter().collect(),
                },
                at: now,
                ignored,
                spec: None,
            };
            let missing = obj.metadata.annotations.is_none();
            ops.extend(add_key(missing, "annotations", MARK_ANNOTATION, &key.sign(&mark)).0);
            if let Decision::Restore(backup) = &decision {
                ops.extend(add_key(false, "annotations", RESTORE_FROM_ANNOTATION, backup).0);
            }
        }
        _ => {}
    }
    if ops.is_empty() {
        return (resp, decision);
    }
    let resp = match resp.clone().with_patch(Patch(ops)) {
        Ok(r) => r,
        Err(_) => resp,
    };
    (resp, decision)
}

/// The mark's kind of a Backup or Restore request resource, or `None` for any other resource.
pub fn request_kind(group: &str, plural: &str) -> Option<&'static str> {
    use kubectl_backup_core::requests::{BACKUP_RESOURCE, RESTORE_RESOURCE};
    match (group, plural) {
        (kubectl_backup_core::GROUP, "backups") => Some(BACKUP_RESOURCE),
        (kubectl_backup_core::GROUP, "restores") => Some(RESTORE_RESOURCE),
        _ => None,
    }
}

/// Marks a new Backup or Restore request with who created it and the digest of its spec, signed:
/// the controller acts on a request only with a valid mark, as the person it names (a restore),
/// and only on the spec it names. A mark the creator set themselves is removed. Denied: a request
/// without a name yet (`generateName`: the mark is bound to the name) or whose spec does not parse.
fn mark_request(req: &AdmissionRequest<DynamicObject>, key: &Key, now: Timestamp) -> AdmissionResponse {
    use kubectl_backup_core::requests::{BackupRequestSpec, RestoreRequestSpec};
    let resp = AdmissionResponse::from(req);
    let Some(obj) = &req.object else { return resp };
    let kind = request_kind(&req.resource.group, &req.resource.resource).unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_else(|| req.name.clone());
    if name.is_empty() {
        return resp.deny(format!(
            "{kind}: give the request a name (metadata.name); generateName is not supported, as the controller binds the request to its name"
        ));
    }
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let digest = if kind == kubectl_backup_core::requests::BACKUP_RESOURCE {
        serde_json::from_value::<BackupRequestSpec>(spec).map(|s| crate::mark::spec_digest(&s))
    } else {
        serde_json::from_value::<RestoreRequestSpec>(spec).map(|s| crate::mark::spec_digest(&s))
    };
    let digest = match digest {
        Ok(d) => d,
        Err(e) => return resp.deny(format!("{kind} {name}: spec: {e}")),
    };
    let mut ops = Vec::new();
    let mut ignored = Vec::new();
    if obj.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MARK_ANNOTATION)) {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", MARK_ANNOTATION]),
        }));
        ignored.push(MARK_ANNOTATION.to_string());
    }
    let u = &req.user_info;
    let mark = Mark {
        kind: kind.to_string(),
        namespace: obj.metadata.namespace.clone().or_else(|| req.namespace.clone()),
        name,
        requester: Requester {
            user: u.username.clone().unwrap_or_default(),
            groups: u.groups.clone().unwrap_or_default(),
            extra: u.extra.clone().unwrap_or_default().into_iter().collect(),
        },
        at: now,
        ignored,
        spec: Some(digest),
    };
    // A forged mark removed above leaves its map, which the add fills again.
    ops.extend(add_key(obj.metadata.annotations.is_none(), "annotations", MARK_ANNOTATION, &key.sign(&mark)).0);
    resp.clone().with_patch(Patch(ops)).unwrap_or(resp)
}

/// A patch adding `metadata.<map>.<key> = value`, creating the map first when the object has none.
fn add_key(map_missing: bool, map: &str, key: &str, value: &str) -> Patch {
    let mut ops = Vec::new();
    if map_missing {
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", map]),
            value: Value::Object(Default::default()),
        }));
    }
    ops.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(["metadata", map, key]),
        value: Value::String(value.to_string()),
    }));
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::json;

    fn review(name: &str, labels: Value, annotations: Value, dry_run: bool) -> AdmissionRequest<DynamicObject> {
        let mut meta = json!({"name": name});
        if !labels.is_null() {
            meta["labels"] = labels;
        }
        if !annotations.is_null() {
            meta["annotations"] = annotations;
        }
        let r: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Namespace"},
                "resource": {"group": "", "version": "v1", "resource": "namespaces"},
                "name": name, "operation": "CREATE", "userInfo": {"username": "alice"},
                "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": meta},
                "dryRun": dry_run
            }
        }))
        .unwrap();
        r.try_into().unwrap()
    }

    fn key() -> Key {
        Key::new(&[1; 32])
    }

    fn at() -> Timestamp {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    fn mutate(req: &AdmissionRequest<DynamicObject>, policy: &Policy, index: &Index) -> (AdmissionResponse, Decision) {
        super::mutate(req, policy, index, &key(), at())
    }

    /// The mark the patched object carries, opened with the test key.
    fn mark_of(obj: &Value) -> Mark {
        key().open(obj["metadata"]["annotations"][MARK_ANNOTATION].as_str().expect("a mark")).unwrap()
    }

    fn policy() -> Policy {
        Policy::new(&["pr-*".into()], None, "kubectl-backup", &[]).unwrap()
    }

    fn index_with(ns: &str, backup: &str) -> Index {
        let i = Index::default();
        i.replace([(ns.to_string(), Timestamp::UNIX_EPOCH, backup.to_string())]);
        i
    }

    /// Applies the response's patch to the request's object, as the API server would.
    fn patched(req: &AdmissionRequest<DynamicObject>, resp: &AdmissionResponse) -> Value {
        let mut obj = serde_json::to_value(req.object.as_ref().unwrap()).unwrap();
        if let Some(p) = &resp.patch {
            let patch: Patch = serde_json::from_slice(p).unwrap();
            json_patch::patch(&mut obj, &patch).unwrap();
        }
        obj
    }

    #[test]
    fn ephemeral_by_pattern_gets_the_label_even_without_labels() {
        let req = review("pr-42", Value::Null, Value::Null, false);
        let (resp, d) = mutate(&req, &policy(), &index_with("pr-42", "b1"));
        assert_eq!(d, Decision::Ephemeral);
        assert!(resp.allowed);
        let obj = patched(&req, &resp);
        assert_eq!(obj["metadata"]["labels"]["kubectl-backup.dev/ephemeral"], "true");
        assert!(obj["metadata"].get("annotations").is_none(), "an ephemeral workspace is never restored");
    }

    #[test]
    fn ephemeral_by_annotation_keeps_existing_labels() {
        let req = review("feature-x", json!({"team": "a"}), json!({"kubectl-backup.dev/ephemeral": "true"}), false);
        let (resp, d) = mutate(&req, &policy(), &Index::default());
        assert_eq!(d, Decision::Ephemeral);
        let obj = patched(&req, &resp);
        assert_eq!(obj["metadata"]["labels"], json!({"team": "a", "kubectl-backup.dev/ephemeral": "true"}));
    }

    #[test]
    fn a_backed_up_namespace_gets_restore_from() {
        let req = review("shop", json!({"team": "a"}), Value::Null, false);
        let (resp, d) = mutate(&req, &policy(), &index_with("shop", "nightly-20240101000000"));
        assert_eq!(d, Decision::Restore("nightly-20240101000000".into()));
        let obj = patched(&req, &resp);
        assert_eq!(obj["metadata"]["annotations"]["kubectl-backup.dev/restore-from"], "nightly-20240101000000");
        assert_eq!(obj["metadata"]["labels"], json!({"team": "a"}));
        assert_eq!(mark_of(&obj).requester, Requester { user: "alice".into(), ..Default::default() });
    }

    #[test]
    fn no_backup_gets_a_mark_only_and_dry_run_gets_the_same_decision() {
        let req = review("new-one", Value::Null, Value::Null, false);
        let (resp, d) = mutate(&req, &policy(), &Index::default());
        assert_eq!((d, resp.allowed), (Decision::Nothing, true));
        let obj = patched(&req, &resp);
        assert!(obj["metadata"]["annotations"].get(RESTORE_FROM_ANNOTATION).is_none());
        // The worker checks the location again for this one: the mark says who and when.
        let m = mark_of(&obj);
        assert_eq!((m.name.as_str(), m.requester.user.as_str(), m.at), ("new-one", "alice", at()));
        let idx = index_with("shop", "b");
        let wet = mutate(&review("shop", Value::Null, Value::Null, false), &policy(), &idx);
        let dry = mutate(&review("shop", Value::Null, Value::Null, true), &policy(), &idx);
        assert_eq!((wet.1, wet.0.patch), (dry.1, dry.0.patch));
    }

    #[test]
    fn system_and_own_namespaces_are_never_mutated() {
        let idx = Index::default();
        idx.replace([
            ("kube-system".to_string(), Timestamp::UNIX_EPOCH, "b".to_string()),
            ("kubectl-backup".to_string(), Timestamp::UNIX_EPOCH, "b".to_string()),
        ]);
        for ns in ["kube-system", "kube-public", "kube-node-lease", "kubectl-backup"] {
            let (resp, d) = mutate(&review(ns, Value::Null, Value::Null, false), &policy(), &idx);
            assert_eq!(d, Decision::NotAWorkspace, "{ns}");
            assert!(resp.patch.is_none(), "{ns} was mutated");
        }
        // even if they match the ephemeral pattern
        let p = Policy::new(&["kube-*".into()], None, "kubectl-backup", &[]).unwrap();
        assert!(mutate(&review("kube-system", Value::Null, Value::Null, false), &p, &idx).0.patch.is_none());
    }

    #[test]
    fn the_workspace_selector_limits_what_is_a_workspace() {
        let p = Policy::new(&[], Some("tenant"), "kubectl-backup", &[]).unwrap();
        let idx = index_with("shop", "b");
        assert_eq!(mutate(&review("shop", Value::Null, Value::Null, false), &p, &idx).1, Decision::NotAWorkspace);
        assert_eq!(
            mutate(&review("shop", json!({"tenant": "x"}), Value::Null, false), &p, &idx).1,
            Decision::Restore("b".into())
        );
    }

    #[test]
    fn marks_the_creator_set_are_removed_and_recorded_in_the_webhooks_own_mark() {
        // Another user's valid-looking mark, a chosen backup and a finished status: all removed.
        let forged = Key::new(&[9; 32]).sign(&Mark {
            kind: "namespaces".into(),
            namespace: None,
            name: "shop".into(),
            requester: Requester { user: "admin".into(), groups: vec!["system:masters".into()], ..Default::default() },
            at: at(),
            ignored: vec![],
            spec: None,
        });
        let req = review(
            "shop",
            Value::Null,
            json!({"kubectl-backup.dev/restore-from": "someone-elses-backup", "kubectl-backup.dev/restore-status": "Completed",
                   MARK_ANNOTATION: forged, "keep": "me"}),
            false,
        );
        let (resp, d) = mutate(&req, &policy(), &Index::default());
        assert_eq!(d, Decision::Nothing);
        let obj = patched(&req, &resp);
        let a = &obj["metadata"]["annotations"];
        assert!(a.get(RESTORE_FROM_ANNOTATION).is_none() && a.get(RESTORE_STATUS_ANNOTATION).is_none(), "{a}");
        assert_eq!(a["keep"], "me");
        let m = mark_of(&obj);
        assert_eq!(m.requester.user, "alice", "the mark names the authenticated creator, not the forged one");
        assert_eq!(m.ignored, vec![RESTORE_FROM_ANNOTATION, RESTORE_STATUS_ANNOTATION, MARK_ANNOTATION]);
        // With a backup known, the webhook's own choice replaces the creator's.
        let (resp, d) = mutate(&req, &policy(), &index_with("shop", "nightly"));
        assert_eq!(d, Decision::Restore("nightly".into()));
        assert_eq!(patched(&req, &resp)["metadata"]["annotations"][RESTORE_FROM_ANNOTATION], "nightly");
    }

    #[test]
    fn namespaces_created_by_a_restore_are_left_alone() {
        let req = review("shop", json!({"kubectl-backup.dev/restored-from": "b"}), Value::Null, false);
        assert!(mutate(&req, &policy(), &index_with("shop", "b")).0.patch.is_none());
    }

    #[test]
    fn label_keys_with_slashes_are_escaped_in_the_pointer() {
        let p = add_key(false, "labels", "kubectl-backup.dev/ephemeral", "true");
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("/metadata/labels/kubectl-backup.dev~1ephemeral"), "{text}");
    }

    #[test]
    fn workspace_resources_are_workspaces_too() {
        let p = Policy::new(&[], None, "kubectl-backup", &["workspaces.tenancy.example.org".into()]).unwrap();
        assert!(p.is_workspace_kind("tenancy.example.org", "workspaces"));
        assert!(!p.is_workspace_kind("tenancy.example.org", "widgets"));
        assert!(Policy::new(&[], None, "x", &["noplural".into()]).is_err());
    }

    fn request_review(name: &str, spec: Value, annotations: Value) -> AdmissionRequest<DynamicObject> {
        let mut meta = json!({"namespace": "team-a"});
        if !name.is_empty() {
            meta["name"] = json!(name);
        }
        if !annotations.is_null() {
            meta["annotations"] = annotations;
        }
        let r: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-2", "kind": {"group": "kubectl-backup.dev", "version": "v1alpha1", "kind": "Restore"},
                "resource": {"group": "kubectl-backup.dev", "version": "v1alpha1", "resource": "restores"},
                "name": name, "namespace": "team-a", "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["devs"]},
                "object": {"apiVersion": "kubectl-backup.dev/v1alpha1", "kind": "Restore", "metadata": meta, "spec": spec}
            }
        }))
        .unwrap();
        r.try_into().unwrap()
    }

    #[test]
    fn requests_are_marked_with_their_creator_and_the_digest_of_their_spec() {
        use kubectl_backup_core::requests::RestoreRequestSpec;
        let spec = json!({"backupName": "b", "includedNamespaces": ["team-a"]});
        let forged = Key::new(&[9; 32]).sign(&mark_of_user("admin"));
        let req = request_review("r1", spec.clone(), json!({MARK_ANNOTATION: forged}));
        let (resp, decision) = mutate(&req, &policy(), &Index::default());
        assert_eq!(decision, Decision::Request);
        let mark = mark_of(&patched(&req, &resp));
        assert_eq!(mark.kind, "restores.kubectl-backup.dev");
        assert_eq!(mark.namespace.as_deref(), Some("team-a"));
        assert_eq!(mark.requester.user, "alice");
        assert_eq!(mark.ignored, vec![MARK_ANNOTATION.to_string()]);
        let typed: RestoreRequestSpec = serde_json::from_value(spec).unwrap();
        assert_eq!(mark.spec, Some(crate::mark::spec_digest(&typed)));
        // Another spec has another digest; key order does not matter.
        let reordered: RestoreRequestSpec =
            serde_json::from_value(json!({"includedNamespaces": ["team-a"], "backupName": "b"})).unwrap();
        assert_eq!(crate::mark::spec_digest(&reordered), crate::mark::spec_digest(&typed));
        let other: RestoreRequestSpec = serde_json::from_value(json!({"backupName": "c"})).unwrap();
        assert_ne!(crate::mark::spec_digest(&other), crate::mark::spec_digest(&typed));
        // generateName cannot be marked (the mark is bound to the name): denied, saying why.
        let (resp, _) =
            mutate(&request_review("", json!({"backupName": "b"}), Value::Null), &policy(), &Index::default());
        assert!(!resp.allowed);
        assert!(resp.result.message.contains("generateName is not supported"), "{}", resp.result.message);
        // A spec that does not parse is denied with the reason.
        let (resp, _) =
            mutate(&request_review("r2", json!({"backupName": 7}), Value::Null), &policy(), &Index::default());
        assert!(
            !resp.allowed && resp.result.message.contains("restores.kubectl-backup.dev r2: spec:"),
            "{}",
            resp.result.message
        );
    }

    fn mark_of_user(user: &str) -> Mark {
        Mark {
            kind: "restores.kubectl-backup.dev".into(),
            namespace: Some("team-a".into()),
            name: "r1".into(),
            requester: Requester { user: user.into(), ..Default::default() },
            at: at(),
            ignored: vec![],
            spec: None,
        }
    }
}
