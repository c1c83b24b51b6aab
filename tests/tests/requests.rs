//! Backup and Restore resources on a real control plane, run by the real `backup-webhook` with the
//! installed ServiceAccount's token: `kubectl backup create|restore --in-cluster`, status, Events,
//! restore history and logs — and every way a tenant might use them to get more than their RBAC
//! gives, tried against the API server and shown to fail.

use std::time::Duration;

use kubectl_backup_e2e::fixtures::{OwnCluster, Tools, sample_app, unique};
use serde_json::Value;

const NS: &str = "kubectl-backup";

fn request(t: &Tools, kind: &str, ns: &str, name: &str) -> Value {
    t.get_json(&[&format!("{kind}.kubectl-backup.dev"), name, "-n", ns])
}

/// Waits until the request's phase is finished; returns its status.
fn finished(t: &Tools, kind: &str, ns: &str, name: &str, log: impl Fn() -> String) -> Value {
    let mut status = Value::Null;
    let done = kubectl_backup_e2e::fixtures::wait_until(Duration::from_secs(60), || {
        status = request(t, kind, ns, name)["status"].clone();
        matches!(status["phase"].as_str(), Some("Completed" | "PartiallyFailed" | "Failed"))
    });
    assert!(done, "{kind} {ns}/{name} did not finish: {status}\n{}", log());
    status
}

