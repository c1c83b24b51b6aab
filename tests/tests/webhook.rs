//! The admission webhook with the real kube-apiserver calling it over TLS. Each test has its own
//! control plane, so the webhook never touches namespaces of other tests.

use std::time::{Duration, Instant};

use kubectl_backup_e2e::fixtures::{
    OwnCluster, annotation, catch_up_identity, crd, events, eventually, namespace, sample_app, unique, wait_until,
};
use kubectl_backup_e2e::process::connections_to;
use kubectl_backup_e2e::webhook::Webhook;
use serde_json::Value;

struct Setup(OwnCluster);

fn setup(name: &str) -> Setup {
    Setup(OwnCluster::start(name))
}

impl std::ops::Deref for Setup {
    type Target = OwnCluster;
    fn deref(&self) -> &OwnCluster {
        &self.0
    }
}

impl Setup {
    /// The webhook as installed (ServiceAccount, roles, webhook configuration), registered with
    /// the API server.
    fn webhook(&self, own_namespace: &str, extra: &[&str]) -> Webhook {
        self.0.webhook(own_namespace, extra)
    }

    fn ns_json(&self, ns: &str) -> Value {
        self.t.get_json(&["namespace", ns])
    }
}

#[test]
fn a_recreated_namespace_comes_back_by_itself() {
    let s = setup("auto");
    s.t.apply(&namespace("kubectl-backup")).ok();
    let ns = unique("shop");
    s.t.apply(&sample_app(&ns)).ok();
    let backup = unique("b");
    s.t.backup(&["create", &backup, "-n", &ns]).ok();
    let webhook = s.webhook("kubectl-backup", &[]);
    s.t.delete_namespace(&ns);

    let start = Instant::now();
    s.t.kubectl(&["create", "namespace", &ns]).ok();
    // The API server called the webhook: the annotation is there as soon as the namespace is.
    assert_eq!(
        annotation(&s.ns_json(&ns), "kubectl-backup.dev/restore-from").as_deref(),
        Some(backup.as_str()),
        "{}",
        webhook.log()
    );
    eventually("objects restored", Duration::from_secs(10), || {
        s.t.names(&["configmaps", "-n", &ns]).contains(&"settings".to_string())
    });
    eventually("restore-status Completed", Duration::from_secs(10), || {
        annotation(&s.ns_json(&ns), "kubectl-backup.dev/restore-status").as_deref() == Some("Completed")
    });
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    for obj in ["deployment/web", "service/web", "secret/credentials", "rolebinding/web-reads", "pvc/data"] {
        s.t.kubectl(&["get", obj, "-n", &ns]).ok();
    }
    let ev = events(&s.t, &ns);
    assert!(ev.iter().any(|(r, _)| r == "RestoreStarted"), "{ev:?}");
    let done =
        ev.iter().find(|(r, _)| r == "RestoreCompleted").unwrap_or_else(|| panic!("no RestoreCompleted event: {ev:?}"));
    assert!(done.1.contains("created") && done.1.contains("failed 0"), "counts missing: {}", done.1);
    // Metrics count it.
    let metrics = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{}/metrics", webhook.metrics_port)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(text.contains("kubectl_backup_admission_requests_total{decision=\"restore\"} 1"), "{text}");
    assert!(text.contains("kubectl_backup_workspace_restores_total{result=\"Completed\"} 1"), "{text}");
    // `workspace list` shows it.
    let list = s.t.backup(&["workspace", "list", "-o", "json"]).ok().json();
    let row = list["items"].as_array().unwrap().iter().find(|r| r["name"] == ns.as_str()).unwrap().clone();
    assert_eq!(row["restoreStatus"], "Completed");
    assert_eq!(row["newestBackup"], backup.as_str());
    assert_eq!(row["ephemeral"], false);
    // The restore history has it, with its log.
    let history = s.t.backup(&["restore", "list", "-o", "json"]).ok().json();
    let rec = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["spec"]["backupName"] == backup.as_str())
        .unwrap_or_else(|| panic!("the automatic restore is not in the history: {history}"));
    assert_eq!(rec["status"]["phase"], "Completed", "{rec}");
    let log = s.t.backup(&["logs", &format!("restore/{}", rec["metadata"]["name"].as_str().unwrap())]).ok().stdout;
    assert!(log.contains(&format!("automatic restore of workspace {ns} from backup {backup}")), "{log}");

    // The binary's connections to the API server (its watches, the restore's requests) have Nagle's
    // algorithm off: with it on, a request written right after the TLS handshake waited some 40 ms
    // for the server's delayed ACK.
    let server: std::net::SocketAddr = s.cp.info.server.trim_start_matches("https://").parse().unwrap();
    let connections = connections_to(webhook.pid().unwrap(), server).unwrap();
    assert!(!connections.is_empty(), "the webhook has no connection to the API server at {server}");
    for c in &connections {
        assert!(
            c.nodelay().unwrap(),
            "the webhook's connection {:?} to the API server has Nagle's algorithm on",
            c.local_addr()
        );
    }
}

