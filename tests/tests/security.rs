//! The in-cluster component as a security boundary: each test tries an attack on the real API
//! server, with the webhook running under the ServiceAccount and roles `kubectl backup install`
//! creates, and shows it fail — by the reason, not only by some error.

use std::time::Duration;

use kubectl_backup_e2e::fixtures::{OwnCluster, Tools, annotation, events, namespace, sample_app, unique, wait_until};
use serde_json::{Value, json};

const NS: &str = "kubectl-backup";

fn wait_for_status(t: &Tools, ns: &str, want: &str, log: impl Fn() -> String) -> Value {
    let ok = wait_until(Duration::from_secs(60), || {
        annotation(&t.get_json(&["namespace", ns]), "kubectl-backup.dev/restore-status").as_deref() == Some(want)
    });
    let v = t.get_json(&["namespace", ns]);
    assert!(ok, "restore-status of {ns} is not {want} within 60s: {v}\nwebhook log:\n{}", log());
    v
}

/// `kubectl auth can-i` as `user` (a SubjectAccessReview on the real API server, by impersonation).
fn can(t: &Tools, user: &str, args: &[&str]) -> bool {
    let mut a = vec!["auth", "can-i"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--as", user]);
    let r = t.kubectl(&a);
    assert!(r.code == 0 || r.stdout.trim() == "no", "kubectl auth can-i {args:?} failed: {}", r.stderr);
    r.code == 0
}

fn in_ns<'a>(args: &[&'a str], ns: &'a str) -> Vec<&'a str> {
    args.iter().copied().chain(["-n", ns]).collect()
}

/// Lets `user` create namespaces (and nothing else, unless `also` adds rules).
fn namespace_creator(t: &Tools, user: &str, also: &str) {
    t.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: creator-{user}}}
rules:
- {{apiGroups: [""], resources: [namespaces], verbs: [create, get]}}
{also}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: creator-{user}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: creator-{user}}}
subjects:
- {{kind: User, name: {user}, apiGroup: rbac.authorization.k8s.io}}
"#
    ))
    .ok();
}

#[test]
fn the_roles_do_their_job_and_none_of_the_escalations() {
    let c = OwnCluster::start("roles");
    let t = &c.t;
    t.backup(&["install", "--namespace", NS]).ok();
    let team = unique("team");
    t.apply(&namespace(&team)).ok();
    t.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: operator, namespace: {team}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubectl-backup-operator}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: backup-admin}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubectl-backup-admin}}
subjects: [{{kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: viewer, namespace: {team}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}
subjects: [{{kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}}]
"#
    ))
    .ok();
    let own_ns = format!("namespaces/{team}");
    // The operator: schedules and backups of its namespace.
    for job in [
        &["create", "backupschedules.kubectl-backup.dev"][..],
        &["list", "secrets"],
        &["watch", "deployments.apps"],
        &["get", own_ns.as_str()],
    ] {
        assert!(can(t, "alice", &in_ns(job, &team)), "the operator cannot {job:?}");
    }
    for escalation in [
        &["create", "secrets"][..],
        &["create", "rolebindings"],
        &["create", "pods", "--subresource=exec"],
        &["get", "pods", "--subresource=exec"],
        &["get", "pods", "--subresource=attach"],
        &["create", "pods", "--subresource=portforward"],
        &["create", "serviceaccounts", "--subresource=token"],
        &["get", "secrets/x"],
    ] {
        assert!(!can(t, "alice", &in_ns(escalation, &team)), "the operator can {escalation:?} in its namespace");
    }
    assert!(!can(t, "alice", &["patch", &own_ns, "-n", &team]), "the operator can patch its Namespace's annotations");
    assert!(!can(t, "alice", &["list", "secrets", "-n", "default"]), "the operator reaches another namespace");
    // The admin: all of ours, read everything, write nothing else.
    for job in [
        &["create", "backuplocations.kubectl-backup.dev", "-n", NS][..],
        &["list", "secrets", "-A"],
        &["get", "customresourcedefinitions"],
        &["get", "persistentvolumes"],
    ] {
        assert!(can(t, "bob", job), "the admin cannot {job:?}");
    }
    for escalation in [
        &["create", "secrets", "-n", "default"][..],
        &["patch", "namespaces"],
        &["delete", "namespaces"],
        &["create", "clusterrolebindings"],
        &["create", "pods", "--subresource=exec", "-n", "default"],
        &["get", "pods", "--subresource=exec", "-n", "default"],
        &["create", "serviceaccounts", "--subresource=token", "-n", "default"],
    ] {
        assert!(!can(t, "bob", escalation), "the admin role can {escalation:?}");
    }
    // The controller: reads for backups, impersonates for restores, writes nothing of its own.
    let sa = format!("system:serviceaccount:{NS}:backup-webhook");
    for job in [
        &["list", "secrets", "-A"][..],
        &["impersonate", "users"],
        &["impersonate", "groups"],
        &["patch", "namespaces"],
        &["create", "secrets", "-n", NS],
    ] {
        assert!(can(t, &sa, job), "the controller cannot {job:?}");
    }
    for escalation in [
        &["create", "secrets", "-n", "default"][..],
        &["create", "pods", "-n", "default"],
        &["delete", "namespaces"],
        &["create", "clusterrolebindings"],
        &["get", "pods", "--subresource=exec", "-n", "default"],
        &["get", "secrets/x", "-n", "default"],
        &["update", "deployments.apps", "-n", "default"],
    ] {
        assert!(!can(t, &sa, escalation), "the controller can {escalation:?}");
    }
    // Read access to our resources is aggregated into the built-in view role.
    assert!(can(t, "carol", &["list", "backupschedules.kubectl-backup.dev", "-n", &team]));
    assert!(!can(t, "carol", &["create", "backupschedules.kubectl-backup.dev", "-n", &team]));
}