fn reasons(t: &Tools, ns: &str, kind: &str, name: &str) -> Vec<(String, String)> {
    let v = t.get_json(&["events", "-n", ns]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .map(|e| {
            let note = e["note"].as_str().or(e["message"].as_str()).unwrap_or("").to_string();
            (e["reason"].as_str().unwrap_or("").to_string(), note)
        })
        .collect()
}

#[test]
fn backups_and_restores_requested_in_the_cluster_run_once_with_status_events_history_and_logs() {
    let c = OwnCluster::start("requests");
    let t = &c.t;
    let app = unique("app");
    t.apply(&sample_app(&app)).ok();
    let webhook = c.webhook(NS, &["--continuous=false"]);

    // create --in-cluster: a Backup resource in the one namespace backed up, followed to the end.
    let name = unique("req");
    let out = t.backup(&["create", &name, "-n", &app, "--in-cluster"]).ok();
    assert!(out.stderr.contains(&format!("backup.kubectl-backup.dev/{name} created in namespace {app}")), "{out:?}");
    assert!(out.stdout.contains(&format!("backup {name}: Completed")), "{out:?}\n{}", webhook.log());
    let st = request(t, "backups", &app, &name)["status"].clone();
    assert_eq!(st["phase"], "Completed", "{st}");
    assert!(st["requestedBy"].as_str().is_some_and(|u| !u.is_empty()), "{st}");
    assert!(st["progress"]["itemsDone"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["startTime"].is_string() && st["completionTime"].is_string(), "{st}");
    let ready = st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True", "{st}");
    let ev: Vec<String> = reasons(t, &app, "Backup", &name).into_iter().map(|(r, _)| r).collect();
    for r in ["BackupStarted", "BackupUploading", "BackupCompleted"] {
        assert!(ev.contains(&r.to_string()), "{r} missing: {ev:?}");
    }
    // The backup is in the location, confined to the namespace, and its log is beside it.
    let b = t.backup(&["describe", &name, "-o", "json"]).ok().json();
    assert_eq!(b["spec"]["includedNamespaces"], serde_json::json!([app]));
    assert_eq!(b["spec"]["schedule"], format!("request {app}/{name}"));
    let log = t.backup(&["logs", &name]).ok().stdout;
    assert!(log.contains(&format!("listed configmaps in namespace {app}")), "{log}");
    assert!(log.contains(&format!("backup {name} Completed")), "{log}");
    // Acted on once: it never runs again (its name is taken in the location anyway).
    std::thread::sleep(Duration::from_secs(2));
    let again: Vec<String> = reasons(t, &app, "Backup", &name).into_iter().map(|(r, _)| r).collect();
    assert_eq!(again.iter().filter(|r| *r == "BackupStarted").count(), 1, "{again:?}");

    // restore --in-cluster: a Restore resource, which restores as the person who created it.
    t.kubectl(&["-n", &app, "delete", "configmap", "settings"]).ok();
    let out = t.backup(&["restore", &name, "-n", &app, "--in-cluster"]).ok();
    assert!(out.stdout.contains("Completed"), "{out:?}\n{}", webhook.log());
    assert!(t.names(&["configmaps", "-n", &app]).contains(&"settings".to_string()));
    let restores = t.get_json(&["restores.kubectl-backup.dev", "-n", &app]);
    let r = &restores["items"][0];
    let rname = r["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    let record = r["status"]["record"].as_str().expect("a record name").to_string();
    assert!(r["status"]["progress"]["itemsDone"].as_u64().unwrap() >= 1, "{r}");
    let ev = reasons(t, &app, "Restore", &rname);
    let started = ev.iter().find(|(r, _)| r == "RestoreStarted").unwrap_or_else(|| panic!("{ev:?}"));
    assert!(started.1.contains("as "), "{started:?}");
    // A restore run by the CLI is recorded in the location too.
    t.kubectl(&["-n", &app, "delete", "configmap", "settings"]).ok();
    t.backup(&["restore", &name, "-n", &app]).ok();

    // History: both, from the cluster and from the location.
    let list = t.backup(&["restore", "list"]).ok().stdout;
    assert!(list.contains(&rname) && list.contains(&format!("namespace/{app}")), "{list}");
    let listed = t.backup(&["restore", "list", "-o", "json"]).ok().json();
    let items = listed["items"].as_array().unwrap();
    let in_location: Vec<&Value> =
        items.iter().filter(|i| i["kind"] == "Restore" && i["spec"]["backupName"] == name).collect();
    assert!(in_location.len() >= 3, "one resource and two records expected: {listed}");
    let d = t.backup(&["restore", "describe", &rname]).ok().stdout;
    assert!(d.contains(&format!("Namespace:     {app}")) && d.contains("Phase:         Completed"), "{d}");
    let rlog = t.backup(&["logs", &format!("restore/{record}")]).ok().stdout;
    assert!(rlog.contains("started as") && rlog.contains(&format!("of backup {name} Completed")), "{rlog}");
    let d = t.backup(&["restore", "describe", &record]).ok().stdout;
    assert!(d.contains(&format!("of backup \"{name}\" Completed")), "{d}");

    // An etcd backup, asked for in the install namespace (the only one where etcd is allowed).
    let snap = unique("etcd");
    t.apply(&format!(
        "apiVersion: kubectl-backup.dev/v1alpha1\nkind: Backup\nmetadata: {{name: {snap}, namespace: {NS}}}\nspec:\n  etcd: {{endpoints: [\"{}\"]}}\n",
        c.cp.etcd.endpoint
    ))
    .ok();
    let st = finished(t, "backups", NS, &snap, || webhook.log());
    assert_eq!(st["phase"], "Completed", "{st}");
    let e = t.backup(&["etcd", "describe", &snap, "-o", "json"]).ok().json();
    assert_eq!(e["spec"]["type"], "snapshot", "{e}");
    assert!(e["status"]["archive"]["size"].as_u64().unwrap() > 0, "{e}");

    // A name nobody has: which one, and where it was looked for.
    let missing = t.backup(&["logs", "restore/nope"]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("no log of restore \"nope\""), "{}", missing.stderr);
    let bad = t.backup(&["logs", "pod/x"]);
    assert!(bad.stderr.contains("expected backup/NAME, restore/NAME or NAME"), "{}", bad.stderr);
}

#[test]
fn a_tenants_requests_never_reach_beyond_their_namespace_or_their_rbac() {
    let c = OwnCluster::start("reqsec");
    let t = &c.t;
    let mine = unique("mine");
    let theirs = unique("theirs");
    t.apply(&sample_app(&mine)).ok();
    t.apply(&sample_app(&theirs)).ok();
    let mut webhook = c.webhook(NS, &["--continuous=false"]);
    // alice operates backups in `mine` and may write ConfigMaps there, but not Secrets.
    t.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-operator, namespace: {mine}}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
roleRef: {{kind: ClusterRole, name: kubectl-backup-operator, apiGroup: rbac.authorization.k8s.io}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: alice-config, namespace: {mine}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [create, get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-config, namespace: {mine}}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
roleRef: {{kind: Role, name: alice-config, apiGroup: rbac.authorization.k8s.io}}
"#
    ))
    .ok();
    let alice = t.as_user(&c.cp.info.user("alice").kubeconfig);
    let backup_of = |ns: &str, name: &str, extra: &str| {
        format!(
            "apiVersion: kubectl-backup.dev/v1alpha1\nkind: Backup\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{extra}"
        )
    };
    let restore_of = |ns: &str, name: &str, spec: &str| {
        format!(
            "apiVersion: kubectl-backup.dev/v1alpha1\nkind: Restore\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
        )
    };

    // 1. A Backup in her namespace naming another namespace: refused, nothing written.
    let reach = unique("reach");
    alice.apply(&backup_of(&mine, &reach, &format!("  includedNamespaces: [{theirs}]\n"))).ok();
    let st = finished(t, "backups", &mine, &reach, || webhook.log());
    assert_eq!(st["phase"], "Failed");
    assert!(st["message"].as_str().unwrap().contains(&format!("may back up only \"{mine}\"")), "{st}");
    assert_eq!(st["requestedBy"], Value::Null, "refused before it ran: {st}");
    let listed = t.backup(&["list", "-o", "name"]).ok().stdout;
    assert!(!listed.contains(&reach), "{listed}");
    // 2. ... or a URL, which the controller would open with its own credentials.
    let url = unique("url");
    alice.apply(&backup_of(&mine, &url, "  location: s3://another-bucket/x\n")).ok();
    let st = finished(t, "backups", &mine, &url, || webhook.log());
    assert!(st["message"].as_str().unwrap().contains("may name only a BackupLocation"), "{st}");

    // 2b. ... or an etcd.
    let etcd = unique("etcd");
    alice.apply(&backup_of(&mine, &etcd, "  etcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n")).ok();
    let st = finished(t, "backups", &mine, &etcd, || webhook.log());
    assert!(st["message"].as_str().unwrap().contains("etcd backups are allowed only in the install namespace"), "{st}");

    // An admin's backup of both namespaces, Secrets included.
    let full = unique("full");
    t.backup(&["create", &full, "--include-namespaces", &format!("{mine},{theirs}")]).ok();

    // 3. A Restore mapping their namespace into hers: refused; their Secret does not appear.
    let map = unique("map");
    alice
        .apply(&restore_of(&mine, &map, &format!("  backupName: {full}\n  namespaceMapping: {{{theirs}: {mine}}}\n")))
        .ok();
    let st = finished(t, "restores", &mine, &map, || webhook.log());
    assert_eq!(st["phase"], "Failed");
    assert!(st["message"].as_str().unwrap().contains("may not map namespaces"), "{st}");
    // 4. A Restore of their namespace from her namespace: refused.
    let other = unique("other");
    alice.apply(&restore_of(&mine, &other, &format!("  backupName: {full}\n  includedNamespaces: [{theirs}]\n"))).ok();
    let st = finished(t, "restores", &mine, &other, || webhook.log());
    assert!(st["message"].as_str().unwrap().contains("may back up only"), "{st}");

    // 5. Her own namespace: restored as her. She may write ConfigMaps, not Secrets, so the Secret
    //    the controller could write is not restored, and the status says why.
    t.kubectl(&["-n", &mine, "delete", "configmap", "settings"]).ok();
    t.kubectl(&["-n", &mine, "delete", "secret", "credentials"]).ok();
    // A mark she copies from another request is removed: the webhook marks her own.
    let own = unique("own");
    let copied = request(t, "restores", &mine, &map)["metadata"]["annotations"]["kubectl-backup.dev/admission"]
        .as_str()
        .expect("the webhook's mark")
        .to_string();
    alice
        .apply(&format!(
            "apiVersion: kubectl-backup.dev/v1alpha1\nkind: Restore\nmetadata:\n  name: {own}\n  namespace: {mine}\n  annotations: {{kubectl-backup.dev/admission: \"{copied}\"}}\nspec:\n  backupName: {full}\n"
        ))
        .ok();
    let st = finished(t, "restores", &mine, &own, || webhook.log());
    assert_eq!(st["requestedBy"], "alice", "{st}");
    assert_eq!(st["phase"], "PartiallyFailed", "{st}\n{}", webhook.log());
    assert!(t.names(&["configmaps", "-n", &mine]).contains(&"settings".to_string()));
    let secret = t.kubectl(&["get", "secret", "credentials", "-n", &mine]);
    assert!(secret.stderr.contains("NotFound"), "a Secret alice may not create was restored: {secret:?}");
    let errors = st["errors"].to_string();
    assert!(errors.contains("credentials") && errors.contains("forbidden"), "{st}");
    assert!(errors.contains("alice"), "the refusal names whom the restore acted as: {st}");
    // Nothing of theirs came into hers.
    assert!(t.names(&["secrets", "-n", &mine]).iter().all(|s| s != "credentials"));

    // 6. With the webhook down nobody can create a request (failurePolicy Fail)...
    webhook.stop();
    let down = alice.apply(&restore_of(&mine, &unique("down"), &format!("  backupName: {full}\n")));
    assert_ne!(down.code, 0, "a request was admitted without the webhook");
    assert!(down.stderr.contains("requests.kubectl-backup.dev"), "{}", down.stderr);
    // ...and one admitted unmarked (an admin set failurePolicy Ignore) is refused, not run.
    let mut mwc = t.get_json(&["mutatingwebhookconfiguration", "kubectl-backup"]);
    for w in mwc["webhooks"].as_array_mut().unwrap() {
        w["failurePolicy"] = "Ignore".into();
    }
    t.pipe(&["replace", "-f", "-"], &mwc.to_string()).ok();
    let unmarked = unique("unmarked");
    alice.apply(&restore_of(&mine, &unmarked, &format!("  backupName: {full}\n"))).ok();
    webhook.restart().unwrap();
    let st = finished(t, "restores", &mine, &unmarked, || webhook.log());
    assert_eq!(st["phase"], "Failed");
    assert!(st["message"].as_str().unwrap().contains("carries no mark of the admission webhook"), "{st}");
    let ev = reasons(t, &mine, "Restore", &unmarked);
    assert!(ev.iter().any(|(r, _)| r == "Unverified"), "{ev:?}");
}