#[test]
fn the_newest_backup_even_seconds_old_is_the_one_restored() {
    let s = setup("fresh");
    // The index is loaded once at start and never again: only the worker's re-read of the
    // location can know the backups below.
    let webhook = s.webhook("kubectl-backup", &["--index-refresh=1h", "--continuous=false"]);
    let ns = unique("fresh");
    s.t.apply(&sample_app(&ns)).ok();
    s.t.backup(&["create", &unique("older"), "-n", &ns]).ok();
    s.t.kubectl(&["patch", "configmap", "settings", "-n", &ns, "--type=merge", "-p", r#"{"data":{"color":"red"}}"#])
        .ok();
    let newer = unique("newer");
    s.t.backup(&["create", &newer, "-n", &ns]).ok();
    let start = Instant::now();
    s.t.delete_namespace(&ns);
    s.t.kubectl(&["create", "namespace", &ns]).ok();
    let since_backup = start.elapsed();
    let done = wait_until(Duration::from_secs(60), || {
        annotation(&s.ns_json(&ns), "kubectl-backup.dev/restore-status").as_deref() == Some("Completed")
    });
    assert!(done, "not restored: {}\n{}", s.ns_json(&ns), webhook.log());
    assert_eq!(annotation(&s.ns_json(&ns), "kubectl-backup.dev/restore-from").as_deref(), Some(newer.as_str()));
    let cm = s.t.get_json(&["configmap", "settings", "-n", &ns]);
    assert_eq!(cm["data"]["color"], "red", "restored from the older backup");
    eprintln!("backup to re-creation: {since_backup:?}");
}

#[test]
fn ephemeral_workspaces_are_labelled_and_never_restored_or_backed_up() {
    let s = setup("eph");
    s.t.apply(&namespace("kubectl-backup")).ok();
    let by_pattern = unique("pr");
    let by_flag = unique("feature");
    for ns in [&by_pattern, &by_flag] {
        s.t.apply(&sample_app(ns)).ok();
    }
    // Backups of both exist (named explicitly), so without the ephemeral rule they would be restored.
    s.t.backup(&["create", &unique("b"), "--include-namespaces", &format!("{by_pattern},{by_flag}")]).ok();
    let webhook = s.webhook("kubectl-backup", &["--ephemeral-pattern=pr-*,tmp-*"]);
    s.t.delete_namespace(&by_pattern);
    s.t.delete_namespace(&by_flag);

    s.t.kubectl(&["create", "namespace", &by_pattern]).ok();
    let out = s.t.backup(&["workspace", "new", &by_flag, "--ephemeral"]).ok().stdout;
    assert!(out.contains("ephemeral"), "{out}");
    for ns in [&by_pattern, &by_flag] {
        let v = s.ns_json(ns);
        assert_eq!(
            v["metadata"]["labels"]["kubectl-backup.dev/ephemeral"],
            "true",
            "{ns} not labelled: {v}\n{}",
            webhook.log()
        );
        assert_eq!(annotation(&v, "kubectl-backup.dev/restore-from"), None);
    }
    std::thread::sleep(Duration::from_secs(5));
    for ns in [&by_pattern, &by_flag] {
        assert!(!s.t.names(&["configmaps", "-n", ns]).contains(&"settings".to_string()), "ephemeral {ns} was restored");
    }
    // A whole-cluster backup skips them.
    s.t.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {by_pattern}\n")).ok();
    let all = s.t.backup(&["create", &unique("all"), "-o", "json"]).ok().json();
    let namespaces = all["status"]["namespaces"].to_string();
    assert!(!namespaces.contains(&by_pattern) && !namespaces.contains(&by_flag), "{namespaces}");
    let list = s.t.backup(&["workspace", "list", "-o", "json"]).ok().json();
    let eph: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ephemeral"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(eph.contains(&by_pattern.as_str()) && eph.contains(&by_flag.as_str()), "{eph:?}");
}

#[test]
fn a_namespace_created_while_the_webhook_is_down_is_restored_after_restart_as_the_catch_up_identity() {
    let s = setup("down");
    s.t.apply(&namespace("kubectl-backup")).ok();
    let ns = unique("late");
    s.t.apply(&sample_app(&ns)).ok();
    s.t.backup(&["create", &unique("b"), "-n", &ns]).ok();
    // Catch-up restores run only as an identity the admin chose (nobody vouches for the creator).
    let identity = catch_up_identity(&s.t, "kubectl-backup");
    let mut webhook = s.webhook("kubectl-backup", &[&format!("--catch-up-identity={identity}")]);
    // Let the worker record that it has been running.
    eventually("the worker heartbeat", Duration::from_secs(30), || {
        s.t.kubectl(&["get", "configmap", "backup-webhook-state", "-n", "kubectl-backup"]).code == 0
    });
    s.t.delete_namespace(&ns);
    webhook.stop();

    // failurePolicy: Ignore — creation succeeds while the webhook is down, unmarked.
    let created = s.t.kubectl(&["create", "namespace", &ns]);
    assert_eq!(created.code, 0, "namespace creation blocked by a stopped webhook: {}", created.stderr);
    assert_eq!(annotation(&s.ns_json(&ns), "kubectl-backup.dev/restore-from"), None);

    webhook.restart().unwrap();
    let restored = wait_until(Duration::from_secs(60), || {
        annotation(&s.ns_json(&ns), "kubectl-backup.dev/restore-status").as_deref() == Some("Completed")
    });
    assert!(restored, "no catch-up restore within 60s; namespace: {}\nwebhook log:\n{}", s.ns_json(&ns), webhook.log());
    assert!(s.t.names(&["configmaps", "-n", &ns]).contains(&"settings".to_string()), "{}", webhook.log());
    assert!(s.t.names(&["deployments", "-n", &ns]).contains(&"web".to_string()));
}

#[test]
fn rotated_certificates_are_served_without_a_restart() {
    let s = setup("rotate");
    s.t.apply(&namespace("kubectl-backup")).ok();
    let webhook = s.webhook("kubectl-backup", &[]);
    let url = format!("https://127.0.0.1:{}/healthz", webhook.port);
    let curl_with = |ca: &std::path::Path| {
        std::process::Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "3", "--cacert"])
            .arg(ca)
            .arg(&url)
            .status()
            .unwrap()
            .success()
    };
    let old_ca = s.dir.join("old-ca.crt");
    std::fs::copy(&webhook.tls.ca, &old_ca).unwrap();
    assert!(curl_with(&old_ca));
    // A new CA and certificate written over the files the webhook reads.
    let ca = kubectl_backup_core::pki::Ca::new("rotated-ca").unwrap();
    let (cert, key) = ca.leaf("backup-webhook", &["127.0.0.1"]).unwrap();
    let new_ca = s.dir.join("new-ca.crt");
    std::fs::write(&new_ca, &ca.cert_pem).unwrap();
    std::fs::write(&webhook.tls.key, key).unwrap();
    std::fs::write(&webhook.tls.cert, cert).unwrap();
    eventually("the new certificate served", Duration::from_secs(10), || curl_with(&new_ca));
    assert!(!curl_with(&old_ca), "the old certificate is still served");
    assert!(webhook.log().contains("serving certificate reloaded"));
    // And the API server, given the new CA bundle, still gets answers.
    webhook.register(&s.t, &ca.cert_pem);
    std::thread::sleep(Duration::from_secs(1));
    s.t.kubectl(&["create", "namespace", "pr-after-rotation", "--dry-run=server"]).ok();
    let n = webhook.log().matches("admission").count();
    assert!(n >= 1, "the API server did not reach the webhook after rotation:\n{}", webhook.log());
}