#[test]
fn a_forged_restore_from_restores_nothing_and_an_event_says_why() {
    let c = OwnCluster::start("forge");
    let t = &c.t;
    let victim = unique("victim");
    t.apply(&sample_app(&victim)).ok();
    let backup = unique("victim-b");
    t.backup(&["create", &backup, "-n", &victim]).ok();
    let webhook = c.webhook(NS, &[]);
    namespace_creator(t, "alice", "");
    let alice = t.as_user(&c.cp.info.user("alice").kubeconfig);

    let mine = unique("mine");
    alice
        .apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {mine}\n  annotations:\n    kubectl-backup.dev/restore-from: {backup}\n    kubectl-backup.dev/restore-status: InProgress\n"
        ))
        .ok();
    let v = wait_for_status(t, &mine, "NoBackup", || webhook.log());
    assert_eq!(annotation(&v, "kubectl-backup.dev/restore-from"), None, "the forged choice survived: {v}");
    assert!(t.names(&["secrets", "-n", &mine]).iter().all(|s| s != "credentials"), "the victim's Secret was restored");
    assert!(!t.names(&["configmaps", "-n", &mine]).contains(&"settings".to_string()));
    let ev = events(t, &mine);
    let why = ev.iter().find(|(r, _)| r == "MarkIgnored").unwrap_or_else(|| panic!("no MarkIgnored event: {ev:?}"));
    assert!(why.1.contains("alice") && why.1.contains("kubectl-backup.dev/restore-from"), "{}", why.1);

    // With the webhook down (failurePolicy Ignore), a mark copied from her own namespace onto a
    // namespace named like the victim's is refused by the worker: it was made for another object.
    let copied = annotation(&t.get_json(&["namespace", &mine]), "kubectl-backup.dev/admission").expect("a mark");
    let mut webhook = webhook;
    t.delete_namespace(&victim);
    webhook.stop();
    alice
        .apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {victim}\n  annotations:\n    kubectl-backup.dev/admission: {copied}\n"
        ))
        .ok();
    webhook.restart().unwrap();
    let v = wait_for_status(t, &victim, "Refused", || webhook.log());
    assert!(
        !t.names(&["configmaps", "-n", &victim]).contains(&"settings".to_string()),
        "restored from a copied mark: {v}"
    );
    let ev = events(t, &victim);
    let why =
        ev.iter().find(|(r, _)| r == "RestoreRefused").unwrap_or_else(|| panic!("no RestoreRefused event: {ev:?}"));
    assert!(why.1.contains("made for namespaces"), "{}", why.1);
}

