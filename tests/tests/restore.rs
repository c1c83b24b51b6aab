//! `kubectl backup restore` on the real control plane: a realistic app round trip, namespace
//! mapping, skip vs update, dry-run, refusal of damaged backups, another cluster, and RBAC.

use std::path::Path;

use kubectl_backup_e2e::control_plane::ControlPlane;
use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{
    Tools, namespace, rewrite_contents, sample_app, unique, user_role, wait_crd, widget, widget_crd,
};
use serde_json::{Value, json};

fn env() -> (SharedEnv, Tools) {
    let env = SharedEnv::load().expect("shared environment");
    let tools = Tools::new(&env.cluster);
    (env, tools)
}

/// The parts of an object a restore must bring back, with server-owned fields removed.
fn essence(v: &Value) -> Value {
    let mut v = v.clone();
    let o = v.as_object_mut().unwrap();
    o.remove("status");
    let m = o.get_mut("metadata").unwrap().as_object_mut().unwrap();
    for k in
        ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink", "ownerReferences"]
    {
        m.remove(k);
    }
    if let Some(labels) = m.get_mut("labels").and_then(Value::as_object_mut) {
        labels.remove("kubectl-backup.dev/restored-from");
        if labels.is_empty() {
            m.remove("labels");
        }
    }
    if let Some(ann) = m.get_mut("annotations").and_then(Value::as_object_mut) {
        // Written by controllers and kubectl, not part of what the user declared.
        ann.remove("deployment.kubernetes.io/revision");
        ann.remove("kubectl.kubernetes.io/last-applied-configuration");
        ann.remove("pv.kubernetes.io/bind-completed");
        if ann.is_empty() {
            m.remove("annotations");
        }
    }
    if o.get("kind") == Some(&json!("Service")) {
        let spec = o.get_mut("spec").unwrap().as_object_mut().unwrap();
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if o.get("kind") == Some(&json!("ServiceAccount")) {
        o.remove("secrets");
    }
    v
}

fn get(t: &Tools, kind: &str, ns: &str, name: &str) -> Value {
    t.get_json(&[kind, name, "-n", ns])
}

const APP_OBJECTS: &[(&str, &str)] = &[
    ("configmap", "settings"),
    ("secret", "credentials"),
    ("serviceaccount", "web"),
    ("role", "reader"),
    ("rolebinding", "web-reads"),
    ("deployment", "web"),
    ("service", "web"),
    ("persistentvolumeclaim", "data"),
];

#[test]
fn a_realistic_app_comes_back_field_by_field() {
    let (env, tools) = env();
    let ns = unique("app");
    let group = format!("{}.example.org", unique("rt"));
    tools.apply(&sample_app(&ns)).ok();
    tools.apply(&widget_crd(&group)).ok();
    wait_crd(&tools, &format!("widgets.{group}"));
    tools.apply(&widget(&group, &ns, "blue")).ok();
    let mut before: Vec<(String, Value)> =
        APP_OBJECTS.iter().map(|(k, n)| (format!("{k}/{n}"), essence(&get(&tools, k, &ns, n)))).collect();
    before.push(("widget".into(), essence(&get(&tools, &format!("widgets.{group}"), &ns, "blue"))));
    let crd_before = essence(&tools.get_json(&["crd", &format!("widgets.{group}")]));
    let ns_before = essence(&tools.get_json(&["namespace", &ns]));

    let t = tools.with_store(&env.s3, &unique("rt"));
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();
    tools.delete_namespace(&ns);
    tools.kubectl(&["delete", "crd", &format!("widgets.{group}"), "--wait=true"]).ok();

    let r = t.backup(&["restore", &name, "-o", "json"]).ok().json();
    assert_eq!(r["kind"], "Restore");
    assert_eq!(r["status"]["phase"], "Completed", "{}", r["status"]);
    assert_eq!(r["spec"]["backupName"], name.as_str());
    let counts = &r["status"]["counts"];
    assert_eq!(counts["failed"], 0);
    assert!(counts["created"].as_u64().unwrap() >= 11, "{counts}");
    // Owned and controller-made objects were skipped with a reason.
    let items = r["status"]["items"].as_array().unwrap();
    let rs = items.iter().find(|i| i["resource"] == "replicasets.apps").expect("the ReplicaSet is reported");
    assert_eq!(rs["action"], "skippedPolicy");
    assert!(rs["reason"].as_str().unwrap().contains("Deployment/web"));
    assert!(items.iter().any(|i| i["name"] == "kube-root-ca.crt" && i["action"] == "skippedPolicy"));
    assert!(items.iter().filter(|i| i["resource"] == "pods").all(|i| i["action"] == "skippedPolicy"));
    assert_eq!(r["status"]["progress"]["totalItems"].as_u64().unwrap(), items.len() as u64);

    for (key, want) in &before {
        let (kind, name) = key.split_once('/').unwrap_or((key.as_str(), "blue"));
        let kind = if kind == "widget" { format!("widgets.{group}") } else { kind.to_string() };
        let live = get(&tools, &kind, &ns, name);
        assert_eq!(live["metadata"]["labels"]["kubectl-backup.dev/restored-from"], name_of(&r), "{key} not labelled");
        assert_eq!(&essence(&live), want, "{key} differs after restore");
    }
    assert_eq!(essence(&tools.get_json(&["crd", &format!("widgets.{group}")])), crd_before);
    assert_eq!(essence(&tools.get_json(&["namespace", &ns])), ns_before);
    // The controllers recreate what was skipped.
    let rs = tools.names(&["replicasets", "-n", &ns]);
    assert_eq!(rs.len(), 1, "{rs:?}");
    tools.delete_namespace(&ns);
    tools.kubectl(&["delete", "crd", &format!("widgets.{group}")]).ok();
}

fn name_of(r: &Value) -> Value {
    r["spec"]["backupName"].clone()
}

#[test]
fn namespace_mapping_rewrites_objects_and_binding_subjects() {
    let (env, tools) = env();
    let src = unique("src");
    let dst = unique("dst");
    tools.apply(&sample_app(&src)).ok();
    tools
        .apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {src}-view\nsubjects:\n- kind: ServiceAccount\n  name: web\n  namespace: {src}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\n"
        ))
        .ok();
    let t = tools.with_store(env.azure(), &unique("map"));
    let name = unique("b");
    t.backup(&[
        "create",
        &name,
        "--include-namespaces",
        &src,
        "--include-cluster-resources=true",
        "--include-resources",
        "configmaps,rolebindings,clusterrolebindings,namespaces,serviceaccounts",
    ])
    .ok();
    // Restore only what belongs to src, into dst; the ClusterRoleBinding is renamed-in-place by subject.
    let mapping = format!("{src}:{dst}");
    let r = t
        .backup(&[
            "restore",
            &name,
            "--namespace-mapping",
            &mapping,
            "--include-resources",
            "configmaps,rolebindings,serviceaccounts,namespaces",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["status"]["phase"], "Completed", "{}", r["status"]);
    let rb = get(&tools, "rolebinding", &dst, "web-reads");
    assert_eq!(rb["subjects"][0]["namespace"], dst.as_str());
    assert_eq!(get(&tools, "configmap", &dst, "settings")["data"]["color"], "blue");
    assert!(tools.names(&["serviceaccounts", "-n", &dst]).contains(&"web".to_string()));
    // The source namespace is untouched.
    assert!(
        get(&tools, "rolebinding", &src, "web-reads")["metadata"]["labels"]
            .get("kubectl-backup.dev/restored-from")
            .is_none()
    );
    // Cluster-scoped subjects are mapped too: restore the ClusterRoleBinding with the mapping
    // after deleting it.
    tools.kubectl(&["delete", "clusterrolebinding", &format!("{src}-view")]).ok();
    t.backup(&[
        "restore",
        &name,
        "--namespace-mapping",
        &mapping,
        "--include-resources",
        "clusterrolebindings",
        "--include-cluster-resources=true",
    ])
    .ok();
    let crb = tools.get_json(&["clusterrolebinding", &format!("{src}-view")]);
    assert_eq!(crb["subjects"][0]["namespace"], dst.as_str());
    tools.kubectl(&["delete", "clusterrolebinding", &format!("{src}-view")]).ok();
    tools.delete_namespace(&src);
    tools.delete_namespace(&dst);
}