#[test]
fn own_and_system_namespaces_are_never_mutated_and_bad_bodies_get_answers() {
    let s = setup("own");
    let own = "backup-system";
    s.t.apply(&namespace(own)).ok();
    s.t.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {own}\n")).ok();
    // A whole-cluster backup: it contains kube-system and the webhook's own namespace.
    s.t.backup(&["create", &unique("all")]).ok();
    let webhook = s.webhook(own, &["--ephemeral-pattern=kube-*,backup-*"]);
    let post = |body: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--max-time", "5", "-H", "Content-Type: application/json", "--cacert"])
            .arg(&webhook.tls.ca)
            .args(["--data-binary", body, &format!("https://127.0.0.1:{}/mutate", webhook.port)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    for ns in ["kube-system", "kube-public", "kube-node-lease", own] {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "x", "kind": {"group": "", "version": "v1", "kind": "Namespace"},
                "resource": {"group": "", "version": "v1", "resource": "namespaces"}, "name": ns, "operation": "CREATE",
                "userInfo": {}, "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}}
        });
        let (code, body) = post(&review.to_string());
        assert_eq!(code, "200");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none(), "{ns} was mutated: {body}");
    }
    // Through the API server: the webhook's own namespace, deleted and created again, is untouched.
    s.t.delete_namespace(own);
    s.t.kubectl(&["create", "namespace", own]).ok();
    let v = s.ns_json(own);
    assert_eq!(annotation(&v, "kubectl-backup.dev/restore-from"), None, "{v}");
    assert!(v["metadata"]["labels"].get("kubectl-backup.dev/ephemeral").is_none(), "{v}");
    // Malformed bodies: an answer, not a hang or a crash.
    for bad in ["", "{", "null", "[]", r#"{"request": 5}"#, &"x".repeat(100_000)] {
        let (code, _) = post(bad);
        assert!(code == "400" || code == "200", "{bad:.20}: HTTP {code}");
    }
    let (code, _) = post(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#);
    assert_eq!(code, "200");
    // Still serving.
    assert!(
        std::process::Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--cacert"])
            .arg(&webhook.tls.ca)
            .arg(format!("https://127.0.0.1:{}/healthz", webhook.port))
            .status()
            .unwrap()
            .success()
    );
}

