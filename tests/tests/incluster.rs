//! The in-cluster component on a real control plane: schedules, expiry, continuous backup, named
//! locations, confinement of the operator role, and `install --dry-run` accepted by the API server.
//! Each test has its own control plane.

use std::time::{Duration, Instant};

use kubectl_backup_e2e::fixtures::{OwnCluster, Tools, crd, eventually, namespace, sample_app, unique};
use kubectl_backup_e2e::webhook::Webhook;
use serde_json::Value;

const NS: &str = "kubectl-backup";

struct Setup(OwnCluster);

fn setup(name: &str) -> Setup {
    let s = Setup(OwnCluster::start(name));
    s.install_base();
    s
}

impl std::ops::Deref for Setup {
    type Target = OwnCluster;
    fn deref(&self) -> &OwnCluster {
        &self.0
    }
}

impl Setup {
    /// The install namespace, the CRDs and the ClusterRoles, from `install --dry-run -o json`.
    fn install_base(&self) {
        let rendered = self.t.backup(&["install", "--dry-run", "-o", "json"]).ok().json();
        let wanted: Vec<Value> = rendered["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Namespace" | "CustomResourceDefinition" | "ClusterRole")))
            .cloned()
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": wanted});
        self.t.pipe(&["apply", "-f", "-"], &list.to_string()).ok();
        for crd in ["backuplocations.kubectl-backup.dev", "backupschedules.kubectl-backup.dev"] {
            self.t.kubectl(&["wait", "--for=condition=Established", &format!("crd/{crd}"), "--timeout=60s"]).ok();
        }
    }

    fn webhook(&self, extra: &[&str]) -> Webhook {
        self.0.webhook(NS, extra)
    }

    /// The webhook with `extra`, once its continuous backup's watches are set up.
    fn watching_webhook(&self, extra: &[&str]) -> Webhook {
        let webhook = self.webhook(extra);
        std::thread::sleep(Duration::from_secs(3));
        webhook
    }

    fn backups(&self) -> Vec<Value> {
        self.t.backup(&["list", "-o", "json"]).ok().json()["items"].as_array().unwrap().clone()
    }

    /// The continuous backups of workspace `ws`, oldest first.
    fn continuous_backups(&self, ws: &str) -> Vec<Value> {
        let mut v: Vec<Value> = self
            .backups()
            .into_iter()
            .filter(|b| {
                b["spec"]["schedule"] == "continuous" && b["spec"]["includedNamespaces"] == serde_json::json!([ws])
            })
            .collect();
        v.sort_by_key(|b| b["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string());
        v
    }

    /// Applies `objects` (workspace `ws` and what it holds; the webhook's watches set up), then
    /// its first continuous backup, once the burst of changes is over (one backup).
    fn first_continuous_backup(&self, ws: &str, objects: &str) -> Value {
        self.t.apply(objects).ok();
        eventually("a first continuous backup", Duration::from_secs(40), || !self.continuous_backups(ws).is_empty());
        std::thread::sleep(Duration::from_secs(4));
        self.continuous_backups(ws).last().unwrap().clone()
    }

    /// The newest continuous backup of `ws` once one after `before` is taken and the burst is over.
    fn continuous_backup_after(&self, ws: &str, before: &Value) -> Value {
        let name = &before["metadata"]["name"];
        eventually("a backup after the change", Duration::from_secs(30), || {
            self.continuous_backups(ws).last().is_some_and(|b| b["metadata"]["name"] != *name)
        });
        std::thread::sleep(Duration::from_secs(4));
        self.continuous_backups(ws).last().unwrap().clone()
    }

    /// The ConfigMaps backup `b` holds of `ws` (downloaded to `file` in the test's directory),
    /// checked to be those the namespace holds now.
    fn archived_configmaps(&self, b: &Value, ws: &str, file: &str) -> std::collections::BTreeMap<String, Value> {
        let file = self.dir.join(file);
        self.t.backup(&["download", b["metadata"]["name"].as_str().unwrap(), "-f", file.to_str().unwrap()]).ok();
        let cms = archived(&file, "configmaps", ws);
        let mut live = self.t.names(&["configmaps", "-n", ws]);
        live.sort();
        assert_eq!(cms.keys().cloned().collect::<Vec<_>>(), live, "{b}");
        cms
    }

    fn schedule(&self, ns: &str, name: &str) -> Value {
        self.t.get_json(&["backupschedules.kubectl-backup.dev", name, "-n", ns])
    }
}

fn event_reasons(t: &Tools, ns: &str, kind: &str, name: &str) -> Vec<String> {
    let v = t.get_json(&["events", "-n", ns]);
    let mut items: Vec<&Value> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .collect();
    items.sort_by_key(|e| e["eventTime"].as_str().or(e["firstTimestamp"].as_str()).unwrap_or("").to_string());
    items.iter().map(|e| e["reason"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn a_schedule_fires_and_produces_a_completed_backup() {
    let s = setup("sched");
    let app = unique("app");
    s.t.apply(&sample_app(&app)).ok();
    // Locations checked, and metric series of deleted schedules dropped, every second.
    let webhook = s.webhook(&["--continuous=false", "--location-check-interval=1s"]);
    s.t.backup(&[
        "schedule",
        "create",
        "every-3s",
        "--schedule",
        "*/3 * * * * *",
        "--include-namespaces",
        &app,
        "--ttl",
        "1h",
    ])
    .ok();
    eventually("a scheduled backup", Duration::from_secs(60), || {
        s.schedule(NS, "every-3s")["status"]["lastResult"].as_str() == Some("Completed")
    });
    s.t.backup(&["schedule", "pause", "every-3s"]).ok();
    let st = s.schedule(NS, "every-3s")["status"].clone();
    let last = st["lastBackup"].as_str().unwrap().to_string();
    assert!(last.starts_with("every-3s-") && last.len() == "every-3s-".len() + 14, "{last}");
    let b = s.t.backup(&["describe", &last, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "Completed");
    assert_eq!(b["spec"]["schedule"], format!("{NS}/every-3s"));
    assert_eq!(b["spec"]["includedNamespaces"], serde_json::json!([app]));
    assert!(b["status"]["resources"]["configmaps"].as_u64().unwrap() >= 1);
    assert!(st["lastSuccessTime"].is_string() && st["lastRunTime"].is_string());
    let reasons = event_reasons(&s.t, NS, "BackupSchedule", "every-3s");
    for r in ["BackupStarted", "BackupUploading", "BackupCompleted"] {
        assert!(reasons.contains(&r.to_string()), "{r} missing from {reasons:?}\n{}", webhook.log());
    }
    let describe = s.t.backup(&["schedule", "describe", "every-3s"]).ok().stdout;
    assert!(
        describe.contains("Last result:       Completed") && describe.contains("Paused:            true"),
        "{describe}"
    );
    let metrics = || {
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/metrics", webhook.metrics_port)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = metrics();
    assert!(text.contains("kubectl_backup_backups_total{trigger=\"schedule\",result=\"Completed\"}"), "{text}");
    let series = format!(
        "kubectl_backup_last_success_timestamp_seconds{{kind=\"schedule\",namespace=\"{NS}\",name=\"every-3s\"}}"
    );
    assert!(text.contains(&series), "{text}");
    let build = format!("kubectl_backup_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&build), "{text}");
    // Both kinds in kubectl's category, with the schedule's columns.
    let all = s.t.kubectl(&["get", "backup-all", "-n", NS]).ok().stdout;
    assert!(all.contains("backupschedule.kubectl-backup.dev/every-3s"), "{all}");
    assert!(all.contains("backuplocation.kubectl-backup.dev/default"), "{all}");
    assert!(all.contains("LAST RUN") && all.contains("NEXT RUN") && all.contains("AGE"), "{all}");
    // A deleted schedule's series goes with it.
    s.t.backup(&["schedule", "delete", "every-3s"]).ok();
    eventually("the deleted schedule's series dropped", Duration::from_secs(20), || !metrics().contains(&series));
}

#[test]
fn a_run_missed_while_down_runs_once_on_start() {
    let s = setup("missed");
    let app = unique("app");
    s.t.apply(&sample_app(&app)).ok();
    s.t.backup(&["schedule", "create", "hourly", "--schedule", "@hourly", "--include-namespaces", &app]).ok();
    // The controller was down for three hours: the last run is long ago, and it stopped in the
    // middle of a run (claimed, never finished).
    let three_hours_ago = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(3)).unwrap().to_string();
    let status = serde_json::json!({"lastRunTime": three_hours_ago, "activeRun": "hourly-cut-short"});
    let patch = serde_json::json!({ "status": status }).to_string();
    // status is a subresource: patch it through the API (kubectl 1.32 supports --subresource).
    s.t.kubectl(&[
        "patch",
        "backupschedules.kubectl-backup.dev",
        "hourly",
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .ok();
    let webhook = s.webhook(&["--continuous=false"]);
    eventually("the missed run", Duration::from_secs(90), || {
        s.schedule(NS, "hourly")["status"]["lastResult"].is_string()
    });
    let status = s.schedule(NS, "hourly")["status"].clone();
    assert_eq!(status["lastResult"], "Completed", "{status:#}\n{}", webhook.log());
    std::thread::sleep(Duration::from_secs(5));
    let made: Vec<String> = s
        .backups()
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap().to_string())
        .filter(|n| n.starts_with("hourly-"))
        .collect();
    assert_eq!(made.len(), 1, "three missed runs must run once, not three times: {made:?}");
    assert_eq!(status["lastBackup"].as_str(), Some(made[0].as_str()));
    assert!(status.get("activeRun").is_none(), "the claim is cleared when the run ends: {status:#}");
    let reasons = event_reasons(&s.t, NS, "BackupSchedule", "hourly");
    assert!(reasons.contains(&"BackupInterrupted".to_string()), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "BackupStarted").count(), 1, "{reasons:?}");
    let next: jiff::Timestamp = s.schedule(NS, "hourly")["status"]["nextRunTime"].as_str().unwrap().parse().unwrap();
    assert!(next > jiff::Timestamp::now(), "the next run is in the future");
}

#[test]
fn expired_backups_are_deleted_and_the_others_kept() {
    let s = setup("gc");
    let app = unique("app");
    s.t.apply(&sample_app(&app)).ok();
    s.t.backup(&["create", "short-lived", "-n", &app, "--ttl", "1s"]).ok();
    s.t.backup(&["create", "long-lived", "-n", &app, "--ttl", "720h"]).ok();
    s.t.backup(&["create", "forever", "-n", &app, "--ttl", "0s"]).ok();
    // A ReadOnly location holding an expired backup: never touched.
    let ro_prefix = unique("ro");
    let ro = s.t.with_store(&s.env.s3, &ro_prefix);
    ro.backup(&["create", "expired-but-read-only", "-n", &app, "--ttl", "1s"]).ok();
    s.t.backup(&["location", "add", "archive", "--url", &s.env.s3.location(&ro_prefix), "--read-only"]).ok();
    std::thread::sleep(Duration::from_secs(2));
    let webhook = s.webhook(&["--continuous=false", "--gc-interval=2s"]);
    eventually("expiry", Duration::from_secs(30), || {
        !s.backups().iter().any(|b| b["metadata"]["name"] == "short-lived")
    });
    let names: Vec<String> = s.backups().iter().map(|b| b["metadata"]["name"].as_str().unwrap().to_string()).collect();
    assert!(names.contains(&"long-lived".to_string()) && names.contains(&"forever".to_string()), "{names:?}");
    std::thread::sleep(Duration::from_secs(4));
    let kept = ro.backup(&["list", "-o", "json"]).ok().json();
    assert_eq!(
        kept["items"][0]["metadata"]["name"],
        "expired-but-read-only",
        "GC deleted in a ReadOnly location\n{}",
        webhook.log()
    );
    // The CLI refuses to write to a ReadOnly location by name.
    let mut by_name = s.t.clone();
    by_name.location = Some("archive".into());
    let refused = by_name.backup(&["delete", "expired-but-read-only", "--yes"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("ReadOnly"), "{}", refused.stderr);
}

#[test]
fn a_change_in_a_workspace_yields_a_continuous_backup() {
    let s = setup("cont");
    let ws = unique("ws");
    let webhook = s.watching_webhook(&["--debounce=2s", "--keep-workspace-backups=2", "--restore-worker=false"]);
    let continuous = |s: &Setup| s.continuous_backups(&ws);
    let first = s.first_continuous_backup(&ws, &sample_app(&ws));
    let before = first["metadata"]["name"].as_str().unwrap().to_string();
    assert!(before.starts_with(&format!("{ws}-")), "{before}");
    s.t.kubectl(&["-n", &ws, "patch", "configmap", "settings", "-p", r#"{"data":{"color":"purple"}}"#]).ok();
    let changed_at = Instant::now();
    eventually("a backup after the change", Duration::from_secs(30), || {
        continuous(&s).last().map(|b| b["metadata"]["name"].as_str().unwrap().to_string()) != Some(before.clone())
    });
    assert!(changed_at.elapsed() < Duration::from_secs(20), "took {:?}", changed_at.elapsed());
    let newest = continuous(&s).last().unwrap().clone();
    // Continuous backups are incremental by default: a later one references what the first stored.
    let inc = &newest["status"]["incremental"];
    assert!(newest["status"]["archive"].is_null(), "{newest}");
    assert!(inc["objectsReused"].as_u64().unwrap() > 0, "{newest}");
    let newest = newest["metadata"]["name"].as_str().unwrap().to_string();
    let file = s.dir.join("newest.tar.zst");
    s.t.backup(&["download", &newest, "-f", file.to_str().unwrap()]).ok();
    let out = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-xOf")
        .arg(&file)
        .arg(format!("resources/configmaps/namespaces/{ws}/settings.json"))
        .output()
        .unwrap();
    let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["data"]["color"], "purple");
    // More changes: only the newest two continuous backups are kept.
    for color in ["red", "green"] {
        std::thread::sleep(Duration::from_secs(4));
        s.t.kubectl(&[
            "-n",
            &ws,
            "patch",
            "configmap",
            "settings",
            "-p",
            &format!(r#"{{"data":{{"color":"{color}"}}}}"#),
        ])
        .ok();
    }
    std::thread::sleep(Duration::from_secs(10));
    let kept = continuous(&s);
    assert_eq!(
        kept.len(),
        2,
        "{:?}\n{}",
        kept.iter().map(|b| b["metadata"]["name"].clone()).collect::<Vec<_>>(),
        webhook.log()
    );
    // An ephemeral workspace is never backed up continuously.
    let eph = unique("pr");
    s.t.apply(&namespace(&eph)).ok();
    s.t.kubectl(&["label", "namespace", &eph, "kubectl-backup.dev/ephemeral=true"]).ok();
    s.t.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {eph}\n")).ok();
    // Nor is one asked for by the annotation alone, not labelled yet (no admission webhook is
    // registered here, and no restore worker runs to label it, as for a workspace created while
    // the webhook was down).
    let asked = unique("pr");
    s.t.apply(&namespace(&asked)).ok();
    s.t.kubectl(&["annotate", "namespace", &asked, "kubectl-backup.dev/ephemeral=true"]).ok();
    s.t.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {asked}\n")).ok();
    std::thread::sleep(Duration::from_secs(8));
    for ns in [&eph, &asked] {
        assert!(
            !s.backups().iter().any(|b| b["spec"]["includedNamespaces"] == serde_json::json!([ns])),
            "an ephemeral workspace was backed up: {ns}\n{}",
            webhook.log()
        );
    }
    assert!(s.t.get_json(&["namespace", &asked])["metadata"]["labels"].get("kubectl-backup.dev/ephemeral").is_none());
}

/// The entry names of `resource` in `ns` in a downloaded backup, and the body of each.
fn archived(file: &std::path::Path, resource: &str, ns: &str) -> std::collections::BTreeMap<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("tar").arg("--zstd").arg("-xf").arg(file).arg("-C").arg(dir.path()).status();
    assert!(st.unwrap().success());
    let at = dir.path().join(format!("resources/{resource}/namespaces/{ns}"));
    std::fs::read_dir(&at)
        .map(|d| {
            d.map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().trim_end_matches(".json").to_string();
                (name, serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            })
            .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_continuous_backup_reads_only_what_its_watches_saw_change() {
    let s = setup("watched");
    let ws = unique("ws");
    let mut webhook = s.watching_webhook(&["--debounce=2s"]);
    let mut objects = sample_app(&ws);
    for i in 0..30 {
        objects.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: {ws}\ndata:\n  value: \"{i}\"\n"
        ));
    }
    let first = s.first_continuous_backup(&ws, &objects);
    assert_eq!(first["status"]["incremental"]["listsSkipped"], Value::Null, "the first backup lists: {first}");
    // Only the types the workspace holds objects of: not those the watches hold nothing of there
    // (of the watched types, sample_app has ConfigMaps, Secrets, a Service, a Deployment, a
    // ServiceAccount and a Role).
    let empty = first["status"]["incremental"]["listsEmpty"].as_u64().unwrap_or(0);
    assert!(empty >= 10, "{first}\n{}", webhook.log());
    s.archived_configmaps(&first, &ws, "first.tar.zst");

    // One changed, one deleted, one created, and a Secret changed.
    s.t.kubectl(&["-n", &ws, "patch", "configmap", "cm-1", "-p", r#"{"data":{"value":"changed"}}"#]).ok();
    s.t.kubectl(&["-n", &ws, "delete", "configmap", "cm-2"]).ok();
    s.t.kubectl(&["-n", &ws, "create", "configmap", "cm-new", "--from-literal=value=new"]).ok();
    s.t.kubectl(&["-n", &ws, "patch", "secret", "credentials", "-p", r#"{"stringData":{"password":"rotated"}}"#]).ok();
    let second = s.continuous_backup_after(&ws, &first);
    let inc = &second["status"]["incremental"];
    // ConfigMaps, Secrets and every other watched type in the namespace were not listed...
    assert!(inc["listsSkipped"].as_u64().unwrap_or(0) >= 2, "{second}\n{}", webhook.log());
    // ...and the objects not seen to change were not read.
    assert!(inc["objectsNotRead"].as_u64().unwrap() >= 29 + 3, "{second}");
    // The backup holds exactly what the namespace holds.
    let cms = s.archived_configmaps(&second, &ws, "watched.tar.zst");
    let file = s.dir.join("watched.tar.zst");
    assert!(!cms.contains_key("cm-2") && cms.contains_key("cm-new"), "{:?}", cms.keys());
    assert_eq!(cms["cm-1"]["data"]["value"], "changed");
    assert_eq!(cms["cm-new"]["data"]["value"], "new");
    assert_eq!(cms["cm-3"]["data"]["value"], "3", "{}", cms["cm-3"]);
    let secrets = archived(&file, "secrets", &ws);
    assert_eq!(secrets["credentials"]["data"]["password"], "cm90YXRlZA==", "{:?}", secrets["credentials"]);

    // A restarted controller compares the workspace with its last backup once its watches have
    // listed. Unchanged: no backup for it, and the next one continues it with the watches' changes.
    let listed = |w: &Webhook| w.log().matches("every watch has listed: continuous backups").count();
    let compared = |w: &Webhook, what: &str| {
        w.log().lines().find(|l| l.contains(what) && l.contains(&format!("namespace={ws} "))).map(str::to_string)
    };
    assert_eq!(listed(&webhook), 1, "{}", webhook.log());
    webhook.restart().unwrap();
    eventually("the restarted controller compares the workspace", Duration::from_secs(30), || {
        compared(&webhook, "as its last continuous backup recorded it").is_some()
    });
    assert_eq!(listed(&webhook), 2, "{}", webhook.log());
    std::thread::sleep(Duration::from_secs(4)); // twice --debounce
    let newest = |s: &Setup| s.continuous_backups(&ws).last().unwrap()["metadata"]["name"].clone();
    assert_eq!(newest(&s), second["metadata"]["name"], "backed up with nothing changed\n{}", webhook.log());
    let skipped = |b: &Value| b["status"]["incremental"]["listsSkipped"].as_u64().unwrap_or(0);
    s.t.kubectl(&["-n", &ws, "patch", "configmap", "cm-4", "-p", r#"{"data":{"value":"after a restart"}}"#]).ok();
    let third = s.continuous_backup_after(&ws, &second);
    assert_eq!(
        skipped(&third),
        skipped(&second),
        "the first backup after a restart continues the last: {third}\n{}",
        webhook.log()
    );
    let cms = s.archived_configmaps(&third, &ws, "after-restart.tar.zst");
    assert_eq!(cms["cm-4"]["data"]["value"], "after a restart", "{third}");

    // Changed while no controller ran: backed up once one runs again, with nothing changed since,
    // listing the ConfigMaps (where the change is) and no other type.
    webhook.stop();
    s.t.kubectl(&["-n", &ws, "patch", "configmap", "cm-5", "-p", r#"{"data":{"value":"while stopped"}}"#]).ok();
    s.t.kubectl(&["-n", &ws, "delete", "configmap", "cm-6"]).ok();
    // And a workspace created meanwhile, with everything kube-controller-manager adds to it there
    // before the controller starts: no change after the start to wait for.
    let created = unique("ws-created");
    s.t.kubectl(&["create", "namespace", &created]).ok();
    s.t.kubectl(&["-n", &created, "create", "configmap", "kept", "--from-literal=value=unseen"]).ok();
    eventually("kube-controller-manager's objects in the new namespace", Duration::from_secs(30), || {
        s.t.names(&["configmaps", "-n", &created]).contains(&"kube-root-ca.crt".to_string())
            && !s.t.names(&["secrets", "-n", &created]).is_empty()
    });
    webhook.start_again().unwrap();
    let fourth = s.continuous_backup_after(&ws, &third);
    let line = compared(&webhook, "changed while no controller watched it");
    let line = line.unwrap_or_else(|| panic!("not compared: {}", webhook.log()));
    assert!(line.contains(r#"changed=["configmaps"]"#), "{line}");
    assert_eq!(skipped(&fourth), skipped(&third) - 1, "only the ConfigMaps listed: {fourth}");
    let cms = s.archived_configmaps(&fourth, &ws, "changed-while-stopped.tar.zst");
    assert_eq!(cms["cm-5"]["data"]["value"], "while stopped", "{fourth}");
    assert!(!cms.contains_key("cm-6"), "{:?}", cms.keys());

    // The workspace created while no controller ran is backed up at the start, unchanged since.
    eventually("a backup of the workspace created while no controller ran", Duration::from_secs(30), || {
        !s.continuous_backups(&created).is_empty()
    });
    let log = webhook.log();
    let named = format!("namespace={created}");
    let found = log.lines().find(|l| l.contains("a workspace has no backup") && l.split(' ').any(|w| w == named));
    assert!(found.is_some(), "not found at the start: {log}");
    let backups = s.continuous_backups(&created);
    let cms = s.archived_configmaps(&backups[0], &created, "created-while-stopped.tar.zst");
    assert_eq!(cms["kept"]["data"]["value"], "unseen", "{}", backups[0]);
    // Nothing left waiting for one of the --continuous-parallel slots.
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{}/metrics", webhook.metrics_port)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "kubectl_backup_continuous_backups_waiting 0"), "{text}");
}

/// The controller's backups share one discovery of the API, kept good by its watches of
/// CustomResourceDefinitions and APIServices: a CRD installed while it runs, after a backup that
/// used (and kept) the discovery before it, is in the next backup with its objects.
#[test]
fn a_crd_installed_while_the_controller_runs_is_in_its_next_backup() {
    let s = setup("crdlate");
    let ws = unique("ws");
    let webhook = s.watching_webhook(&["--debounce=2s"]);
    // Past the settling time after the watches start, so that the first backup's discovery is kept.
    std::thread::sleep(Duration::from_secs(11));
    let first = s.first_continuous_backup(&ws, &sample_app(&ws));
    s.t.apply(&crd("example.org", "widgets", "Widget", "Namespaced")).ok();
    s.t.kubectl(&["wait", "--for=condition=Established", "crd/widgets.example.org", "--timeout=60s"]).ok();
    s.t.apply(&format!(
        "apiVersion: example.org/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: {ws}\nsize: 3\n"
    ))
    .ok();
    // Widgets are not watched (their CRD came after the start): a ConfigMap's change brings the backup.
    s.t.kubectl(&["-n", &ws, "patch", "configmap", "settings", "-p", r#"{"data":{"color":"teal"}}"#]).ok();
    let second = s.continuous_backup_after(&ws, &first);
    assert_eq!(first["status"]["resources"]["widgets.example.org"], Value::Null, "{first}");
    assert_eq!(second["status"]["resources"]["widgets.example.org"], 1, "{second}\n{}", webhook.log());
}

/// A continuous backup that fails is taken again with nothing changed in the workspace
/// (`--continuous-retries`, `--continuous-retry-after`), and one that hangs is given up after
/// `--continuous-timeout`: its slot is freed for another workspace, and its lease stops beating
/// (so that collection does not keep what it holds for good). The location is a directory here:
/// replaced by a file, every write to it fails; a FIFO in place of a workspace's head (the last
/// incremental backup the next one continues) makes the next backup's read of it hang.
#[test]
fn a_failed_continuous_backup_is_retried_and_a_hung_one_given_up() {
    let s = setup("retry");
    let dir = s.dir.join("retry-store");
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("file://{}", dir.display());
    let webhook = s.0.webhook_at(
        NS,
        &url,
        &[
            "--debounce=1s",
            "--continuous-retries=1",
            "--continuous-retry-after=10s",
            "--continuous-timeout=5s",
            "--continuous-parallel=1",
            "--restore-worker=false",
        ],
    );
    let in_dir = Tools { location: Some(url.clone()), ..s.t.clone() };
    let continuous = |ns: &str| -> Vec<Value> {
        let listed = in_dir.backup(&["list", "-o", "json"]).ok().json();
        let all = listed["items"].as_array().unwrap().clone();
        let of_ns = |b: &Value| b["spec"]["includedNamespaces"] == serde_json::json!([ns]);
        all.into_iter().filter(|b| b["spec"]["schedule"] == "continuous" && of_ns(b)).collect()
    };
    let logged = |what: &str, ns: &str| {
        let named = format!("namespace={ns}");
        webhook.log().lines().filter(|l| l.contains(what) && l.split(' ').any(|w| w == named)).count()
    };
    // The start-up backups (namespaces with no backup yet) done first.
    eventually("the start-up backup of default", Duration::from_secs(30), || !continuous("default").is_empty());
    std::thread::sleep(Duration::from_secs(3));

    // Every write fails: the backups of a new workspace fail (one per burst of changes, with
    // kube-controller-manager's objects), and the last is retried once the store is back, with
    // nothing changed since.
    let gone = s.dir.join("retry-store.gone");
    std::fs::rename(&dir, &gone).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    let ws = unique("ws");
    s.t.apply(&sample_app(&ws)).ok();
    eventually("the backup fails", Duration::from_secs(30), || logged("continuous backup failed", &ws) > 0);
    eventually("kube-controller-manager's objects in the new namespace", Duration::from_secs(30), || {
        s.t.names(&["configmaps", "-n", &ws]).contains(&"kube-root-ca.crt".to_string())
            && s.t.names(&["secrets", "-n", &ws]).len() >= 3 // ours, and the two service accounts' tokens
    });
    std::thread::sleep(Duration::from_secs(3)); // past --debounce: the last change's backup has failed
    let failed = logged("continuous backup failed", &ws);
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&gone, &dir).unwrap();
    eventually("the retried backup", Duration::from_secs(30), || !continuous(&ws).is_empty());
    let taken = continuous(&ws);
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0]["status"]["phase"], "Completed", "{}", taken[0]);
    assert_eq!(logged("continuous backup failed", &ws), failed, "{}", webhook.log());
    assert!(logged("retrying the failed continuous backup", &ws) >= 1, "{}", webhook.log());
    // A first backup: it left out the LISTs of the watched types the workspace holds nothing of
    // (of those sample_app has ConfigMaps, Secrets, a Service, a Deployment, ServiceAccounts, a
    // Role and a RoleBinding), and holds, type by type, what a backup listing every type holds
    // (but for the types the controller does not watch: their objects come and go with their
    // controllers).
    let empty = taken[0]["status"]["incremental"]["listsEmpty"].as_u64().unwrap_or(0);
    assert!(empty >= 10, "{}\n{}", taken[0], webhook.log());
    let listed_all = s.t.backup(&["create", &unique("all"), "-n", &ws, "-o", "json"]).ok().json();
    let not_watched = ["pods", "replicasets.apps", "endpoints", "endpointslices.discovery.k8s.io", "events"];
    let counts = |b: &Value| -> Vec<(String, Value)> {
        let all = b["status"]["resources"].as_object().unwrap().clone();
        all.into_iter().filter(|(k, _)| !not_watched.contains(&k.as_str())).collect()
    };
    assert_eq!(counts(&taken[0]), counts(&listed_all), "{}\n{listed_all}", taken[0]);

    // The next backup of the workspace hangs reading its head.
    let head = std::fs::read_dir(dir.join("heads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).unwrap().contains(&format!("\"{ws}-")))
        .unwrap_or_else(|| panic!("no head for {ws} in {}", dir.display()));
    std::fs::remove_file(&head).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&head).status().unwrap();
    assert!(made.success());
    s.t.kubectl(&["-n", &ws, "patch", "configmap", "settings", "-p", r#"{"data":{"color":"red"}}"#]).ok();
    eventually("given up", Duration::from_secs(30), || logged("ran longer than --continuous-timeout", &ws) > 0);
    // Its slot (the only one) is free: another workspace's change is backed up meanwhile.
    let other = unique("ws");
    s.t.kubectl(&["create", "namespace", &other]).ok();
    s.t.kubectl(&["-n", &other, "create", "configmap", "other", "--from-literal=value=1"]).ok();
    eventually("the other workspace's backup", Duration::from_secs(30), || !continuous(&other).is_empty());
    // Retried once (the change before it started the count anew), given up too, then left to the
    // next change.
    eventually("no retry left", Duration::from_secs(60), || {
        logged("continuous backups failed too often in a row", &ws) > 0
    });
    assert_eq!(logged("ran longer than --continuous-timeout", &ws), 2, "{}", webhook.log());
    assert_eq!(continuous(&ws).len(), 1, "nothing committed by the backups given up");
    // Each counted as failed (with those not taken), and reported on the namespace.
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{}/metrics", webhook.metrics_port)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let failed = text.lines().find(|l| {
        l.starts_with("kubectl_backup_backups_total{")
            && l.contains(r#"trigger="continuous""#)
            && l.contains(r#"result="Failed""#)
    });
    let failed: u64 = failed.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(failed >= 3, "{text}");
    let events = s.t.get_json(&["events", "-n", &ws]);
    let given_up = events["items"].as_array().unwrap().iter().any(|e| {
        e["reason"] == "BackupFailed"
            && e["message"].as_str().unwrap_or("").contains("ran longer than --continuous-timeout")
    });
    assert!(given_up, "{events}");
    // No lease of theirs beats on: past a heartbeat (10 s), none was written to since.
    let quiet_from = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_secs(13));
    for lease in std::fs::read_dir(dir.join("leases")).unwrap() {
        let lease = lease.unwrap();
        let modified = lease.metadata().unwrap().modified().unwrap();
        assert!(modified < quiet_from, "{:?} still beats\n{}", lease.path(), webhook.log());
    }
    let beats = std::fs::read_dir(dir.join("leases"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".beat"));
    assert_eq!(beats.count(), 2, "the leases of the two runs given up, left for collection");
}

/// `--continuous-changes-max-mib` bounds the changed bodies the controller holds: at 0 every
/// change past the first byte is let go of, so each continuous backup lists every type, and still
/// holds exactly what the namespace holds.
#[test]
fn past_the_changes_it_may_hold_a_continuous_backup_lists() {
    let s = setup("held");
    let ws = unique("ws");
    let webhook = s.watching_webhook(&["--debounce=2s", "--continuous-changes-max-mib=0"]);
    let first = s.first_continuous_backup(&ws, &sample_app(&ws));
    s.t.kubectl(&["-n", &ws, "create", "configmap", "cm-held", "--from-literal=value=held"]).ok();
    let second = s.continuous_backup_after(&ws, &first);
    let inc = &second["status"]["incremental"];
    assert_eq!(inc["listsSkipped"].as_u64().unwrap_or(0), 0, "listed every type: {second}\n{}", webhook.log());
    let log = webhook.log();
    let warned = log.lines().find(|l| l.contains("passed --continuous-changes-max-mib"));
    let warned = warned.unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(warned.contains(&ws), "{warned}");
    let cms = s.archived_configmaps(&second, &ws, "held.tar.zst");
    assert_eq!(cms["cm-held"]["data"]["value"], "held");
}

#[test]
fn the_operator_role_cannot_reach_another_namespace() {
    let s = setup("oper");
    let mine = unique("team-a");
    let theirs = unique("team-b");
    s.t.apply(&sample_app(&mine)).ok();
    s.t.apply(&sample_app(&theirs)).ok();
    // alice is a workspace operator of `mine` only.
    s.t.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: alice-operator\n  namespace: {mine}\nsubjects:\n- kind: User\n  name: alice\n  apiGroup: rbac.authorization.k8s.io\nroleRef:\n  kind: ClusterRole\n  name: kubectl-backup-operator\n  apiGroup: rbac.authorization.k8s.io\n"
    ))
    .ok();
    let alice = s.t.as_user(&s.cp.info.user("alice").kubeconfig);
    // Her own namespace: yes.
    let own = alice.backup(&["create", &unique("mine"), "-n", &mine, "-o", "json"]).ok().json();
    assert!(own["status"]["resources"]["configmaps"].as_u64().unwrap() >= 1);
    // Another namespace with the CLI: nothing can be listed, the backup fails.
    let other = alice.backup(&["create", &unique("theirs"), "-n", &theirs]);
    assert_ne!(other.code, 0, "alice backed up another namespace: {}", other.stdout);
    assert!(other.stderr.contains("403") || other.stderr.contains("forbidden"), "{}", other.stderr);
    // Restoring into another namespace: refused object by object.
    let b = s.t.backup(&["create", &unique("admin"), "-n", &theirs, "-o", "json"]).ok().json();
    let name = b["metadata"]["name"].as_str().unwrap().to_string();
    s.t.kubectl(&["-n", &theirs, "delete", "configmap", "settings"]).ok();
    let r = alice.backup(&["restore", &name, "-o", "json"]);
    assert_ne!(r.code, 0, "alice restored into another namespace: {}", r.stdout);
    assert!(!s.t.names(&["configmaps", "-n", &theirs]).contains(&"settings".to_string()));
    // Through the controller: she may create schedules in her namespace only...
    let denied =
        alice.backup(&["schedule", "create", "sneaky", "--schedule", "@daily", "--schedule-namespace", &theirs]);
    assert_ne!(denied.code, 0);
    // ...and a schedule there that names another namespace is refused by the controller. (The
    // admin allows tenant schedules every second here, so the test need not wait 5 minutes.)
    let webhook = s.webhook(&["--continuous=false", "--min-schedule-interval=1s"]);
    alice
        .backup(&[
            "schedule",
            "create",
            "reach",
            "--schedule",
            "*/2 * * * * *",
            "--schedule-namespace",
            &mine,
            "--include-namespaces",
            &theirs,
        ])
        .ok();
    eventually("the controller refuses the schedule", Duration::from_secs(30), || {
        s.schedule(&mine, "reach")["status"]["lastError"].as_str().is_some_and(|e| e.contains("may back up only"))
    });
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        s.schedule(&mine, "reach")["status"].get("lastBackup").is_none(),
        "a confined schedule ran\n{}",
        webhook.log()
    );
    assert!(!s.backups().iter().any(|b| b["spec"]["schedule"] == format!("{mine}/reach")));
    // A schedule for her own namespace runs, with the controller's permissions, on her namespace only.
    // (`-n` is the schedule's namespace, as in kubectl; --schedule-namespace is its alias.)
    alice.backup(&["schedule", "create", "own", "--schedule", "*/2 * * * * *", "-n", &mine]).ok();
    eventually("her schedule runs", Duration::from_secs(40), || {
        s.schedule(&mine, "own")["status"]["lastResult"].as_str() == Some("Completed")
    });
    // Listed like `kubectl get`: -o name, and a table without its header line.
    let names = alice.backup(&["schedule", "list", "-n", &mine, "-o", "name"]).ok().stdout;
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["backupschedule.kubectl-backup.dev/own", "backupschedule.kubectl-backup.dev/reach"]);
    let bare = alice.backup(&["schedule", "list", "-n", &mine, "--no-headers"]).ok().stdout;
    assert_eq!(bare.lines().count(), 2, "{bare}");
    assert!(bare.lines().all(|l| l.starts_with(&mine) && !l.contains("SCHEDULE")), "{bare}");
    let made = s.schedule(&mine, "own")["status"]["lastBackup"].as_str().unwrap().to_string();
    let d = s.t.backup(&["describe", &made, "-o", "json"]).ok().json();
    assert_eq!(d["status"]["namespaces"], serde_json::json!([mine]));
}

#[test]
fn install_dry_run_is_accepted_by_the_api_server() {
    let s = setup("install");
    // Namespace and CRDs exist (setup applied them), so every object can be validated.
    let yaml = s
        .t
        .backup(&["install", "--dry-run", "-o", "yaml", "--credentials-secret", "creds", "--ephemeral-pattern", "pr-*"])
        .ok()
        .stdout;
    let applied = s.t.pipe(&["apply", "--dry-run=server", "-f", "-"], &yaml).ok();
    for kind in [
        "deployment.apps/backup-webhook",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/kubectl-backup",
        "secret/backup-webhook-tls",
        "service/backup-webhook",
    ] {
        assert!(applied.stdout.contains(kind), "{kind} not applied: {}", applied.stdout);
    }
    // The default location is in the webhook's flags, not a custom resource of the stream.
    assert!(!applied.stdout.contains("backuplocation.kubectl-backup.dev/default"), "{}", applied.stdout);
    // Cloud identities on the ServiceAccount, and the store settings passed to the Deployment.
    let role = "arn:aws:iam::123456789012:role/kubectl-backup";
    let rendered =
        s.t.backup(&[
            "install",
            "--dry-run",
            "-o",
            "json",
            "--sa-annotation",
            &format!("eks.amazonaws.com/role-arn={role}"),
            "--path-style",
            "--region",
            "eu-1",
        ])
        .ok()
        .json();
    let items = rendered["items"].as_array().unwrap();
    let sa = items.iter().find(|o| o["kind"] == "ServiceAccount").unwrap();
    assert_eq!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], role, "{sa}");
    let deployment = items.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for flag in ["--default-location-path-style=true", "--default-location-region=eu-1"] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    let applied = s.t.pipe(&["apply", "--dry-run=server", "-o", "json", "-f", "-"], &rendered.to_string()).ok().json();
    let accepted = applied["items"].as_array().unwrap().iter().find(|o| o["kind"] == "ServiceAccount").unwrap().clone();
    assert_eq!(accepted["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], role, "{accepted}");
    let bad = s.t.backup(&["install", "--dry-run", "--sa-annotation", "no-equals-sign"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("\"no-equals-sign\" is not KEY=VALUE"), "{}", bad.stderr);
    // A bad location is refused before anything is rendered.
    let mut bad_location = s.t.clone();
    bad_location.location = Some("ftp://x".into());
    let bad = bad_location.backup(&["install", "--dry-run"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("unsupported scheme"));
}

#[test]
fn named_and_default_locations() {
    let s = setup("loc");
    let app = unique("app");
    s.t.apply(&sample_app(&app)).ok();
    let prefix = unique("named");
    let url = s.env.s3.location(&prefix);
    s.t.backup(&["location", "add", "primary", "--url", &url, "--default", "--credentials-from-env"]).ok();
    let list = s.t.backup(&["location", "list", "-o", "json"]).ok().json();
    assert_eq!(list["items"][0]["spec"]["credentialsSecret"], "primary-credentials");
    // By name.
    let mut named = s.t.clone();
    named.location = Some("primary".into());
    named.backup(&["create", "by-name", "-n", &app]).ok();
    // By default (no --location at all).
    let mut default = s.t.clone();
    default.location = None;
    default.backup(&["create", "by-default", "-n", &app]).ok();
    // Both are in that location.
    let mut direct = s.t.clone();
    direct.location = Some(url);
    let names: Vec<String> = direct.backup(&["list", "-o", "json"]).ok().json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"by-name".to_string()) && names.contains(&"by-default".to_string()), "{names:?}");
    // The credentials came from the Secret: without the env, by name still works.
    let mut bare = named.clone();
    bare.env.clear();
    assert!(bare.backup(&["list"]).ok().stdout.contains("by-name"));
    // An unknown name is a clear error.
    let mut nope = s.t.clone();
    nope.location = Some("nope".into());
    let r = nope.backup(&["list"]);
    assert!(r.code != 0 && r.stderr.contains("no BackupLocation \"nope\""), "{}", r.stderr);
    s.t.backup(&["location", "remove", "primary", "--yes"]).ok();
    assert!(s.t.backup(&["location", "list", "-o", "json"]).ok().json()["items"].as_array().unwrap().is_empty());
}

/// The GitOps path, exactly as documented: `kubectl backup install --dry-run -o yaml | kubectl apply
/// -f -` on an empty cluster works in one go (kubectl maps every document before creating any, so
/// the stream holds no object of a kind its own CRDs define). The webhook, run with the applied
/// Deployment's flags, then creates the default BackupLocation, which the plugin uses.
#[test]
fn the_rendered_manifests_apply_in_one_go_on_an_empty_cluster() {
    let c = OwnCluster::start("oneshot");
    assert!(c.t.names(&["crd"]).is_empty(), "the cluster is not empty");
    let location = c.location.clone();
    let applied =
        c.t.sh(&format!("kubectl backup install --location {location} --dry-run -o yaml | kubectl apply -f -"));
    assert_eq!(applied.code, 0, "one-shot apply failed:\n{}\n{}", applied.stdout, applied.stderr);
    for created in [
        "namespace/kubectl-backup created",
        "customresourcedefinition.apiextensions.k8s.io/backuplocations.kubectl-backup.dev created",
        "customresourcedefinition.apiextensions.k8s.io/backupschedules.kubectl-backup.dev created",
        "deployment.apps/backup-webhook created",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/kubectl-backup created",
    ] {
        assert!(applied.stdout.contains(created), "{created:?} missing:\n{}", applied.stdout);
    }
    // A second apply (a GitOps sync) changes nothing and still succeeds.
    let again = c.t.sh(&format!("kubectl backup install --location {location} --dry-run -o yaml | kubectl apply -f -"));
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);

    // No node runs the Pod here: run the real webhook with the Deployment's own flags.
    let deployment = c.t.get_json(&["deployment", "backup-webhook", "-n", NS]);
    // With the token of the ServiceAccount the manifests create: their RBAC is what is tested.
    let kubeconfig = c.service_account_kubeconfig(NS, kubectl_backup_e2e::webhook::SERVICE_ACCOUNT);
    let mut webhook = Webhook::from_deployment(&c.dir.join("webhook"), &kubeconfig, &deployment, NS, &c.env.s3.env)
        .expect("backup-webhook with the Deployment's flags");
    eventually("the default BackupLocation", Duration::from_secs(30), || {
        c.t.kubectl(&["get", "backuplocations.kubectl-backup.dev", "default", "-n", NS]).code == 0
    });
    let bl = c.t.get_json(&["backuplocations.kubectl-backup.dev", "default", "-n", NS]);
    assert_eq!(bl["spec"]["url"], location.as_str(), "{bl}");
    assert_eq!(bl["spec"]["default"], true, "{bl}");
    // An edited location is kept across restarts: the flags only create a missing one.
    c.t.kubectl(&["label", "backuplocations.kubectl-backup.dev", "default", "-n", NS, "edited=yes"]).ok();
    webhook.restart().expect("restarting the webhook");
    assert!(webhook.log().contains("BackupLocation exists"), "{}", webhook.log());
    // The plugin, with no --location, uses the cluster's default location.
    let mut plain = c.t.clone();
    plain.location = None;
    plain.backup(&["create", "after-install", "-n", "default"]).ok();
    assert!(c.t.backup(&["list"]).ok().stdout.contains("after-install"));
}

#[test]
fn a_location_turns_unavailable_when_its_storage_goes_and_available_when_it_returns() {
    let s = setup("health");
    let dir = s.dir.join("health-store");
    let ro_dir = s.dir.join("health-ro");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&ro_dir).unwrap();
    let url = format!("file://{}", dir.display());
    // `location add` checks before saving: a location that cannot be used is not added.
    let not_a_dir = s.dir.join("a-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let refused = s.t.backup(&["location", "add", "broken", "--url", &format!("file://{}", not_a_dir.display())]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("location \"broken\" not added") && refused.stderr.contains("--skip-check"),
        "{}",
        refused.stderr
    );
    assert!(s.t.kubectl(&["get", "backuplocations.kubectl-backup.dev", "broken", "-n", NS]).code != 0);
    s.t.backup(&["location", "add", "local", "--url", &url]).ok();
    s.t.backup(&["location", "add", "kept", "--url", &format!("file://{}", ro_dir.display()), "--read-only"]).ok();
    let webhook = s.webhook(&["--continuous=false", "--location-check-interval=1s"]);
    let phase = |name: &str| {
        s.t.get_json(&["backuplocations.kubectl-backup.dev", name, "-n", NS])["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    eventually("local Available", Duration::from_secs(30), || phase("local") == "Available");
    eventually("kept Available", Duration::from_secs(30), || phase("kept") == "Available");

    // The storage goes: its directory is replaced by a file.
    let gone = s.dir.join("health-store.gone");
    std::fs::rename(&dir, &gone).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    eventually("local Unavailable", Duration::from_secs(30), || phase("local") == "Unavailable");
    let bl = s.t.get_json(&["backuplocations.kubectl-backup.dev", "local", "-n", NS]);
    let ready = bl["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "False", "{bl}");
    assert_eq!(ready["reason"], "CheckFailed", "{bl}");
    let message = bl["status"]["message"].as_str().unwrap();
    assert!(message.contains(&url) && message.contains("File exists"), "{bl}");
    let table = s.t.backup(&["location", "list"]).ok().stdout;
    assert!(table.contains("PHASE") && table.contains("LAST CHECKED") && table.contains("Unavailable"), "{table}");

    // It returns.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&gone, &dir).unwrap();
    eventually("local Available again", Duration::from_secs(30), || phase("local") == "Available");
    let reasons = event_reasons(&s.t, NS, "BackupLocation", "local");
    assert_eq!(
        reasons.iter().filter(|r| r.starts_with("Location")).cloned().collect::<Vec<_>>(),
        ["LocationAvailable", "LocationUnavailable", "LocationAvailable"],
        "{}",
        webhook.log()
    );
    // A ReadOnly location is checked by listing only: nothing was ever written to it.
    assert_eq!(std::fs::read_dir(&ro_dir).unwrap().count(), 0, "the check wrote to a ReadOnly location");
    // The ReadWrite one holds the marker its check wrote; a marker of a newer layout is refused.
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("kubectl-backup.json")).unwrap()).unwrap();
    assert_eq!(marker, serde_json::json!({"tool": "kubectl-backup", "layoutVersion": 1}));
    let newer = s.dir.join("health-newer");
    std::fs::create_dir_all(&newer).unwrap();
    std::fs::write(newer.join("kubectl-backup.json"), r#"{"tool": "kubectl-backup", "layoutVersion": 99}"#).unwrap();
    let refused = s.t.backup(&["location", "add", "newer", "--url", &format!("file://{}", newer.display())]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("layout version 99, newer than this kubectl-backup understands (1)"),
        "{}",
        refused.stderr
    );
}
