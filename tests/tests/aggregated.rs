//! Aggregated APIs that are down, on a real API server: an APIService whose Service has no endpoints
//! answers 503 to discovery, as a metrics adapter that is not running does. Backups leave out
//! never-backed-up groups without a word, name any other group and stay bounded in time; restores
//! fail only the objects of an unavailable group. The test has its own control plane (APIServices
//! are cluster-wide).

use std::time::{Duration, Instant};

use kubectl_backup_e2e::fixtures::{OwnCluster, Run, Tools, eventually, namespace, unique};
use serde_json::Value;

const GROUP: &str = "stuff.example.org";

/// The old behaviour spent about 40 s retrying one such group; the default bound is 5 s per
/// discovery. A regression guard, not a speed target (those are benchmarks).
const BOUND: Duration = Duration::from_secs(20);

/// A Service without a selector (so without endpoints) and an APIService for `version.group` backed
/// by it: the aggregator answers 503 "service unavailable" for that group version.
fn apiservice_without_backend(group: &str, version: &str) -> String {
    let svc = format!("down-{}", group.replace('.', "-"));
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {svc}
  namespace: kube-system
spec:
  ports:
  - port: 443
    targetPort: 6443
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: {version}.{group}
spec:
  group: {group}
  version: {version}
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service:
    name: {svc}
    namespace: kube-system
    port: 443
"#
    )
}

fn gizmo_crd() -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.{GROUP}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: gizmos, singular: gizmo, kind: Gizmo}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#
    )
}

/// Waits until discovery of `group_version` answers 503, as the aggregator does for a backend-less
/// APIService.
fn wait_unavailable(t: &Tools, group_version: &str) {
    let path = format!("/apis/{group_version}");
    eventually(&format!("{group_version} answering 503"), Duration::from_secs(60), || {
        let r = t.kubectl(&["get", "--raw", &path]);
        r.code != 0 && (r.stderr.contains("ServiceUnavailable") || r.stderr.contains("unable to handle the request"))
    });
}

/// Runs `kubectl backup ARGS -o json`, timed.
fn timed(t: &Tools, args: &[&str]) -> (Run, Duration) {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let start = Instant::now();
    let run = t.backup(&a);
    (run, start.elapsed())
}

fn errors(doc: &Value) -> Vec<String> {
    doc["status"]["errors"].as_array().into_iter().flatten().filter_map(|e| e.as_str().map(str::to_string)).collect()
}