#[test]
fn a_restore_never_does_more_than_the_workspace_creator_could() {
    let c = OwnCluster::start("asuser");
    let t = &c.t;
    let shop = unique("shop");
    t.apply(&sample_app(&shop)).ok();
    t.backup(&["create", &unique("b"), "-n", &shop]).ok();
    t.delete_namespace(&shop);
    let webhook = c.webhook(NS, &[]);
    // Alice may create namespaces and most of the app's objects, but not Secrets or RBAC.
    namespace_creator(
        t,
        "alice",
        "- {apiGroups: [\"\"], resources: [configmaps, services, serviceaccounts, persistentvolumeclaims], verbs: [create, get]}\n- {apiGroups: [apps], resources: [deployments], verbs: [create, get]}\n",
    );
    let alice = t.as_user(&c.cp.info.user("alice").kubeconfig);
    alice.kubectl(&["create", "namespace", &shop]).ok();

    let v = wait_for_status(t, &shop, "PartiallyFailed", || webhook.log());
    assert!(t.names(&["configmaps", "-n", &shop]).contains(&"settings".to_string()), "{v}");
    assert!(t.names(&["deployments", "-n", &shop]).contains(&"web".to_string()));
    let secret = t.kubectl(&["get", "secret", "credentials", "-n", &shop]);
    assert!(secret.stderr.contains("NotFound"), "a Secret alice may not create was restored: {secret:?}");
    assert!(!t.names(&["rolebindings", "-n", &shop]).contains(&"web-reads".to_string()));
    let ev = events(t, &shop);
    let done =
        ev.iter().find(|(r, _)| r == "RestoreCompleted").unwrap_or_else(|| panic!("no RestoreCompleted: {ev:?}"));
    assert!(done.1.contains("as alice"), "{}", done.1);
    assert!(
        done.1.contains("secrets credentials") && done.1.contains("forbidden"),
        "the Secret is not reported: {}",
        done.1
    );
}

#[test]
fn catch_up_without_an_identity_restores_nothing_and_says_who_may() {
    let c = OwnCluster::start("pending");
    let t = &c.t;
    let ns = unique("late");
    t.apply(&sample_app(&ns)).ok();
    let backup = unique("b");
    t.backup(&["create", &backup, "-n", &ns]).ok();
    let mut webhook = c.webhook(NS, &[]);
    let ok = wait_until(Duration::from_secs(30), || {
        t.kubectl(&["get", "configmap", "backup-webhook-state", "-n", NS]).code == 0
    });
    assert!(ok, "no worker heartbeat:\n{}", webhook.log());
    t.delete_namespace(&ns);
    webhook.stop();
    t.kubectl(&["create", "namespace", &ns]).ok();
    webhook.restart().unwrap();

    let v = wait_for_status(t, &ns, "Pending", || webhook.log());
    assert_eq!(annotation(&v, "kubectl-backup.dev/restore-from").as_deref(), Some(backup.as_str()));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !t.names(&["configmaps", "-n", &ns]).contains(&"settings".to_string()),
        "restored without a verified creator"
    );
    let ev = events(t, &ns);
    let why = ev.iter().find(|(r, _)| r == "RestorePending").unwrap_or_else(|| panic!("no RestorePending: {ev:?}"));
    assert!(why.1.contains(&format!("kubectl backup restore {backup}")), "{}", why.1);
}

#[test]
fn kube_system_and_the_install_namespace_are_never_sent_to_the_webhook() {
    let c = OwnCluster::start("selector");
    let t = &c.t;
    t.apply(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: workspaces.example.org}\nspec:\n  group: example.org\n  scope: Namespaced\n  names: {plural: workspaces, singular: workspace, kind: Workspace}\n  versions:\n  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}\n",
    )
    .ok();
    t.kubectl(&["wait", "--for=condition=Established", "crd/workspaces.example.org", "--timeout=60s"]).ok();
    let webhook = c.webhook(NS, &["--workspace-resource=workspaces.example.org"]);
    let requests = || {
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/metrics", webhook.metrics_port)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("kubectl_backup_admission_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    // kube-system carries install's skip label (Kubernetes 1.20 has no metadata.name label).
    let ks = t.get_json(&["namespace", "kube-system"]);
    assert_eq!(ks["metadata"]["labels"]["kubectl-backup.dev/admission"], "skip", "{ks}");
    let before = requests();
    for ns in ["kube-system", NS] {
        t.apply(&format!("apiVersion: example.org/v1\nkind: Workspace\nmetadata: {{name: w, namespace: {ns}}}\n")).ok();
    }
    assert_eq!(requests(), before, "the API server sent kube-system or {NS} to the webhook");
    // A workspace elsewhere is sent (the webhook is reachable at all).
    let other = unique("elsewhere");
    t.apply(&namespace(&other)).ok();
    t.apply(&format!("apiVersion: example.org/v1\nkind: Workspace\nmetadata: {{name: w, namespace: {other}}}\n")).ok();
    assert!(requests() >= before + 2, "the namespace and the workspace in it were not sent:\n{}", webhook.log());
    // Uninstall takes the label off kube-system again.
    t.backup(&["uninstall", "--namespace", NS, "--yes"]).ok();
    let ks = t.get_json(&["namespace", "kube-system"]);
    assert!(ks["metadata"]["labels"].get("kubectl-backup.dev/admission").is_none(), "{ks}");
}