/// Serves a cluster-scoped `workspaces.example.org` resource.
fn workspace_crd(s: &Setup) {
    s.t.apply(&crd("example.org", "workspaces", "Workspace", "Cluster")).ok();
    s.t.kubectl(&["wait", "--for=condition=Established", "crd/workspaces.example.org", "--timeout=60s"]);
}

/// A namespace with the sample app, backed up and deleted.
fn backed_up_and_deleted(s: &Setup, prefix: &str) -> String {
    let ns = unique(prefix);
    s.t.apply(&sample_app(&ns)).ok();
    s.t.backup(&["create", &unique("b"), "-n", &ns]).ok();
    s.t.delete_namespace(&ns);
    ns
}

/// The webhook with `workspaces.example.org` as a workspace resource (install registers it).
fn workspace_webhook(s: &Setup) -> Webhook {
    let identity = catch_up_identity(&s.t, "kubectl-backup");
    s.0.webhook(
        "kubectl-backup",
        &["--workspace-resource=workspaces.example.org", &format!("--catch-up-identity={identity}")],
    )
}

/// The workspace's restore completes and namespace `ns` holds the sample app again — as the
/// restore's output, not as a second workspace to restore.
fn assert_workspace_restored(s: &Setup, ns: &str, webhook: &Webhook) {
    let ws = || s.t.get_json(&["workspaces.example.org", ns]);
    let restored = wait_until(Duration::from_secs(60), || {
        annotation(&ws(), "kubectl-backup.dev/restore-status").as_deref() == Some("Completed")
    });
    assert!(restored, "no restore within 60s; workspace: {}\nwebhook log:\n{}", ws(), webhook.log());
    assert!(s.t.names(&["configmaps", "-n", ns]).contains(&"settings".to_string()));
    assert!(s.t.names(&["deployments", "-n", ns]).contains(&"web".to_string()));
    assert_eq!(annotation(&s.ns_json(ns), "kubectl-backup.dev/restore-from"), None, "{}", s.ns_json(ns));
}

fn workspace(name: &str) -> String {
    format!("apiVersion: example.org/v1\nkind: Workspace\nmetadata:\n  name: {name}\n")
}

#[test]
fn a_new_workspace_resource_brings_its_namespace_back() {
    let s = setup("wsres");
    s.t.apply(&namespace("kubectl-backup")).ok();
    workspace_crd(&s);
    let ns = backed_up_and_deleted(&s, "team");

    let webhook = workspace_webhook(&s);
    s.t.apply(&workspace(&ns)).ok();
    let ws = s.t.get_json(&["workspaces.example.org", &ns]);
    assert!(annotation(&ws, "kubectl-backup.dev/restore-from").is_some(), "not marked: {ws}");
    assert_workspace_restored(&s, &ns, &webhook);
}

#[test]
fn a_workspace_resource_created_while_the_webhook_is_down_is_restored_after_restart_as_the_catch_up_identity() {
    let s = setup("wsdown");
    s.t.apply(&namespace("kubectl-backup")).ok();
    workspace_crd(&s);
    let ns = backed_up_and_deleted(&s, "crew");

    let mut webhook = workspace_webhook(&s);
    eventually("the worker heartbeat", Duration::from_secs(30), || {
        s.t.kubectl(&["get", "configmap", "backup-webhook-state", "-n", "kubectl-backup"]).code == 0
    });
    webhook.stop();
    s.t.apply(&workspace(&ns)).ok();
    let ws = s.t.get_json(&["workspaces.example.org", &ns]);
    assert_eq!(annotation(&ws, "kubectl-backup.dev/restore-from"), None, "marked by a stopped webhook: {ws}");

    webhook.restart().unwrap();
    assert_workspace_restored(&s, &ns, &webhook);
    let ws = s.t.get_json(&["workspaces.example.org", &ns]);
    assert!(annotation(&ws, "kubectl-backup.dev/restore-from").is_some(), "catch-up did not mark it: {ws}");
}