#[test]
fn existing_objects_are_skipped_or_updated() {
    let (env, tools) = env();
    let ns = unique("exist");
    tools.apply(&sample_app(&ns)).ok();
    let t = tools.with_store(env.gcs(), &unique("exist"));
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();
    tools.kubectl(&["-n", &ns, "patch", "configmap", "settings", "-p", r#"{"data":{"color":"red"}}"#]).ok();

    // skip (default): untouched and reported, with what differs.
    let r = t.backup(&["restore", &name, "-o", "json"]).ok().json();
    assert_eq!(get(&tools, "configmap", &ns, "settings")["data"]["color"], "red");
    let item = r["status"]["items"].as_array().unwrap().iter().find(|i| i["name"] == "settings").unwrap().clone();
    assert_eq!(item["action"], "skippedExists");
    assert!(item["diff"].to_string().contains("/data/color"), "{item}");
    assert!(r["status"]["counts"]["skippedExists"].as_u64().unwrap() >= 8);
    assert_eq!(r["status"]["counts"]["created"], 0);

    // update: back to the backed-up state, and the report says what changed.
    let r = t.backup(&["restore", &name, "--existing", "update", "-o", "json"]).ok().json();
    assert_eq!(get(&tools, "configmap", &ns, "settings")["data"]["color"], "blue");
    let item = r["status"]["items"].as_array().unwrap().iter().find(|i| i["name"] == "settings").unwrap().clone();
    assert_eq!(item["action"], "updated");
    assert_eq!(item["diff"][0]["path"], "/data/color");
    assert_eq!(r["status"]["counts"]["updated"], 1, "only the changed object is updated: {}", r["status"]["counts"]);
    // The human summary lists it.
    tools.kubectl(&["-n", &ns, "patch", "configmap", "settings", "-p", r#"{"data":{"color":"green"}}"#]).ok();
    let out = t.backup(&["restore", &name, "--existing", "update"]).ok().stdout;
    assert!(out.contains("Updated") && out.contains("settings") && out.contains("/data/color"), "{out}");
    tools.delete_namespace(&ns);
}

#[test]
fn dry_run_writes_nothing_and_shows_a_diff() {
    let (env, tools) = env();
    let ns = unique("dry");
    tools.apply(&sample_app(&ns)).ok();
    let t = tools.with_store(&env.s3, &unique("dry"));
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();

    // Existing objects: diff shown, nothing changed.
    tools.kubectl(&["-n", &ns, "patch", "configmap", "settings", "-p", r#"{"data":{"color":"red"}}"#]).ok();
    let rv_before = get(&tools, "configmap", &ns, "settings")["metadata"]["resourceVersion"].clone();
    let out = t.backup(&["restore", &name, "--dry-run", "--existing", "update"]).ok().stdout;
    assert!(
        out.contains("nothing was written") && out.contains("would update") && out.contains("/data/color"),
        "{out}"
    );
    let after = get(&tools, "configmap", &ns, "settings");
    assert_eq!(after["data"]["color"], "red");
    assert_eq!(after["metadata"]["resourceVersion"], rv_before, "a dry run changed the object");

    // Missing objects: the API server validates them, nothing is created.
    tools.kubectl(&["-n", &ns, "delete", "configmap/settings", "secret/credentials"]).ok();
    let r = t.backup(&["restore", &name, "--dry-run", "-o", "json"]).ok().json();
    assert_eq!(r["spec"]["dryRun"], true);
    assert_eq!(r["status"]["counts"]["wouldCreate"], 2, "{}", r["status"]["counts"]);
    assert_eq!(r["status"]["counts"]["created"], 0);
    assert!(!tools.names(&["configmaps", "-n", &ns]).contains(&"settings".to_string()));
    // A whole namespace that does not exist: nothing is created, not even the namespace.
    let gone = unique("gone");
    let r = t
        .backup(&["restore", &name, "--dry-run", "--namespace-mapping", &format!("{ns}:{gone}"), "-o", "json"])
        .ok()
        .json();
    assert!(r["status"]["counts"]["wouldCreate"].as_u64().unwrap() >= 9, "{}", r["status"]["counts"]);
    let missing = tools.kubectl(&["get", "namespace", &gone]);
    assert_ne!(missing.code, 0, "a dry run created the namespace");
    tools.delete_namespace(&ns);
}

/// Finds the single archive file of a backup in a `file://` location.
fn archive_of(dir: &Path, backup: &str) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("backups").join(backup))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("archive-"))
        .expect("an archive file")
}

#[test]
fn damaged_backups_are_refused_before_any_write() {
    let (env, tools) = env();
    let ns = unique("dmg");
    tools.apply(&sample_app(&ns)).ok();
    let dir = env.scratch.join(unique("dmg"));
    let mut t = tools.clone();
    t.location = Some(format!("file://{}", dir.display()));
    let names: Vec<String> = (0..4).map(|_| unique("b")).collect();
    for n in &names {
        t.backup(&["create", n, "-n", &ns]).ok();
    }
    tools.delete_namespace(&ns);

    // 1. A flipped byte in the archive.
    let a = archive_of(&dir, &names[0]);
    let mut bytes = std::fs::read(&a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&a, &bytes).unwrap();
    // 2. A truncated archive.
    let a = archive_of(&dir, &names[1]);
    let bytes = std::fs::read(&a).unwrap();
    std::fs::write(&a, &bytes[..bytes.len() / 2]).unwrap();
    // 3. An entry whose digest in the contents file does not match (archive intact, contents file
    // consistent with the metadata).
    let key = format!("resources/configmaps/namespaces/{ns}/settings.json");
    rewrite_contents(&dir, &names[2], |lines| {
        let line = lines.iter_mut().find(|l| l["path"] == key.as_str()).expect("settings.json is listed");
        line["sha256"] = json!("0".repeat(64));
    });
    // 4. No metadata (uncommitted).
    std::fs::remove_file(dir.join("backups").join(&names[3]).join("metadata.json")).unwrap();

    for (n, needle) in
        [(&names[0], "SHA-256"), (&names[1], "bytes"), (&names[2], "settings.json"), (&names[3], "not found")]
    {
        let r = t.backup(&["restore", n]);
        assert_ne!(r.code, 0, "{n} was restored");
        assert!(r.stderr.contains(n.as_str()) && r.stderr.contains(needle), "{n}: {:?} not in {}", needle, r.stderr);
        let ns_exists = tools.kubectl(&["get", "namespace", &ns]);
        assert_ne!(ns_exists.code, 0, "restoring {n} wrote to the cluster before refusing");
    }
}

#[test]
fn an_archive_with_an_escaping_entry_is_refused() {
    let (env, tools) = env();
    let ns = unique("esc");
    tools.apply(&sample_app(&ns)).ok();
    let dir = env.scratch.join(unique("esc"));
    let mut t = tools.clone();
    t.location = Some(format!("file://{}", dir.display()));
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();
    tools.delete_namespace(&ns);
    // Replace the archive by one with an entry named "resources/../../evil.json", listed in the
    // metadata with its correct digest and the archive's correct size and SHA-256: only the path check can refuse it.
    let body =
        b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"evil\",\"namespace\":\"default\"}}"
            .to_vec();
    let mut raw = Vec::new();
    {
        let enc = zstd::Encoder::new(&mut raw, 3).unwrap().auto_finish();
        let mut tar = tar::Builder::new(enc);
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let evil = b"resources/../../evil.json";
        h.as_old_mut().name[..evil.len()].copy_from_slice(evil);
        h.set_cksum();
        tar.append(&h, body.as_slice()).unwrap();
        tar.finish().unwrap();
    }
    let archive = archive_of(&dir, &name);
    std::fs::write(&archive, &raw).unwrap();
    rewrite_contents(&dir, &name, |lines| {
        *lines = vec![json!({ "path": "resources/../../evil.json", "sha256": sha256_hex(&body), "size": body.len() })];
    });
    let meta_path = dir.join("backups").join(&name).join("metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["backup"]["status"]["archive"]["size"] = json!(raw.len());
    meta["backup"]["status"]["archive"]["sha256"] = json!(sha256_hex(&raw));
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let r = t.backup(&["restore", &name]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("'..'") && r.stderr.contains(&name), "{}", r.stderr);
    assert_ne!(tools.kubectl(&["-n", "default", "get", "configmap", "evil"]).code, 0);
}

fn sha256_hex(b: &[u8]) -> String {
    kubectl_backup_core::archive::sha256_hex(b)
}

#[test]
fn restore_into_a_second_cluster() {
    let (env, tools) = env();
    let ns = unique("move");
    tools.apply(&sample_app(&ns)).ok();
    let t = tools.with_store(&env.s3, &unique("move"));
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();

    let dir = env.scratch.join(unique("second"));
    let second = ControlPlane::start(&dir).expect("a second control plane");
    let other = t.as_user(&second.info.kubeconfig);
    assert_ne!(
        tools.kubectl(&["--kubeconfig", second.info.kubeconfig.to_str().unwrap(), "get", "namespace", &ns]).code,
        0
    );
    let r = other.backup(&["restore", &name, "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{}", r["status"]);
    let o = Tools::new(&second.info);
    for (kind, obj) in APP_OBJECTS {
        assert_eq!(
            essence(&get(&o, kind, &ns, obj)),
            essence(&get(&tools, kind, &ns, obj)),
            "{kind}/{obj} differs in the second cluster"
        );
    }
    tools.delete_namespace(&ns);
}

#[test]
fn an_unprivileged_restore_reports_forbidden_objects_and_restores_the_rest() {
    let (env, tools) = env();
    let ns = unique("rbac");
    tools.apply(&sample_app(&ns)).ok();
    let t = tools.with_store(&env.s3, &unique("rbac"));
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();
    tools.delete_namespace(&ns);
    // bob may create ConfigMaps in the (re-created, empty) namespace and nothing else.
    tools.apply(&namespace(&ns)).ok();
    tools.apply(&user_role(&ns, "bob", "cm-writer", &["configmaps"], &["get", "list", "create"])).ok();
    let bob = t.as_user(&env.cluster.user("bob").kubeconfig);
    let run = bob.backup(&["restore", &name, "-n", &ns, "-o", "json"]);
    assert_eq!(run.code, 3, "PartiallyFailed exits 3: {} {}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["status"]["phase"], "PartiallyFailed");
    let items = r["status"]["items"].as_array().unwrap();
    let settings = items.iter().find(|i| i["name"] == "settings").unwrap();
    assert_eq!(settings["action"], "created");
    let secret = items.iter().find(|i| i["name"] == "credentials").unwrap();
    assert_eq!(secret["action"], "failed");
    assert!(secret["reason"].as_str().unwrap().contains("403"), "{secret}");
    assert!(r["status"]["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("deployments.apps")));
    assert_eq!(get(&tools, "configmap", &ns, "settings")["data"]["color"], "blue");
    tools.delete_namespace(&ns);
}