#[test]
fn tenant_schedules_may_not_name_urls_or_fire_too_often_and_metrics_can_be_tls_only() {
    let c = OwnCluster::start("tenant");
    let t = &c.t;
    let webhook = c.webhook(NS, &["--continuous=false", "--metrics-tls"]);
    // /metrics behind TLS (--metrics-tls): the webhook's certificate, no plain HTTP.
    let curl = |scheme: &str| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "5", "--cacert"])
            .arg(&webhook.tls.ca)
            .arg(format!("{scheme}://127.0.0.1:{}/metrics", webhook.metrics_port))
            .output()
            .unwrap()
    };
    let https = curl("https");
    assert!(String::from_utf8_lossy(&https.stdout).contains("kubectl_backup_index_backups"), "{https:?}");
    assert!(!String::from_utf8_lossy(&curl("http").stdout).contains("kubectl_backup_"), "metrics served in the clear");
    let team = unique("team");
    t.apply(&namespace(&team)).ok();
    let schedule = |name: &str, cron: &str, location: Option<&str>| {
        let mut spec = json!({"schedule": cron});
        if let Some(l) = location {
            spec["location"] = json!(l);
        }
        let obj = json!({"apiVersion": "kubectl-backup.dev/v1alpha1", "kind": "BackupSchedule",
                         "metadata": {"name": name, "namespace": team}, "spec": spec});
        t.apply(&obj.to_string()).ok();
    };
    let ro = json!({"apiVersion": "kubectl-backup.dev/v1alpha1", "kind": "BackupLocation",
                    "metadata": {"name": "archive", "namespace": NS},
                    "spec": {"url": c.location, "accessMode": "ReadOnly"}});
    t.apply(&ro.to_string()).ok();
    schedule("by-url", "@daily", Some("s3://someone-elses-bucket/prefix"));
    schedule("read-only", "@daily", Some("archive"));
    schedule("too-often", "* * * * *", None);
    schedule("fine", "@daily", None);
    let status = |name: &str| t.get_json(&["backupschedules.kubectl-backup.dev", name, "-n", &team])["status"].clone();
    let refused = |name: &str, want: &str| {
        let ok = wait_until(Duration::from_secs(30), || {
            let s = status(name);
            s["conditions"].as_array().into_iter().flatten().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "False"
                    && c["reason"] == "Refused"
                    && c["message"].as_str().is_some_and(|m| m.contains(want))
            })
        });
        assert!(ok, "{name} not refused with {want:?}: {}", status(name));
    };
    refused("by-url", "may name only a BackupLocation");
    refused("too-often", "--min-schedule-interval");
    refused("read-only", "is ReadOnly");
    let ok = wait_until(Duration::from_secs(30), || {
        status("fine")["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    assert!(ok, "an allowed schedule is not Ready: {}", status("fine"));
}

/// A committed backup in `dir` (a `file://` location) rewritten to hold exactly `entries`
/// (`(path, body)`, written as the tar+zstd archive `raw` if given, else built here), with the
/// metadata's digests, size and SHA-256 made to match: only the restore's own checks can refuse it.
fn rewrite_backup(dir: &std::path::Path, name: &str, entries: &[(String, Vec<u8>)], raw: Option<Vec<u8>>) {
    let raw = raw.unwrap_or_else(|| {
        let mut raw = Vec::new();
        {
            let enc = zstd::Encoder::new(&mut raw, 3).unwrap().auto_finish();
            let mut tar = tar::Builder::new(enc);
            for (path, body) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, path, body.as_slice()).unwrap();
            }
            tar.finish().unwrap();
        }
        raw
    });
    let archive = std::fs::read_dir(dir.join("backups").join(name))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("archive-"))
        .expect("an archive file");
    std::fs::write(&archive, &raw).unwrap();
    // The contents file lists the forged entries with their true digests, in archive order.
    kubectl_backup_e2e::fixtures::rewrite_contents(dir, name, |lines| {
        *lines = entries
            .iter()
            .map(|(p, b)| json!({"path": p, "sha256": kubectl_backup_core::archive::sha256_hex(b), "size": b.len()}))
            .collect();
    });
    let meta_path = dir.join("backups").join(name).join("metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["backup"]["status"]["archive"]["size"] = json!(raw.len());
    meta["backup"]["status"]["archive"]["sha256"] = json!(kubectl_backup_core::archive::sha256_hex(&raw));
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// Tools on the shared cluster with a fresh `file://` location.
fn shared_with_file_location(prefix: &str) -> (Tools, std::path::PathBuf) {
    let env = kubectl_backup_e2e::env::SharedEnv::load().expect("shared environment");
    let dir = env.scratch.join(unique(prefix));
    let mut t = Tools::new(&env.cluster);
    t.location = Some(format!("file://{}", dir.display()));
    (t, dir)
}

#[test]
fn a_forged_archive_cannot_create_a_cluster_wide_binding_in_a_namespace_restore() {
    let (t, dir) = shared_with_file_location("forged");
    let ns = unique("tenant");
    t.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{a: b}}\n",
        namespace(&ns)
    ))
    .ok();
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();
    // A local location is its owner's alone: directories 0700, files 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&dir.join("backups").join(&name)), 0o700);
    for f in std::fs::read_dir(dir.join("backups").join(&name)).unwrap().flatten() {
        assert_eq!(mode(&f.path()), 0o600, "{}", f.path().display());
    }
    t.delete_namespace(&ns);
    let binding = unique("evil");
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": binding},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                     "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns}, "data": {"a": "b"}});
    let forged_path = format!("resources/clusterrolebindings.rbac.authorization.k8s.io/namespaces/{ns}/{binding}.json");
    rewrite_backup(
        &dir,
        &name,
        &[
            (format!("resources/configmaps/namespaces/{ns}/settings.json"), cm.to_string().into_bytes()),
            (forged_path.clone(), crb.to_string().into_bytes()),
        ],
        None,
    );
    let r = t.backup(&["restore", &name, "--include-namespaces", &ns]);
    assert_eq!(r.code, 1, "a forged archive was restored: {r:?}");
    assert!(
        r.stderr.contains(&forged_path) && r.stderr.contains("cluster-scoped") && r.stderr.contains("namespace"),
        "the refusal does not name the forged entry: {}",
        r.stderr
    );
    assert!(t.kubectl(&["get", "clusterrolebinding", &binding]).stderr.contains("NotFound"), "the binding was created");
    assert_ne!(t.kubectl(&["get", "namespace", &ns]).code, 0, "the restore wrote before refusing");

    // An entry whose object is not what its path says (a ConfigMap path holding a Secret of
    // another name) is refused too.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other", "namespace": ns}});
    rewrite_backup(
        &dir,
        &name,
        &[(format!("resources/configmaps/namespaces/{ns}/settings.json"), secret.to_string().into_bytes())],
        None,
    );
    let r = t.backup(&["restore", &name]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("holds an object named \"other\""), "{}", r.stderr);
}

