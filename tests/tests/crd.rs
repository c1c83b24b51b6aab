//! The CRDs on a real API server: their CamelCase enumerations are validated (a bad value is
//! refused, naming the field), `kubectl explain` shows each field's description, and schedules
//! stored with the spellings of an earlier version are read as before and rewritten by
//! `kubectl backup install`.

use std::time::Duration;

use kubectl_backup_e2e::fixtures::{OwnCluster, Tools, eventually, namespace, unique, wait_until};

const NS: &str = "kubectl-backup";
const OLD_SCHEDULE_CRD: &str = include_str!("../fixtures/backupschedules-before-camelcase.yaml");

fn schedule(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: kubectl-backup.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: {name}, namespace: {NS}}}\nspec: {spec}\n"
    )
}

/// `kubectl explain WHAT`, once the API server publishes the CRD's schema.
fn explain(t: &Tools, what: &str, wanted: &str) -> String {
    let mut last = String::new();
    let shown = wait_until(Duration::from_secs(60), || {
        let run = t.kubectl(&["explain", what]);
        last = format!("{}{}", run.stdout, run.stderr);
        run.code == 0 && last.contains(wanted)
    });
    assert!(shown, "kubectl explain {what} does not show {wanted:?}:\n{last}");
    last
}

#[test]
fn the_api_server_refuses_other_values_and_explain_describes_every_field() {
    let c = OwnCluster::start("crd-enum");
    c.install_crds();
    let t = &c.t;
    t.kubectl(&["create", "namespace", NS]).ok();

    for (spec, field, value) in [
        (r#"{schedule: "@daily", includeClusterResources: Sometimes}"#, "spec.includeClusterResources", "Sometimes"),
        (r#"{schedule: "@daily", includeClusterResources: "true"}"#, "spec.includeClusterResources", "true"),
        (
            r#"{schedule: "@daily", etcd: {endpoints: ["https://e:2379"], type: keys-json}}"#,
            "spec.etcd.type",
            "keys-json",
        ),
    ] {
        let refused = t.apply(&schedule(&unique("bad"), spec));
        assert_ne!(refused.code, 0, "{spec} accepted");
        assert!(
            refused.stderr.contains(field) && refused.stderr.contains(&format!("Unsupported value: \"{value}\"")),
            "{spec}: {}",
            refused.stderr
        );
    }
    let location = "apiVersion: kubectl-backup.dev/v1alpha1\nkind: BackupLocation\nmetadata: {name: l, namespace: kubectl-backup}\nspec: {url: \"s3://b\", accessMode: readonly}\n";
    let refused = t.apply(location);
    assert!(refused.code != 0 && refused.stderr.contains("spec.accessMode"), "{}", refused.stderr);
    t.apply(&schedule("good", r#"{schedule: "@daily", includeClusterResources: Always, etcd: {endpoints: ["https://e:2379"], type: KeysJson}}"#)).ok();

    let field = explain(t, "backupschedules.spec.includeClusterResources", "Always");
    assert!(field.contains("Auto (default;") && field.contains("Never"), "{field}");
    let root = explain(t, "backupschedules", "Backups taken on a schedule");
    assert!(!root.contains("Auto-generated"), "{root}");
    explain(t, "backupschedules.spec.paused", "No runs while true");
    explain(t, "backuplocations.spec.region", "The bucket's region");
    explain(t, "backuplocations.spec.pathStyle", "path-style");
    explain(t, "backuplocations.spec.accessMode", "a ReadOnly location is listed and restored");
    // Kubernetes 1.20 publishes CRDs in OpenAPI v2, which drops the fields of optional
    // (nullable) objects such as spec.etcd and status: their descriptions are checked in
    // core/src/crd.rs (every_property_has_a_description).
}

#[test]
fn schedules_stored_with_old_spellings_are_read_then_rewritten_by_install() {
    let c = OwnCluster::start("crd-upgrade");
    let t = &c.t;
    // A cluster as an earlier version left it: the old CRD, schedules with its spellings.
    t.apply(OLD_SCHEDULE_CRD).ok();
    t.kubectl(&["wait", "--for=condition=Established", "crd/backupschedules.kubectl-backup.dev", "--timeout=60s"]).ok();
    let app = unique("app");
    t.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {app}}}\ndata: {{k: v}}\n",
        namespace(&app)
    ))
    .ok();
    t.kubectl(&["create", "namespace", NS]).ok();
    t.apply(&schedule(
        "old",
        &format!(
            r#"{{schedule: "*/3 * * * * *", ttl: 1h, includedNamespaces: [{app}], includeClusterResources: "false"}}"#
        ),
    ))
    .ok();
    t.apply(&schedule(
        "old-etcd",
        r#"{schedule: "@daily", paused: true, etcd: {endpoints: ["https://127.0.0.1:1"], type: keys-json}}"#,
    ))
    .ok();

    // The new CRDs applied by hand (as `kubectl apply -f crds/` does for the Helm chart): the
    // stored values stay, and this version reads them as their new spellings.
    c.install_crds();
    let stored = |name: &str, path: &str| {
        t.kubectl(&["get", "backupschedule", name, "-n", NS, "-o", &format!("jsonpath={{{path}}}")]).ok().stdout
    };
    assert_eq!(stored("old", ".spec.includeClusterResources"), "false");
    let read = t.backup(&["schedule", "describe", "old", "-o", "json"]).ok().json();
    assert_eq!(read["spec"]["includeClusterResources"], "Never");
    let described = t.backup(&["schedule", "describe", "old-etcd"]).ok().stdout;
    assert!(described.contains("(KeysJson)"), "{described}");
    // But the API server validates the whole object on every write: nothing can be changed, not
    // even paused, until the old value is rewritten.
    let refused = t.backup(&["schedule", "pause", "old"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("spec.includeClusterResources"), "{}", refused.stderr);

    // `kubectl backup install` rewrites them, and says which.
    let installed = t.backup(&["install", "--namespace", NS]).ok().stdout;
    assert!(
        installed.contains("rewrote 2 BackupSchedule(s)")
            && installed.contains(&format!("{NS}/old"))
            && installed.contains(&format!("{NS}/old-etcd")),
        "{installed}"
    );
    assert_eq!(stored("old", ".spec.includeClusterResources"), "Never");
    assert_eq!(stored("old-etcd", ".spec.etcd.type"), "KeysJson");
    assert_eq!(stored("old-etcd", ".spec.paused"), "true", "nothing else changed");
    let again = t.backup(&["install", "--namespace", NS]).ok().stdout;
    assert!(!again.contains("rewrote"), "{again}");

    // The controller runs it and records the run.
    let webhook = c.webhook(NS, &["--continuous=false"]);
    eventually("a run of the rewritten schedule", Duration::from_secs(60), || {
        t.get_json(&["backupschedule", "old", "-n", NS])["status"]["lastResult"].as_str() == Some("Completed")
    });
    let last = t.get_json(&["backupschedule", "old", "-n", NS])["status"]["lastBackup"].as_str().unwrap().to_string();
    let backup = t.backup(&["describe", &last, "-o", "json"]).ok().json();
    assert_eq!(backup["spec"]["includeClusterResources"], "Never", "{}", webhook.log());
    t.backup(&["schedule", "pause", "old"]).ok();
}
