//! `kubectl backup create|list|describe|delete|download` on the real control plane and the real
//! object stores the harness runs (s3s-fs, Azurite, fake-gcs-server).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{
    Tools, namespace, sample_app, small_configmaps, tar_entries, unique, user_role, wait_crd, widget, widget_crd,
};
use serde_json::Value;

fn env() -> (SharedEnv, Tools) {
    let env = SharedEnv::load().expect("shared environment");
    let tools = Tools::new(&env.cluster);
    (env, tools)
}

fn scratch(env: &SharedEnv, name: &str) -> std::path::PathBuf {
    let d = env.scratch.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn list_names(t: &Tools) -> Vec<String> {
    let v = t.backup(&["list", "-o", "json"]).ok().json();
    assert_eq!(v["kind"], "BackupList");
    assert_eq!(v["apiVersion"], "kubectl-backup.dev/v1alpha1");
    v["items"].as_array().unwrap().iter().map(|b| b["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

/// The whole life of a backup, on each provider.
#[test]
fn create_list_describe_download_delete_on_every_store() {
    let (env, tools) = env();
    let ns = unique("shop");
    tools.apply(&sample_app(&ns)).ok();
    for store in env.stores() {
        let prefix = unique(&format!("life-{}", store.provider));
        let t = tools.with_store(store, &prefix);
        let name = unique("b");
        let created = t.backup(&["create", &name, "-n", &ns, "-o", "json"]).ok().json();
        assert_eq!(created["kind"], "Backup", "{}", store.provider);
        assert_eq!(created["status"]["phase"], "Completed", "{}: {created}", store.provider);
        let items = created["status"]["progress"]["itemsBackedUp"].as_u64().unwrap();
        assert_eq!(created["status"]["progress"]["totalItems"].as_u64().unwrap(), items);
        // namespace, configmaps (settings + kube-root-ca.crt), secrets (credentials + SA tokens),
        // serviceaccounts, role, rolebinding, deployment, service, pvc: at least 10
        assert!(items >= 10, "{}: only {items} objects", store.provider);
        assert_eq!(created["status"]["namespaces"], serde_json::json!([ns]));

        assert_eq!(list_names(&t), vec![name.clone()], "{}", store.provider);

        let d = t.backup(&["describe", &name, "-o", "yaml"]).ok();
        assert!(d.stdout.contains("kind: Backup") && d.stdout.contains(&format!("name: {name}")), "{}", d.stdout);
        let d = t.backup(&["describe", &name, "-o", "json"]).ok().json();
        assert_eq!(d["spec"]["includedNamespaces"], serde_json::json!([ns]));
        assert_eq!(d["spec"]["ttl"], "720h");
        assert!(d["status"]["startTimestamp"].is_string() && d["status"]["completionTimestamp"].is_string());
        assert!(d["status"]["expiration"].is_string());
        assert_eq!(d["status"]["resources"]["deployments.apps"], 1);
        let human = t.backup(&["describe", &name]).ok().stdout;
        assert!(
            human.contains("Phase:") && human.contains("Completed") && human.contains("deployments.apps"),
            "{human}"
        );

        let file = scratch(&env, &prefix).join("b.tar.zst");
        t.backup(&["download", &name, "-f", file.to_str().unwrap()]).ok();
        let entries = tar_entries(&file);
        for want in [
            format!("resources/configmaps/namespaces/{ns}/settings.json"),
            format!("resources/deployments.apps/namespaces/{ns}/web.json"),
            format!("resources/rolebindings.rbac.authorization.k8s.io/namespaces/{ns}/web-reads.json"),
            format!("resources/namespaces/cluster/{ns}.json"),
        ] {
            assert!(entries.contains(&want), "{}: {want} missing from {entries:?}", store.provider);
        }
        assert_eq!(entries.len() as u64, items);
        // Entries are readable JSON with apiVersion and kind.
        let out = std::process::Command::new("tar")
            .arg("--zstd")
            .arg("-xOf")
            .arg(&file)
            .arg(format!("resources/configmaps/namespaces/{ns}/settings.json"))
            .output()
            .unwrap();
        let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((cm["apiVersion"].as_str(), cm["kind"].as_str()), (Some("v1"), Some("ConfigMap")));
        assert_eq!(cm["data"]["color"], "blue");
        // A second download to the same file is refused unless --overwrite.
        let again = t.backup(&["download", &name, "-f", file.to_str().unwrap()]);
        assert_ne!(again.code, 0);
        assert!(again.stderr.contains("already exists"), "{}", again.stderr);

        let del = t.backup(&["delete", &name, "--yes"]).ok();
        assert!(del.stdout.contains("deleted"), "{}", del.stdout);
        assert!(list_names(&t).is_empty(), "{}: backup still listed after delete", store.provider);
        let gone = t.backup(&["describe", &name]);
        assert_ne!(gone.code, 0);
        assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
    }
    tools.delete_namespace(&ns);
}

#[test]
fn namespace_and_resource_filters() {
    let (env, tools) = env();
    let team_a = unique("team-a");
    let team_b = unique("team-b");
    let other = unique("other");
    for ns in [&team_a, &team_b, &other] {
        tools.apply(&sample_app(ns)).ok();
    }
    let t = tools.with_store(&env.s3, &unique("filters"));

    // Globs in --include-namespaces, exclusion by name.
    let glob = format!("{}*", &team_a[..team_a.len() - 8]); // "team-a-*"
    let b = t.backup(&["create", &unique("glob"), "--include-namespaces", &glob, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["namespaces"], serde_json::json!([team_a]));

    let both = format!("{team_a},{team_b}");
    let b = t
        .backup(&[
            "create",
            &unique("excl"),
            "--include-namespaces",
            &both,
            "--exclude-namespaces",
            &team_b,
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(b["status"]["namespaces"], serde_json::json!([team_a]));

    // Resource filters: only configmaps and deployments.apps (plus the Namespace object).
    let b = t
        .backup(&[
            "create",
            &unique("res"),
            "-n",
            &other,
            "--include-resources",
            "configmaps,deployments.apps",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let keys: BTreeSet<String> = b["status"]["resources"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["configmaps", "deployments.apps", "namespaces"].iter().map(|s| s.to_string()).collect());

    // Short names and kinds work; --exclude-resources wins.
    let b = t
        .backup(&[
            "create",
            &unique("short"),
            "-n",
            &other,
            "--include-resources",
            "cm,Secret",
            "--exclude-resources",
            "secrets",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let keys: BTreeSet<String> = b["status"]["resources"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["configmaps", "namespaces"].iter().map(|s| s.to_string()).collect());

    // Label selector: only objects labelled app=web.
    let b = t.backup(&["create", &unique("sel"), "-n", &other, "-l", "app=web", "-o", "json"]).ok().json();
    let r = &b["status"]["resources"];
    assert_eq!(r["configmaps"], 1, "{r}");
    assert_eq!(r["secrets"], 1, "{r}");
    assert_eq!(r["deployments.apps"], 1, "{r}");
    assert_eq!(r["services"], 1, "{r}");
    assert!(r.get("serviceaccounts").is_none(), "{r}");

    // A namespace-scoped backup has no unrelated cluster-scoped objects by default...
    let b = t.backup(&["create", &unique("auto"), "-n", &other, "-o", "json"]).ok().json();
    assert!(b["status"]["resources"].get("clusterroles.rbac.authorization.k8s.io").is_none());
    // ...unless asked for.
    let b = t
        .backup(&["create", &unique("cr"), "-n", &other, "--include-cluster-resources", "true", "-o", "json"])
        .ok()
        .json();
    assert!(b["status"]["resources"]["clusterroles.rbac.authorization.k8s.io"].as_u64().unwrap() > 10);
    // A whole-cluster backup includes cluster-scoped objects, and none with false.
    let b = t.backup(&["create", &unique("all"), "-o", "json"]).ok().json();
    assert!(b["status"]["resources"]["clusterroles.rbac.authorization.k8s.io"].as_u64().unwrap() > 10);
    let b = t.backup(&["create", &unique("nocr"), "--include-cluster-resources=false", "-o", "json"]).ok().json();
    assert!(b["status"]["resources"].get("clusterroles.rbac.authorization.k8s.io").is_none());
    for ns in [&team_a, &team_b, &other] {
        tools.delete_namespace(ns);
    }
}

#[test]
fn crds_of_backed_up_custom_resources_come_along() {
    let (env, tools) = env();
    let ns = unique("crd");
    let group = format!("{}.example.org", unique("w"));
    tools.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")).ok();
    tools.apply(&widget_crd(&group)).ok();
    wait_crd(&tools, &format!("widgets.{group}"));
    tools.apply(&widget(&group, &ns, "blue")).ok();
    let t = tools.with_store(&env.s3, &unique("crd"));
    let name = unique("b");
    let b = t.backup(&["create", &name, "-n", &ns, "-o", "json"]).ok().json();
    let r = &b["status"]["resources"];
    assert_eq!(r[format!("widgets.{group}")], 1, "{r}");
    assert_eq!(r["customresourcedefinitions.apiextensions.k8s.io"], 1, "{r}");
    let file = scratch(&env, &name).join("a.tar.zst");
    t.backup(&["download", &name, "-f", file.to_str().unwrap()]).ok();
    let entries = tar_entries(&file);
    assert!(
        entries.contains(&format!(
            "resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.{group}.json"
        )),
        "{entries:?}"
    );
    assert!(entries.contains(&format!("resources/widgets.{group}/namespaces/{ns}/blue.json")), "{entries:?}");
    tools.delete_namespace(&ns);
    tools.kubectl(&["delete", "crd", &format!("widgets.{group}")]).ok();
}

#[test]
fn ephemeral_namespaces_are_skipped_unless_named() {
    let (env, tools) = env();
    let keep = unique("keep");
    let eph = unique("pr");
    tools.apply(&sample_app(&keep)).ok();
    tools.apply(&sample_app(&eph)).ok();
    tools.kubectl(&["label", "namespace", &eph, "kubectl-backup.dev/ephemeral=true"]).ok();
    let t = tools.with_store(&env.s3, &unique("eph"));
    let all = t.backup(&["create", &unique("all"), "-o", "json"]).ok().json();
    let namespaces: Vec<&str> =
        all["status"]["namespaces"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(namespaces.contains(&keep.as_str()), "{namespaces:?}");
    assert!(!namespaces.contains(&eph.as_str()), "ephemeral namespace backed up: {namespaces:?}");
    // By glob: still skipped.
    let glob = format!("{}*", &eph[..eph.len() - 8]);
    let g = t.backup(&["create", &unique("glob"), "--include-namespaces", &glob, "-o", "json"]).ok().json();
    assert!(g["status"].get("namespaces").is_none_or(|n| !n.as_array().unwrap().iter().any(|v| v == eph.as_str())));
    // Named explicitly: included.
    let named = t.backup(&["create", &unique("named"), "-n", &eph, "-o", "json"]).ok().json();
    assert_eq!(named["status"]["namespaces"], serde_json::json!([eph]));
    tools.delete_namespace(&keep);
    tools.delete_namespace(&eph);
}

/// `workspace new --ephemeral` makes the workspace ephemeral on its own, with no webhook in the
/// cluster: `create -A` skips it, naming it still backs it up. A namespace that only carries the
/// annotation (made by other tools) is skipped too.
#[test]
fn workspace_new_ephemeral_is_skipped_without_the_webhook() {
    let (env, tools) = env();
    let mwcs = tools.get_json(&["mutatingwebhookconfigurations"]);
    assert!(
        !mwcs.to_string().contains("workspaces.kubectl-backup.dev"),
        "this test needs a cluster without the kubectl-backup webhook"
    );
    let eph = unique("eph");
    let made = tools.backup(&["workspace", "new", &eph, "--ephemeral"]).ok();
    assert!(made.stdout.contains("(ephemeral)"), "{}", made.stdout);
    let ns = tools.get_json(&["namespace", &eph]);
    assert_eq!(ns["metadata"]["labels"]["kubectl-backup.dev/ephemeral"], "true", "{ns}");
    tools.kubectl(&["create", "configmap", "scratch", "-n", &eph, "--from-literal=k=v"]).ok();
    let annotated = unique("annotated");
    tools
        .apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {annotated}\n  annotations:\n    kubectl-backup.dev/ephemeral: \"true\"\n"
        ))
        .ok();
    let keep = unique("keep");
    tools.backup(&["workspace", "new", &keep]).ok();

    let t = tools.with_store(&env.s3, &unique("ws-eph"));
    let all = t.backup(&["create", &unique("all"), "-A", "-o", "json"]).ok().json();
    let namespaces: Vec<&str> =
        all["status"]["namespaces"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(namespaces.contains(&keep.as_str()), "{namespaces:?}");
    assert!(!namespaces.contains(&eph.as_str()), "the ephemeral workspace was backed up: {namespaces:?}");
    assert!(!namespaces.contains(&annotated.as_str()), "the annotated namespace was backed up: {namespaces:?}");
    // Named explicitly, it is backed up (the documented rule).
    let named = t.backup(&["create", &unique("named"), "-n", &eph, "-o", "json"]).ok().json();
    assert_eq!(named["status"]["namespaces"], serde_json::json!([eph]));
    assert!(named["status"]["resources"]["configmaps"].as_u64().is_some_and(|n| n >= 1), "{named}");
    for ns in [&eph, &annotated, &keep] {
        tools.delete_namespace(ns);
    }
}

#[test]
fn events_and_node_leases_are_never_backed_up() {
    let (env, tools) = env();
    let ns = unique("ev");
    tools.apply(&sample_app(&ns)).ok();
    // The controller manager writes events for the Deployment; make sure at least one exists.
    tools
        .apply(&format!(
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: hello\n  namespace: {ns}\ninvolvedObject:\n  kind: ConfigMap\n  name: settings\n  namespace: {ns}\nreason: Test\nmessage: hi\ntype: Normal\n"
        ))
        .ok();
    let t = tools.with_store(&env.s3, &unique("never"));
    let name = unique("all");
    let b = t.backup(&["create", &name, "-o", "json"]).ok().json();
    let r = b["status"]["resources"].as_object().unwrap();
    for k in ["events", "events.events.k8s.io", "nodes", "componentstatuses"] {
        assert!(!r.contains_key(k), "{k} was backed up: {r:?}");
    }
    let file = scratch(&env, &name).join("a.tar.zst");
    t.backup(&["download", &name, "-f", file.to_str().unwrap()]).ok();
    let entries = tar_entries(&file);
    assert!(
        !entries.iter().any(|e| e.contains("/namespaces/kube-node-lease/") && e.starts_with("resources/leases")),
        "node leases archived"
    );
    assert!(!entries.iter().any(|e| e.starts_with("resources/events")), "events archived");
    // Built-in APIService objects (Local) are not backed up either.
    assert!(
        !entries.iter().any(|e| e.contains("apiservices.apiregistration.k8s.io/cluster/v1.apps")),
        "local APIService archived"
    );
    tools.delete_namespace(&ns);
}

#[test]
fn forbidden_resources_make_the_backup_partially_failed() {
    let (env, tools) = env();
    let ns = unique("rbac");
    tools.apply(&sample_app(&ns)).ok();
    // alice may read configmaps and the namespace, nothing else.
    tools.apply(&user_role(&ns, "alice", "cm-reader", &["configmaps"], &["get", "list"])).ok();
    let alice = tools.as_user(&env.cluster.user("alice").kubeconfig).with_store(&env.s3, &unique("rbac"));
    let name = unique("b");
    let run = alice.backup(&["create", &name, "-n", &ns, "-o", "json"]);
    assert_eq!(run.code, 3, "PartiallyFailed must exit 3: {} {}", run.stdout, run.stderr);
    let b = run.json();
    assert_eq!(b["status"]["phase"], "PartiallyFailed");
    let errors: Vec<&str> = b["status"]["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains("secrets") && e.contains("403")), "secrets not named: {errors:?}");
    assert!(errors.iter().any(|e| e.contains("deployments.apps")), "deployments not named: {errors:?}");
    assert_eq!(b["status"]["resources"]["configmaps"], 2);
    // It is committed and listed with its phase.
    let listed = alice.backup(&["list"]).ok().stdout;
    assert!(listed.contains(&name) && listed.contains("PartiallyFailed"), "{listed}");
    tools.delete_namespace(&ns);
}

/// A user who may list ConfigMaps in each of 11 named namespaces, more than a backup lists one
/// namespace at a time, but not in all of them: the cluster-wide LIST is forbidden, so each named
/// namespace is listed on its own, and the backup holds every one (before, it failed: "no resource
/// could be listed"). The other namespace's ConfigMap, which the same selector matches, is not in it.
#[test]
fn a_user_with_rights_in_many_named_namespaces_backs_up_each_of_them() {
    let (env, tools) = env();
    let base = unique("ns11");
    let names: Vec<String> = (0..11).map(|i| format!("{base}-{i:02}")).collect();
    for ns in &names {
        tools.create(&namespace(ns)).ok();
        tools.create(&small_configmaps(ns, 1)).ok();
        tools.apply(&user_role(ns, "alice", "cm-reader", &["configmaps"], &["get", "list"])).ok();
    }
    let other = format!("{base}-other");
    tools.create(&namespace(&other)).ok();
    tools.create(&small_configmaps(&other, 1)).ok();
    let cluster_wide = tools.kubectl(&["get", "configmaps", "-A", "--as", "alice"]);
    assert!(
        cluster_wide.stderr.contains("forbidden"),
        "alice may list ConfigMaps cluster-wide: {}",
        cluster_wide.stderr
    );
    let alice = tools.as_user(&env.cluster.user("alice").kubeconfig).with_store(&env.s3, &unique("ns11"));
    let listed = names.join(",");
    let args = [
        "create",
        &unique("b"),
        "--include-namespaces",
        &listed,
        "--include-resources",
        "configmaps",
        "-l",
        "app=bulk",
        "-o",
        "json",
    ];
    let run = alice.backup(&args);
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    let b = run.json();
    assert_eq!(b["status"]["phase"], "Completed", "{}", b["status"]);
    assert_eq!(b["status"]["resources"]["configmaps"], 11, "{}", b["status"]);
    let namespaces: Vec<&str> =
        b["status"]["namespaces"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(namespaces, names.iter().map(String::as_str).collect::<Vec<_>>(), "{}", b["status"]);
    // One request for the twelve, not waited for: no later step needs them gone.
    let mut delete = vec!["delete", "namespace", "--wait=false", other.as_str()];
    delete.extend(names.iter().map(String::as_str));
    tools.kubectl(&delete).ok();
}

#[test]
fn an_existing_name_is_never_overwritten() {
    let (env, tools) = env();
    let ns = unique("dup");
    tools.apply(&sample_app(&ns)).ok();
    let t = tools.with_store(env.azure(), &unique("dup"));
    let name = unique("b");
    let first = t.backup(&["create", &name, "-n", &ns, "-o", "json"]).ok().json();
    let again = t.backup(&["create", &name, "-n", &ns, "--include-resources", "configmaps"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let now = t.backup(&["describe", &name, "-o", "json"]).ok().json();
    assert_eq!(now["status"]["archive"], first["status"]["archive"], "the first backup changed");
    tools.delete_namespace(&ns);
}

#[test]
fn paging_collects_every_object() {
    let (env, tools) = env();
    let ns = unique("many");
    tools.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")).ok();
    // 1,234 ConfigMaps: three pages of 500.
    let mut yaml = String::new();
    for i in 0..1234 {
        yaml.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:04}\n  namespace: {ns}\ndata:\n  i: \"{i}\"\n"));
    }
    tools.apply(&yaml).ok();
    let t = tools.with_store(env.gcs(), &unique("paging"));
    let b =
        t.backup(&["create", &unique("b"), "-n", &ns, "--include-resources", "configmaps", "-o", "json"]).ok().json();
    assert_eq!(b["status"]["resources"]["configmaps"], 1235, "1234 + kube-root-ca.crt");
    tools.delete_namespace(&ns);
}

/// A large resource listed across namespaces goes on one namespace at a time after its first page
/// (`--list-per-namespace always` here; `auto` does so where paging would cost etcd more, as at
/// bench/scale.sh's 100k objects). Twelve namespaces whose keys come before every other one's
/// ("0<a number that falls with time>…"), eleven of them in the backup (more than it lists one at
/// a time from the start). The first page ends inside a namespace: 500 ConfigMaps end inside the
/// first in key order, "…-a-b" ("…-a-b/" sorts before "…-a/"); 2000 of metadata only (an
/// incremental backup continuing another) inside the second, "…-a". Every namespace is listed
/// again, in key order, without archiving twice what that page held. The namespace left out is not
/// listed. Each backup holds the same objects,
/// each once, as one that pages through the cluster-wide LIST.
#[test]
fn a_large_resource_is_listed_one_namespace_at_a_time_after_its_first_page() {
    let (env, tools) = env();
    // Before every other namespace in key order, those of an earlier run on the same harness too.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let base = unique(&format!("0{:010}", 9_999_999_999 - now));
    let first = [format!("{base}-a-b"), format!("{base}-a")];
    let rest: Vec<String> = (0..9).map(|i| format!("{base}-n{i}")).collect();
    let left_out = format!("{base}-c");
    for (ns, count) in first.iter().map(|n| (n, 1100)).chain(rest.iter().map(|n| (n, 2))).chain([(&left_out, 2)]) {
        tools.create(&namespace(ns)).ok();
        tools.create(&small_configmaps(ns, count)).ok();
    }
    // 1100 + 1100 + 9 × 2, and each namespace's kube-root-ca.crt.
    let total = 2229;
    let included: Vec<&String> = first.iter().chain(&rest).collect();
    let listed = included.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",");
    let t = tools.with_store(&env.s3, &unique("perns"));
    let mut archives = Vec::new();
    // (--list-per-namespace, --incremental): the second incremental backup lists metadata only.
    for (mode, incremental) in [("always", false), ("never", false), ("always", true), ("always", true)] {
        let name = unique(mode);
        let mut args = vec!["create", &name, "--include-namespaces", &listed, "--include-resources", "configmaps"];
        args.extend(["--list-per-namespace", mode, "-vv", "-o", "json"]);
        if incremental {
            args.push("--incremental");
        }
        let what = format!("{mode}, incremental {incremental}, backup {}", archives.len() + 1);
        let run = t.backup(&args);
        assert_eq!(run.code, 0, "{what}: {} {}", run.stdout, run.stderr);
        let b = run.json();
        assert_eq!(b["status"]["phase"], "Completed", "{what}: {}", b["status"]);
        assert_eq!(b["status"]["resources"]["configmaps"], total, "{what}: {}", b["status"]);
        if archives.len() == 3 {
            let not_read = &b["status"]["incremental"]["objectsNotRead"];
            assert_eq!(not_read, total, "{what}: listed as metadata, none read: {}", b["status"]);
        }
        let went_on = run
            .stderr
            .lines()
            .find(|l| l.contains("listing the rest one namespace at a time") && l.contains("resource=configmaps"));
        match mode {
            "always" => {
                let line = went_on.unwrap_or_else(|| panic!("{what}: no per-namespace LISTs: {}", run.stderr));
                // Every namespace of the backup, those of the first page too.
                assert!(line.contains("namespaces=11"), "{what}: {line}");
            }
            _ => assert!(went_on.is_none(), "{what}: {}", went_on.unwrap_or_default()),
        }
        let file = scratch(&env, &name).join("b.tar.zst");
        t.backup(&["download", &name, "-f", file.to_str().unwrap()]).ok();
        let entries: Vec<String> =
            tar_entries(&file).into_iter().filter(|e| e.starts_with("resources/configmaps/")).collect();
        let unique_entries: BTreeSet<&String> = entries.iter().collect();
        assert_eq!(unique_entries.len(), entries.len(), "{what}: an object archived twice");
        assert_eq!(entries.len(), total, "{what}");
        for ns in &included {
            let prefix = format!("resources/configmaps/namespaces/{ns}/");
            let want = if first.contains(ns) { 1101 } else { 3 };
            assert_eq!(entries.iter().filter(|e| e.starts_with(&prefix)).count(), want, "{what}: {ns}");
        }
        assert!(!entries.iter().any(|e| e.contains(&format!("/{left_out}/"))), "{what}: {left_out} is in it");
        archives.push(entries);
    }
    for (i, other) in archives.iter().enumerate().skip(1) {
        assert_eq!(&archives[0], other, "backup {} differs from the first", i + 1);
    }
    let mut delete = vec!["delete", "namespace", "--wait=false", left_out.as_str()];
    delete.extend(included.iter().map(|n| n.as_str()));
    tools.kubectl(&delete).ok();
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let (env, tools) = env();
    let t = tools.with_store(&env.s3, &unique("bad"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["create", "Not_A_Name"], "invalid backup name"),
        (vec!["create", "ok", "-l", "app in web"], "label selector"),
        (vec!["create", "ok", "--include-namespaces", "team-["], "--include-namespaces"),
        (vec!["create", "ok", "--ttl", "soon"], "--ttl"),
        (vec!["create", "ok", "--include-resources", "confgmaps"], "confgmaps"),
        (vec!["describe", "no-such-backup"], "not found"),
        (vec!["download", "no-such-backup"], "not found"),
        (vec!["delete", "no-such-backup", "--yes"], "not found"),
    ];
    for (args, needle) in cases {
        let r = t.backup(&args);
        assert_ne!(r.code, 0, "{args:?} succeeded");
        assert!(r.stderr.contains(needle), "{args:?}: {:?} not in {}", needle, r.stderr);
    }
    // A bad location URL.
    let r = tools.backup(&["list", "--location", "ftp://x/y"]);
    assert!(r.code != 0 && r.stderr.contains("unsupported scheme"), "{}", r.stderr);
    // Credentials in the URL are refused and never echoed.
    let r = tools.backup(&["list", "--location", "s3://AKIAXXX:topsecret@bucket/p"]);
    assert!(
        r.code != 0 && r.stderr.contains("credentials in the URL") && !r.stderr.contains("topsecret"),
        "{}",
        r.stderr
    );
    // An unreachable store fails within a bounded time, naming the location.
    let port = kubectl_backup_e2e::process::free_port();
    let mut dead = t.clone();
    dead.env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    dead.env.push(("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{port}")));
    let start = Instant::now();
    let r = dead.backup(&["list"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("s3://backups"), "{}", r.stderr);
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
    // Wrong S3 credentials: a signature error, not a crash, and the secret is not printed.
    let mut wrong = t.clone();
    wrong.env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    wrong.env.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong-secret-value".into()));
    let r = wrong.backup(&["list"]);
    assert_ne!(r.code, 0);
    assert!(!r.stderr.contains("wrong-secret-value"), "secret leaked: {}", r.stderr);
}

#[test]
fn default_location_is_env_then_xdg_data_dir() {
    let (env, tools) = env();
    let ns = unique("deflt");
    tools.apply(&sample_app(&ns)).ok();
    // KUBECTL_BACKUP_LOCATION
    let dir = scratch(&env, &unique("loc"));
    let mut t = tools.clone();
    t.env.push(("KUBECTL_BACKUP_LOCATION".into(), format!("file://{}", dir.display())));
    // Tools removes KUBECTL_BACKUP_LOCATION from the inherited env, then adds ours back.
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();
    assert!(dir.join("backups").join(&name).join("metadata.json").exists());
    // XDG_DATA_HOME
    let xdg = scratch(&env, &unique("xdg"));
    let mut x = tools.clone();
    x.env.push(("XDG_DATA_HOME".into(), xdg.display().to_string()));
    let name = unique("b");
    x.backup(&["create", &name, "-n", &ns]).ok();
    assert!(xdg.join("kubectl-backup/backups").join(&name).join("metadata.json").exists());
    let listed = x.backup(&["list"]).ok().stdout;
    assert!(listed.contains(&name));
    tools.delete_namespace(&ns);
}

#[test]
fn the_real_kubectl_finds_the_plugin() {
    let (_, tools) = env();
    let plugins = tools.kubectl(&["plugin", "list"]);
    assert!(plugins.stdout.contains("kubectl-backup"), "{} {}", plugins.stdout, plugins.stderr);
    let nowhere = unique("none");
    let v = tools.kubectl(&["backup", "version", "-o", "json", "--install-namespace", &nowhere]).ok().json();
    assert_eq!(v["clientVersion"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["inCluster"], serde_json::json!({"namespace": nowhere, "installed": false}), "{v}");
    let text = tools.kubectl(&["backup", "version", "--install-namespace", &nowhere]).ok().stdout;
    assert_eq!(
        text,
        format!("kubectl-backup {}\nbackup-webhook: not installed in namespace {nowhere}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = tools.kubectl(&["backup", "--help"]).ok().stdout;
    for cmd in ["create", "list", "describe", "delete", "download", "completion"] {
        assert!(help.contains(cmd), "{cmd} missing from help");
    }
    let completion = tools.kubectl(&["backup", "completion", "bash"]).ok().stdout;
    assert!(completion.contains("complete"), "not a bash completion script");
}

/// `kubectl __complete backup WORDS...`: what kubectl's shell completion asks, answered through the
/// repository's `kubectl_complete-backup` on PATH. Returns the candidates and the directive line.
fn complete(t: &Tools, words: &[&str]) -> (Vec<String>, String) {
    let script_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let mut t = t.clone();
    let path = format!(
        "{}:{}:{}",
        script_dir.display(),
        kubectl_backup_e2e::fixtures::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    t.env.push(("PATH".into(), path));
    let mut args = vec!["__complete", "backup"];
    args.extend(words);
    let out = t.kubectl(&args).ok().stdout;
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    let directive = lines.pop().unwrap_or_default();
    (lines, directive)
}

#[test]
fn kubectl_completes_subcommands_flags_and_backup_names() {
    let (env, tools) = env();
    let (subs, directive) = complete(&tools, &["sch"]);
    assert_eq!((subs, directive.as_str()), (vec!["schedule".to_string()], ":4"));
    let (subs, _) = complete(&tools, &["schedule", ""]);
    for s in ["create", "list", "describe", "pause", "resume", "delete"] {
        assert!(subs.contains(&s.to_string()), "{s} missing: {subs:?}");
    }
    let (flags, _) = complete(&tools, &["create", "--include-n"]);
    assert_eq!(flags, ["--include-namespaces"]);
    let (values, _) = complete(&tools, &["list", "-o", ""]);
    assert_eq!(values, ["table", "wide", "name", "json", "yaml", "jsonpath=", "jsonpath-as-json="]);
    // Backup names, from the location the words name.
    let ns = unique("compl");
    tools.apply(&namespace(&ns)).ok();
    let store = format!("file://{}", scratch(&env, &unique("compl-store")).display());
    let mut t = tools.clone();
    t.location = Some(store.clone());
    for name in ["nightly-1", "nightly-2", "weekly-1"] {
        t.backup(&["create", name, "-n", &ns]).ok();
    }
    let (names, directive) = complete(&tools, &["describe", "--location", &store, "night"]);
    assert_eq!((names, directive.as_str()), (vec!["nightly-1".to_string(), "nightly-2".to_string()], ":4"));
    // restore: its subcommands and the backups.
    let (names, _) = complete(&tools, &["restore", "--location", &store, ""]);
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.contains(&"list".to_string()) && names.contains(&"describe".to_string()), "{names:?}");
    let (names, _) = complete(&tools, &["logs", "--location", &store, "night"]);
    assert_eq!(names, ["nightly-1", "nightly-2"]);
    tools.delete_namespace(&ns);
}

#[test]
fn create_without_waiting_runs_in_the_background() {
    let (env, tools) = env();
    let ns = unique("bg");
    tools.apply(&sample_app(&ns)).ok();
    let mut t = tools.with_store(&env.s3, &unique("bg"));
    let state = scratch(&env, &unique("state"));
    t.env.push(("XDG_STATE_HOME".into(), state.display().to_string()));
    let name = unique("b");
    let start = Instant::now();
    let out = t.backup(&["create", &name, "-n", &ns, "--wait=false"]).ok();
    assert!(out.stdout.contains("started in the background"), "{}", out.stdout);
    assert!(start.elapsed() < Duration::from_secs(10), "--wait=false waited {:?}", start.elapsed());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = t.backup(&["describe", &name, "-o", "json"]);
        if d.code == 0 && d.json()["status"]["phase"] == "Completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the background backup did not complete: {} {}", d.stdout, d.stderr);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(state.join(format!("kubectl-backup/logs/backup-{name}.log")).exists(), "no log file");
    tools.delete_namespace(&ns);
}

/// Every file of a downloaded archive, by path, with its bytes.
fn archive_files(t: &Tools, env: &SharedEnv, name: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dir = scratch(env, &unique("files"));
    let file = dir.join("b.tar.zst");
    t.backup(&["download", name, "-f", file.to_str().unwrap()]).ok();
    let out =
        std::process::Command::new("tar").arg("--zstd").arg("-xf").arg(&file).arg("-C").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tar_entries(&file).into_iter().map(|e| (e.clone(), std::fs::read(dir.join(&e)).unwrap())).collect()
}

/// ConfigMaps and Secrets are listed in protobuf (which costs the API server less than JSON), and
/// what is stored is the JSON the server sends, byte for byte: the same namespaces backed up with
/// `--list-encoding json` and with the default hold the same files with the same bytes. The
/// objects hold what Go's JSON encoder escapes (`<`, `>`, `&`, U+2028, control characters,
/// quotes), other Unicode, empty and binary values, labels, annotations, an owner reference, a
/// finalizer and a deletion in progress, server-side apply's managed fields, a generated name and
/// immutability; 600 ConfigMaps take two pages. A page holding a `\b` or a `\f` (which Go writes
/// differently by release) is read again in JSON, and is stored the same.
#[test]
fn protobuf_lists_store_the_json_the_server_sends() {
    let (env, tools) = env();
    let (ns, odd) = (unique("pb"), unique("pb-odd"));
    tools.apply(&format!("{}---\n{}", namespace(&ns), namespace(&odd))).ok();
    let tricky = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: tricky
  namespace: {ns}
  labels: {{app: web, "example.com/tier": a-b}}
  annotations:
    note: "<b>bold</b> & \"quoted\" \\ back\u2028line\u2029para \x01ctl \x7f del é 日本 😀 \t tab\n nl \r cr"
  finalizers: [example.com/hold]
data:
  html: "<script>alert('&')</script>"
  empty: ""
  multi: "line1\nline2\n"
binaryData:
  bin: AP8Q
immutable: false
---
apiVersion: v1
kind: Secret
metadata:
  name: sealed
  namespace: {ns}
immutable: true
stringData:
  password: "p<a>s&s"
  empty: ""
"#
    );
    tools.apply(&tricky).ok();
    tools.apply(&small_configmaps(&ns, 600)).ok();
    let applied =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: {ns}\ndata:\n  k: v\n");
    tools.pipe(&["apply", "--server-side", "--field-manager", "e2e", "-f", "-"], &applied).ok();
    let uid = tools.kubectl(&["get", "configmap", "tricky", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]).ok().stdout;
    let owned = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: owned-\n  namespace: {ns}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: tricky, uid: {uid}, controller: true, blockOwnerDeletion: true}}\ndata:\n  k: v\n"
    );
    tools.create(&owned).ok();
    tools.kubectl(&["delete", "configmap", "tricky", "-n", &ns, "--wait=false"]).ok();
    let bell = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bell\n  namespace: {odd}\ndata:\n  k: \"a\\bb\\fc\"\n"
    );
    tools.apply(&bell).ok();
    // The service account token Secrets come from kube-controller-manager: both backups must see them.
    for n in [&ns, &odd] {
        kubectl_backup_e2e::fixtures::eventually("the token Secret", Duration::from_secs(60), || {
            tools.names(&["secrets", "-n", n]).iter().any(|s| s.starts_with("default-token-"))
        });
    }

    let t = tools.with_store(&env.s3, &unique("pb"));
    let both = format!("{ns},{odd}");
    let args = |name: &str| {
        vec!["create".to_string(), name.into(), "--include-namespaces".into(), both.clone(), "-o".into(), "json".into()]
    };
    let (json, pb) = (unique("json"), unique("pb"));
    let mut a = args(&json);
    a.extend(["--list-encoding".into(), "json".into()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b = t.backup(&a).ok().json();
    assert_eq!(b["status"]["phase"], "Completed", "{b}");
    let mut logged = t.clone();
    logged.env.push(("KUBECTL_BACKUP_LOG".into(), "kubectl_backup_core::collect=debug".into()));
    let a = args(&pb);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let run = logged.backup(&a).ok();
    assert_eq!(run.json()["status"]["phase"], "Completed", "{}", run.stdout);

    // Read in protobuf: two pages of ConfigMaps and one of Secrets in `ns`, and only `odd`'s
    // ConfigMaps again in JSON, for its \b.
    let lines = |what: &str, path: &str| run.stderr.lines().filter(|l| l.contains(what) && l.contains(path)).count();
    assert_eq!(lines("a page read in protobuf", &format!("/api/v1/namespaces/{ns}/configmaps")), 2, "{}", run.stderr);
    assert_eq!(lines("a page read in protobuf", &format!("/api/v1/namespaces/{ns}/secrets")), 1, "{}", run.stderr);
    assert_eq!(lines("read again as JSON", &format!("/api/v1/namespaces/{odd}/configmaps")), 1, "{}", run.stderr);
    assert!(run.stderr.contains("a \\\\b or \\\\f") || run.stderr.contains("a \\b or \\f"), "{}", run.stderr);
    assert_eq!(lines("read again as JSON", "/"), 1, "{}", run.stderr);

    let (from_json, from_pb) = (archive_files(&t, &env, &json), archive_files(&t, &env, &pb));
    assert_eq!(from_json.keys().collect::<Vec<_>>(), from_pb.keys().collect::<Vec<_>>());
    for (path, bytes) in &from_json {
        assert!(
            from_pb[path] == *bytes,
            "{path}:\nJSON:     {}\nprotobuf: {}",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&from_pb[path])
        );
    }
    let cms = from_pb.keys().filter(|p| p.starts_with(&format!("resources/configmaps/namespaces/{ns}/"))).count();
    assert_eq!(cms, 600 + 4, "600, tricky, applied, owned-…, kube-root-ca.crt");
    let stored = |p: &str| -> Value { serde_json::from_slice(&from_pb[p]).unwrap() };
    let tricky = stored(&format!("resources/configmaps/namespaces/{ns}/tricky.json"));
    assert!(tricky["metadata"]["deletionTimestamp"].is_string(), "{tricky}");
    assert_eq!(tricky["data"]["html"], "<script>alert('&')</script>");
    let sealed = stored(&format!("resources/secrets/namespaces/{ns}/sealed.json"));
    assert_eq!((sealed["immutable"].as_bool(), sealed["data"]["empty"].as_str()), (Some(true), Some("")));

    tools
        .kubectl(&[
            "patch",
            "configmap",
            "tricky",
            "-n",
            &ns,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .ok();
    tools.delete_namespace(&ns);
    tools.delete_namespace(&odd);
}