#[test]
fn a_zstd_bomb_is_refused_with_memory_bounded() {
    let (t, dir) = shared_with_file_location("bomb");
    let ns = unique("bomb");
    t.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x, namespace: {ns}}}\n",
        namespace(&ns)
    ))
    .ok();
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();
    // A GNU long-name record that claims 1 GiB (the tar reader would buffer it whole), followed
    // by 1 GiB of zeros: about 40 KiB compressed.
    const GIB: u64 = 1 << 30;
    let mut raw = Vec::new();
    {
        use std::io::Write;
        let mut enc = zstd::Encoder::new(&mut raw, 1).unwrap();
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_size(GIB);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_cksum();
        enc.write_all(h.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap();
    }
    assert!(raw.len() < 1 << 20, "the bomb is {} bytes compressed", raw.len());
    let path = format!("resources/configmaps/namespaces/{ns}/x.json");
    rewrite_backup(&dir, &name, &[(path, b"{}".to_vec())], Some(raw));
    // The plugin under GNU time: its peak RSS, whatever the archive claims.
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "maxrss-kib=%M"])
        .arg(kubectl_backup_e2e::fixtures::plugin_path())
        .args(["restore", &name, "--location", t.location.as_deref().unwrap()])
        .env("KUBECONFIG", &t.kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a long-name record of 1073741824 bytes") && stderr.contains("refused before reading it"),
        "{stderr}"
    );
    let rss_kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS figure in {stderr}"));
    assert!(rss_kib < 200 * 1024, "peak RSS {rss_kib} KiB while refusing a 1 GiB bomb");
}