#[test]
fn an_unavailable_aggregated_api_is_bounded_named_and_fails_only_its_own_objects() {
    let c = OwnCluster::start("aggregated");
    let t = &c.t;
    let ns = unique("shop");
    t.apply(&namespace(&ns)).ok();
    t.kubectl(&["create", "configmap", "settings", "-n", &ns, "--from-literal=color=blue"]).ok();
    t.apply(&gizmo_crd()).ok();
    t.kubectl(&["wait", "--for=condition=Established", &format!("crd/gizmos.{GROUP}"), "--timeout=60s"]).ok();
    t.apply(&format!(
        "apiVersion: {GROUP}/v1\nkind: Gizmo\nmetadata:\n  name: g1\n  namespace: {ns}\nspec:\n  size: 3\n"
    ))
    .ok();
    let (before, _) = timed(t, &["create", "before", "-A"]);
    assert_eq!(before.ok().json()["status"]["phase"], "Completed");

    // 1. metrics.k8s.io down: its resources are never backed up, so nothing is wrong.
    t.apply(&apiservice_without_backend("metrics.k8s.io", "v1beta1")).ok();
    wait_unavailable(t, "metrics.k8s.io/v1beta1");
    let (run, took) = timed(t, &["create", "metrics-down", "-A", "-vv"]);
    assert_eq!(run.code, 0, "a down metrics API failed the backup ({took:?}):\n{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["status"]["phase"], "Completed", "{doc}");
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    assert!(doc["status"].get("warnings").is_none(), "{doc}");
    // Only a debug line says so.
    let note = run.stderr.lines().find(|l| l.contains("metrics.k8s.io/v1beta1") && l.contains("never backed up"));
    assert!(note.is_some_and(|l| l.contains("DEBUG")), "no debug line about the metrics group:\n{}", run.stderr);
    assert!(took < BOUND, "the backup took {took:?} with metrics.k8s.io down");
    eprintln!("metrics.k8s.io down: backup Completed in {took:?}");

    // 2. A group that would be backed up is down: the CRD goes, an APIService without a backend
    // takes its group over (after the aggregator removed the CRD's own APIService).
    t.kubectl(&["delete", "crd", &format!("gizmos.{GROUP}"), "--wait=true", "--timeout=60s"]).ok();
    eventually("the CRD's APIService to be removed", Duration::from_secs(60), || {
        t.kubectl(&["get", "apiservice", &format!("v1.{GROUP}")]).stderr.contains("NotFound")
    });
    t.apply(&apiservice_without_backend(GROUP, "v1")).ok();
    wait_unavailable(t, &format!("{GROUP}/v1"));
    let (run, took) = timed(t, &["create", "group-down", "-A"]);
    assert_eq!(run.code, 3, "expected PartiallyFailed (exit 3) in {took:?}:\n{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["status"]["phase"], "PartiallyFailed");
    let errs = errors(&doc);
    assert_eq!(errs.len(), 1, "only the unavailable group is an error: {errs:?}");
    assert!(errs[0].contains(&format!("API group {GROUP}/v1 is unavailable")), "{errs:?}");
    assert!(errs[0].contains("503") && errs[0].contains("service unavailable"), "no reason: {errs:?}");
    assert!(errs[0].contains("after 5s"), "the default bound is not named: {errs:?}");
    assert!(took < BOUND, "the backup took {took:?} with {GROUP} down");
    // The rest is there.
    assert_eq!(doc["status"]["resources"]["configmaps"].as_u64().map(|n| n > 0), Some(true), "{doc}");
    eprintln!("{GROUP} down: backup PartiallyFailed in {took:?}");

    // The bound is configurable.
    let (run, took) = timed(t, &["create", "group-down-1s", "-A", "--discovery-timeout", "1s"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let errs = errors(&run.json());
    assert!(errs[0].contains("after 1s"), "{errs:?}");
    eprintln!("{GROUP} down, --discovery-timeout 1s: backup PartiallyFailed in {took:?}");

    // 3. Restore into a cluster where the group is unavailable: the CRD and the ConfigMap come
    // back, the Gizmo alone fails, named with its group, quickly.
    let copy = unique("copy");
    let start = Instant::now();
    let run = t.backup(&["restore", "before", "-n", &ns, "--namespace-mapping", &format!("{ns}:{copy}"), "-o", "json"]);
    let took = start.elapsed();
    assert_eq!(run.code, 3, "expected PartiallyFailed (exit 3) in {took:?}:\n{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["status"]["phase"], "PartiallyFailed", "{doc}");
    let items = doc["status"]["items"].as_array().cloned().unwrap_or_default();
    let failed: Vec<&Value> = items.iter().filter(|i| i["action"] == "failed").collect();
    assert_eq!(failed.len(), 1, "only the Gizmo fails: {failed:?}\n{doc:#}");
    assert_eq!(failed[0]["resource"], format!("gizmos.{GROUP}"));
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("API group {GROUP}/v1 is unavailable in the target cluster")), "{reason}");
    assert!(reason.contains("503"), "{reason}");
    assert!(took < BOUND + Duration::from_secs(10), "the restore took {took:?}");
    assert!(t.names(&["configmaps", "-n", &copy]).contains(&"settings".to_string()));
    eprintln!("{GROUP} down: restore PartiallyFailed in {took:?}");
}