/// An account SAS for Azurite, made by Azure's own SDK (installed beside Azurite by
/// tests/env/install.sh), for the blob service.
fn azurite_sas() -> String {
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    let script = format!(
        r#"const b = require('@azure/storage-blob');
const cred = new b.StorageSharedKeyCredential('{}', '{}');
console.log(b.generateAccountSASQueryParameters({{expiresOn: new Date(Date.now() + 3600e3),
  permissions: b.AccountSASPermissions.parse('rwdlac'), services: 'b', resourceTypes: 'sco'}}, cred).toString());"#,
        kubectl_backup_e2e::stores::AZURE_ACCOUNT,
        kubectl_backup_e2e::stores::AZURE_KEY
    );
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .env("NODE_PATH", cache.join("kubectl-backup/azurite/node_modules"))
        .output()
        .expect("running node");
    assert!(out.status.success(), "SAS generation failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn store_errors_reach_events_and_status_without_the_sas_token() {
    let c = OwnCluster::start("redact");
    let t = &c.t;
    let sas = azurite_sas();
    let sig = sas.split('&').find_map(|p| p.strip_prefix("sig=")).expect("a signature").to_string();
    let decoded = sig.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=");
    let webhook = c.webhook(NS, &["--continuous=false"]);
    let azure = c.env.azure.as_ref().expect("the Azure server, which tests/run.sh starts");
    let endpoint = azure.env.iter().find(|(k, _)| k == "AZURE_STORAGE_ENDPOINT").unwrap().1.clone();
    t.kubectl(&[
        "create",
        "secret",
        "generic",
        "sas-creds",
        "-n",
        NS,
        &format!("--from-literal=AZURE_STORAGE_ACCOUNT_NAME={}", kubectl_backup_e2e::stores::AZURE_ACCOUNT),
        &format!("--from-literal=AZURE_STORAGE_SAS_TOKEN={sas}"),
        &format!("--from-literal=AZURE_STORAGE_ENDPOINT={endpoint}"),
        "--from-literal=AZURE_ALLOW_HTTP=true",
    ])
    .ok();
    let objs = [
        json!({"apiVersion": "kubectl-backup.dev/v1alpha1", "kind": "BackupLocation",
               "metadata": {"name": "missing", "namespace": NS},
               "spec": {"url": "az://no-such-container/backups", "credentialsSecret": "sas-creds", "accessMode": "ReadWrite"}}),
        json!({"apiVersion": "kubectl-backup.dev/v1alpha1", "kind": "BackupSchedule",
               "metadata": {"name": "to-missing", "namespace": NS},
               "spec": {"schedule": "*/3 * * * * *", "location": "missing", "includedNamespaces": [NS]}}),
    ];
    for o in objs {
        t.apply(&o.to_string()).ok();
    }
    let status = || t.get_json(&["backupschedules.kubectl-backup.dev", "to-missing", "-n", NS])["status"].clone();
    let failed = wait_until(Duration::from_secs(60), || status()["lastResult"] == "Failed");
    assert!(failed, "the schedule did not fail: {}\n{}", status(), webhook.log());
    let error = status()["lastError"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("no-such-container"), "the error does not name the container: {error}");
    let ev: Vec<String> = events(t, NS).into_iter().filter(|(r, _)| r == "BackupFailed").map(|(_, m)| m).collect();
    assert!(!ev.is_empty(), "no BackupFailed event");
    for text in ev.iter().chain([&error]) {
        assert!(!text.contains(&sig) && !text.contains(&decoded), "the SAS signature leaked: {text}");
    }
}

/// `presign url METHOD KEY` for a key of `c`'s location, signed with the S3 server's credentials.
fn presigned(c: &OwnCluster, method: &str, key: &str) -> String {
    let out = std::process::Command::new(kubectl_backup_e2e::fixtures::bin_dir().join("presign"))
        .args(["--location", &c.location, "url", method, key])
        .envs(c.env.s3.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("running presign");
    assert!(out.status.success(), "presign: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The volume data a backup holds is restored by the plugin only, with the user's own rights:
/// the controller never creates a mover Pod. The backup here claims to hold a claim's data (its
/// `status.volumes` written as a writer with the location's credentials could, or as
/// `kubectl backup create --include-volumes` would), and the workspace's creator may create Pods
/// and Secrets — so a controller that moved volume data would create a mover Pod as her, which
/// this test would see (on this node-less cluster it would stay Pending).
#[test]
fn the_controller_restores_the_objects_of_a_backup_with_volume_data_and_never_a_mover_pod() {
    let c = OwnCluster::start("novolume");
    let t = &c.t;
    let shop = unique("shop");
    t.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {shop}}}\ndata: {{a: b}}\n",
        namespace(&shop)
    ))
    .ok();
    let pv = bound_claim(t, &shop);
    let backup = unique("b");
    t.backup(&["create", &backup, "-n", &shop]).ok();

    // The forged volume entry: its one part is the backup's own archive (a file of the backup, of
    // the size and SHA-256 the entry names), so every check a restore makes passes.
    let meta_key = format!("backups/{backup}/metadata.json");
    let get = t.sh(&format!("curl -sf '{}'", presigned(&c, "get", &meta_key))).ok();
    let mut meta: Value = serde_json::from_str(&get.stdout).expect("metadata.json");
    let archive = meta["backup"]["status"]["archive"].clone();
    let volume = kubectl_backup_core::model::VolumeData {
        namespace: shop.clone(),
        claim: "data".into(),
        storage_class: Some("manual".into()),
        volume_name: Some(pv.clone()),
        capacity: Some("1Gi".into()),
        format: kubectl_backup_core::volume::mover::FORMAT.into(),
        size: archive["size"].as_u64().expect("archive size"),
        sha256: archive["sha256"].as_str().expect("archive sha256").into(),
        parts: vec![serde_json::from_value(
            json!({"key": archive["key"], "size": archive["size"], "sha256": archive["sha256"], "format": kubectl_backup_core::volume::mover::FORMAT}),
        )
        .expect("a part")],
        ..Default::default()
    };
    meta["backup"]["status"]["volumes"] = json!([volume]);
    let forged = c.dir.join("metadata.json");
    std::fs::write(&forged, serde_json::to_vec(&meta).unwrap()).unwrap();
    t.sh(&format!("curl -sf -T '{}' '{}'", forged.display(), presigned(&c, "put", &meta_key))).ok();
    let described = t.backup(&["describe", &backup, "-o", "json"]).ok().json();
    assert_eq!(described["status"]["volumes"][0]["claim"], "data", "the forged entry did not land: {described}");

    t.delete_namespace(&shop);
    t.kubectl(&["delete", "pv", &pv, "--wait=false"]).ok();
    let webhook = c.webhook(NS, &[]);
    // Alice may create everything a mover needs in her namespace: Pods and their plan Secrets.
    namespace_creator(
        t,
        "alice",
        "- {apiGroups: [\"\"], resources: [configmaps, persistentvolumeclaims, pods, secrets], verbs: [create, get, list, delete]}\n",
    );
    assert!(can(t, "alice", &["create", "pods", "-n", &shop]) && can(t, "alice", &["create", "secrets", "-n", &shop]));
    let alice = t.as_user(&c.cp.info.user("alice").kubeconfig);
    alice.kubectl(&["create", "namespace", &shop]).ok();

    // Until the restore ends, no mover Pod may appear.
    let mover = kubectl_backup_core::volume::MOVER_LABEL;
    let mut status = None;
    let ended = wait_until(Duration::from_secs(90), || {
        let pods = t.names(&["pods", "-n", &shop, "-l", mover]);
        assert!(pods.is_empty(), "the controller created mover Pod(s) {pods:?}\nwebhook log:\n{}", webhook.log());
        status = annotation(&t.get_json(&["namespace", &shop]), "kubectl-backup.dev/restore-status");
        matches!(status.as_deref(), Some("Completed" | "PartiallyFailed" | "Failed"))
    });
    assert!(ended, "the restore did not end within 90s (status {status:?})\nwebhook log:\n{}", webhook.log());
    assert!(t.names(&["pods", "-n", &shop, "-l", mover]).is_empty());
    assert_ne!(status.as_deref(), Some("Failed"), "{}", webhook.log());
    assert!(t.names(&["configmaps", "-n", &shop]).contains(&"settings".to_string()));
    assert!(t.names(&["pvc", "-n", &shop]).contains(&"data".to_string()), "the claim's object was not restored");
    let ev = events(t, &shop);
    let done =
        ev.iter().find(|(r, _)| r == "RestoreCompleted").unwrap_or_else(|| panic!("no RestoreCompleted: {ev:?}"));
    assert!(
        done.1.contains(&format!("PersistentVolumeClaim(s) {shop}/data, which this restore leaves out")),
        "the Event does not say the data was left out: {}",
        done.1
    );
}

/// A hostPath PersistentVolume and claim `data` bound to it in `ns` (the controller-manager binds
/// them; no node is needed). Returns the volume's name.
fn bound_claim(t: &Tools, ns: &str) -> String {
    let pv = unique("pv");
    t.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {{path: /tmp/{pv}}}
  claimRef: {{namespace: {ns}, name: data}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: {pv}
  resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
    .ok();
    let bound =
        wait_until(Duration::from_secs(60), || t.get_json(&["pvc", "data", "-n", ns])["status"]["phase"] == "Bound");
    assert!(bound, "the claim is not Bound: {}", t.get_json(&["pvc", "data", "-n", ns]));
    pv
}

/// In-cluster backups with volume data never create mover Pods with the controller's rights. A
/// tenant's Backup request with `includeVolumes` moves data as her: she may read her claims but
/// not create Pods, so the backup names the claim and the Pod creation refused for `alice`. A
/// schedule's movers act only as the identity the admin names (`--volume-identity`): with none,
/// its claims are reported. Neither leaves a mover Pod.
#[test]
fn in_cluster_volume_backups_create_mover_pods_only_as_the_requester_or_the_admins_identity() {
    let c = OwnCluster::start("volreq");
    let t = &c.t;
    let mine = unique("mine");
    t.apply(&namespace(&mine)).ok();
    bound_claim(t, &mine);
    let webhook = c.webhook(NS, &["--continuous-include-volumes=true", "--debounce=1s"]);
    t.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-operator, namespace: {mine}}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
roleRef: {{kind: ClusterRole, name: kubectl-backup-operator, apiGroup: rbac.authorization.k8s.io}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: alice-claims, namespace: {mine}}}
rules: [{{apiGroups: [""], resources: [persistentvolumeclaims, pods], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-claims, namespace: {mine}}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
roleRef: {{kind: Role, name: alice-claims, apiGroup: rbac.authorization.k8s.io}}
"#
    ))
    .ok();
    assert!(!can(t, "alice", &["create", "pods", "-n", &mine]));
    let alice = t.as_user(&c.cp.info.user("alice").kubeconfig);
    let movers = || t.names(&["pods", "-n", &mine, "-l", kubectl_backup_core::volume::MOVER_LABEL]);

    // Her request: the movers act as her, and she may not create Pods.
    let req = unique("vol");
    alice
        .apply(&format!(
            "apiVersion: kubectl-backup.dev/v1alpha1\nkind: Backup\nmetadata: {{name: {req}, namespace: {mine}}}\nspec:\n  includeVolumes: true\n"
        ))
        .ok();
    let mut st = Value::Null;
    let done = wait_until(Duration::from_secs(60), || {
        assert!(movers().is_empty(), "a mover Pod was created: {:?}\n{}", movers(), webhook.log());
        st = t.get_json(&["backups.kubectl-backup.dev", &req, "-n", &mine])["status"].clone();
        matches!(st["phase"].as_str(), Some("Completed" | "PartiallyFailed" | "Failed"))
    });
    assert!(done, "the request did not finish: {st}\n{}", webhook.log());
    assert_eq!(st["phase"], "PartiallyFailed", "{st}");
    let errors = st["errors"].to_string();
    assert!(
        errors.contains(&format!("PersistentVolumeClaim {mine}/data was not backed up"))
            && errors.contains("cannot create the mover Pod")
            && errors.contains("User \\\"alice\\\" cannot create resource \\\"pods\\\""),
        "the error does not name the claim and alice's refused Pod: {errors}"
    );
    let described = t.backup(&["describe", &req, "-o", "json"]).ok().json();
    assert_eq!(described["status"]["volumes"], Value::Null, "{described}");

    // An admin's schedule of the same namespace with includeVolumes, and no --volume-identity.
    t.apply(&format!(
        "apiVersion: kubectl-backup.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: vols, namespace: {NS}}}\nspec:\n  schedule: \"*/3 * * * * *\"\n  includedNamespaces: [{mine}]\n  includeVolumes: true\n"
    ))
    .ok();
    let mut s = Value::Null;
    let ran = wait_until(Duration::from_secs(60), || {
        assert!(movers().is_empty(), "a mover Pod was created: {:?}\n{}", movers(), webhook.log());
        s = t.get_json(&["backupschedules.kubectl-backup.dev", "vols", "-n", NS])["status"].clone();
        s["lastResult"].is_string()
    });
    assert!(ran, "the schedule did not run: {s}\n{}", webhook.log());
    t.kubectl(&[
        "patch",
        "backupschedules.kubectl-backup.dev",
        "vols",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ])
    .ok();
    assert_eq!(s["lastResult"], "PartiallyFailed", "{s}");
    let last = s["lastError"].as_str().unwrap_or_default();
    assert!(
        last.contains(&format!("PersistentVolumeClaim {mine}/data was not backed up"))
            && last.contains("only as an identity the admin names (backup-webhook --volume-identity"),
        "{s}"
    );

    // Continuous backups of her namespace (--continuous-include-volumes; the RBAC above changed
    // it), with no identity either.
    let mut cont = Value::Null;
    let found = wait_until(Duration::from_secs(60), || {
        let list = t.backup(&["list", "-o", "json"]).ok().json();
        cont = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["spec"]["schedule"] == "continuous" && b["spec"]["includedNamespaces"][0] == mine.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        !cont.is_null()
    });
    assert!(found, "no continuous backup of {mine}\n{}", webhook.log());
    assert_eq!(cont["spec"]["includeVolumes"], true, "{cont}");
    let errors = cont["status"]["errors"].to_string();
    assert!(
        errors.contains(&format!("PersistentVolumeClaim {mine}/data was not backed up"))
            && errors.contains("none is set"),
        "{cont}"
    );
    assert!(movers().is_empty());
}
