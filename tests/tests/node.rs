//! On a real node (tests/src/node.rs: containerd + kubelet + kube-scheduler + kube-proxy): a Pod and
//! a Service, then the `backup-webhook` image built by `scripts/build-image.sh` running as the Helm
//! chart's and `kubectl backup install`'s Deployment — probes, securityContext, ServiceAccount, RBAC
//! and the Service the API server calls the webhook through — restoring a re-created namespace, and
//! removed without leftovers.
//!
//! Each test starts its own control plane and node (nothing shared, so tests without a node never
//! wait for one). Nodes are started one at a time: on 2 CPUs, parallel nodes only make each slower.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use kubectl_backup_e2e::fixtures::{Run, Tools, annotation, eventually, unique, wait_crd, wait_until};
use kubectl_backup_e2e::node::{NodeCluster, busybox_image, start_one as start};
use kubectl_backup_e2e::process::cached_tool;
use kubectl_backup_e2e::stores::{S3_ACCESS_KEY, S3_SECRET_KEY};

/// The webhook's namespace (the chart's release namespace and install's default).
const OWN_NS: &str = "kubectl-backup";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// A small web application: a busybox httpd serving a ConfigMap, probed, behind a Service.
fn web_app(ns: &str, image: &str, page: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: site
  namespace: {ns}
data:
  index.html: "{page}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      securityContext:
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: httpd
        image: {image}
        imagePullPolicy: Never
        command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet:
            path: /index.html
            port: 8080
          periodSeconds: 2
        volumeMounts:
        - name: site
          mountPath: /www
      volumes:
      - name: site
        configMap:
          name: site
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: {ns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {image}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
    )
}

fn wait_rollout(c: &NodeCluster, ns: &str, deployment: &str) {
    c.wait_rollout(ns, deployment);
}

#[test]
fn a_pod_runs_and_a_service_routes_to_it() {
    let (_one, c) = start("pod");
    let t0 = Instant::now();
    let ns = unique("web");
    let page = unique("hello-from-web");
    c.t.apply(&web_app(&ns, &busybox_image().expect("the busybox image"), &page)).ok();
    wait_rollout(&c, &ns, "web");
    c.t.kubectl(&["wait", "-n", &ns, "--for=condition=Ready", "pod/client", "--timeout=120s"]).ok();
    let pod = &c.t.get_json(&["pods", "-n", &ns, "-l", "app=web"])["items"][0];
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    let pod_ip = pod["status"]["podIP"].as_str().expect("a Pod IP").to_string();
    assert!(
        pod_ip.starts_with(c.node.network.pod_cidr.trim_end_matches("0/24")),
        "{pod_ip} not from the node's CNI range"
    );
    let cluster_ip =
        c.t.get_json(&["service", "web", "-n", &ns])["spec"]["clusterIP"].as_str().expect("clusterIP").to_string();

    // Pod -> Service (kube-proxy's DNAT in the node) -> Pod, through `kubectl exec` (API server ->
    // kubelet on its InternalIP -> containerd's stream server). (busybox 1.35's `wget -T` crashes:
    // its `timeout` applet bounds the call instead.)
    let url = format!("http://{cluster_ip}/index.html");
    let got = c.t.kubectl(&["exec", "-n", &ns, "client", "--", "timeout", "5", "wget", "-q", "-O-", &url]).ok();
    assert_eq!(got.stdout.trim(), page);
    // The host reaches the Pod IP through the node's veth.
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", &format!("http://{pod_ip}:8080/index.html")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), page);
    // kubectl logs through the kubelet: httpd -v logged the client Pod's and the host's requests.
    let client_ip =
        c.t.get_json(&["pod", "client", "-n", &ns])["status"]["podIP"].as_str().expect("client IP").to_string();
    let logs = c.t.kubectl(&["logs", "-n", &ns, "deployment/web"]).ok().stdout;
    for from in [client_ip, c.node.network.host_ip.to_string()] {
        assert!(logs.contains(&format!("[::ffff:{from}]:")), "no request from {from} in the httpd log:\n{logs}");
    }

    // Without ready endpoints the Service refuses (kube-proxy's REJECT), rather than hanging or
    // reaching something else.
    c.t.kubectl(&["scale", "-n", &ns, "deployment/web", "--replicas=0"]).ok();
    eventually("the Service has no endpoints", Duration::from_secs(60), || {
        c.t.get_json(&["endpoints", "web", "-n", &ns])["subsets"].as_array().is_none_or(|s| s.is_empty())
    });
    let mut last = None;
    let refused = wait_until(Duration::from_secs(30), || {
        let r = c.t.kubectl(&["exec", "-n", &ns, "client", "--", "timeout", "5", "wget", "-q", "-O-", &url]);
        let refused = r.code != 0 && r.stderr.contains("refused");
        last = Some(r);
        refused
    });
    assert!(refused, "wget to a Service without endpoints was not refused: {last:?}");
    eprintln!("[pod] test body took {:.1?}", t0.elapsed());
}

/// The project's image, built and imported into the node.
fn build_and_import(c: &NodeCluster) -> String {
    c.build_and_import_image().expect("building and importing the backup-webhook image")
}

/// Objects that need no image pull: the backup's subject.
fn shop(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: credentials
  namespace: {ns}
stringData:
  password: s3cr3t
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
  namespace: {ns}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
"#
    )
}

/// A namespace with objects, backed up with the CLI on the host.
fn backed_up_namespace(c: &NodeCluster) -> (String, String) {
    let ns = unique("shop");
    c.t.apply(&shop(&ns)).ok();
    let backup = unique("b");
    c.t.backup(&["create", &backup, "-n", &ns]).ok();
    (ns, backup)
}

/// The webhook Pod is Ready through its probes, runs as 65532 with a read-only root filesystem, and
/// is the only webhook Pod.
fn assert_webhook_pod_ready(c: &NodeCluster) {
    wait_rollout(c, OWN_NS, "backup-webhook");
    let pods = c.t.get_json(&["pods", "-n", OWN_NS, "-l", "app.kubernetes.io/name=backup-webhook"]);
    let items = pods["items"].as_array().expect("pods");
    assert_eq!(items.len(), 1, "{pods}");
    let pod = &items[0];
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true, "{pod}");
    assert_eq!(status["restartCount"], 0, "restarted: {pod}");
    let sc = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(
        (sc["runAsNonRoot"].as_bool(), sc["readOnlyRootFilesystem"].as_bool()),
        (Some(true), Some(true)),
        "{sc}"
    );
    // What the kernel says about the container's process.
    let id = status["containerID"].as_str().expect("containerID");
    let pid = task_pid(c, id);
    let proc_status = proc_status(c, id);
    let field = |name: &str| -> Vec<String> {
        let line = proc_status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_default();
        line.split_whitespace().skip(1).map(str::to_string).collect()
    };
    assert_eq!(field("Uid"), ["65532"; 4], "{proc_status}");
    assert_eq!(field("Gid")[0], "65532", "{proc_status}");
    // capabilities: drop ALL; allowPrivilegeEscalation: false; seccompProfile: RuntimeDefault.
    assert_eq!(field("CapEff"), ["0000000000000000"], "{proc_status}");
    assert_eq!(field("NoNewPrivs"), ["1"], "{proc_status}");
    assert_eq!(field("Seccomp"), ["2"], "{proc_status}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).expect("the webhook's mounts");
    let root = mounts.lines().find(|l| l.split(' ').nth(1) == Some("/")).expect("a / mount");
    assert!(root.split(' ').nth(3).is_some_and(|o| o.split(',').any(|f| f == "ro")), "root not read-only: {root}");
}

/// The host PID of a container's main process (`containerd://<id>`), from its containerd task.
fn task_pid(c: &NodeCluster, container_id: &str) -> String {
    let id = container_id.trim_start_matches("containerd://");
    let tasks = c.node.ctr(&["tasks", "ls"]).expect("ctr tasks ls");
    tasks
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no task {id} in\n{tasks}"))
        .to_string()
}

/// /proc/<pid>/status of a container's main process.
fn proc_status(c: &NodeCluster, container_id: &str) -> String {
    let pid = task_pid(c, container_id);
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
}

/// Deletes and re-creates `ns`: the API server calls the webhook Pod through the Service, the
/// restore worker (with the chart's or install's ServiceAccount and RBAC) brings the objects back.
fn assert_auto_restore(c: &NodeCluster, ns: &str, backup: &str) {
    c.t.delete_namespace(ns);
    c.t.kubectl(&["create", "namespace", ns]).ok();
    let v = c.t.get_json(&["namespace", ns]);
    let logs = || c.t.kubectl(&["logs", "-n", OWN_NS, "deployment/backup-webhook", "--tail=40"]).stdout;
    assert_eq!(annotation(&v, "kubectl-backup.dev/restore-from").as_deref(), Some(backup), "{v}\n{}", logs());
    eventually("objects restored by the webhook Pod", Duration::from_secs(60), || {
        c.t.names(&["configmaps,secrets,serviceaccounts,services", "-n", ns])
            .iter()
            .filter(|n| ["settings", "credentials", "web"].contains(&n.as_str()))
            .count()
            >= 3
    });
    eventually("restore-status Completed", Duration::from_secs(60), || {
        annotation(&c.t.get_json(&["namespace", ns]), "kubectl-backup.dev/restore-status").as_deref()
            == Some("Completed")
    });
    assert_eq!(c.t.get_json(&["configmap", "settings", "-n", ns])["data"]["color"], "blue");
}

/// A BackupSchedule made with the CLI runs in the webhook Pod (its ServiceAccount and RBAC, the S3
/// server through the node's link) and commits a backup the CLI on the host lists.
fn assert_scheduled_backup(c: &NodeCluster, ns: &str) {
    c.t.backup(&[
        "schedule",
        "create",
        "every-3s",
        "--schedule",
        "*/3 * * * * *",
        "--include-namespaces",
        ns,
        "--ttl",
        "1h",
    ])
    .ok();
    let schedule = || c.t.get_json(&["backupschedules.kubectl-backup.dev", "every-3s", "-n", OWN_NS]);
    eventually("a scheduled backup by the webhook Pod", Duration::from_secs(90), || {
        schedule()["status"]["lastResult"].as_str() == Some("Completed")
    });
    c.t.backup(&["schedule", "pause", "every-3s"]).ok();
    let last = schedule()["status"]["lastBackup"].as_str().expect("lastBackup").to_string();
    let b = c.t.backup(&["describe", &last, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "Completed", "{b}");
    assert_eq!(b["spec"]["includedNamespaces"], serde_json::json!([ns]), "{b}");
    assert!(b["status"]["resources"]["configmaps"].as_u64().is_some_and(|n| n >= 1), "{b}");
}

/// The Pod's continuous backup takes a backup of a workspace after its objects change, and its
/// expiry deletes a backup whose TTL has passed — both with the chart's ServiceAccount and RBAC.
fn assert_continuous_and_expiry(c: &NodeCluster, ns: &str) {
    let names = |t: &Tools| -> Vec<(String, Value)> {
        let list = t.backup(&["list", "-o", "json"]).ok().json();
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| (b["metadata"]["name"].as_str().unwrap_or_default().to_string(), b.clone()))
            .collect()
    };
    let before: Vec<String> = names(&c.t).into_iter().map(|(n, _)| n).collect();
    c.t.kubectl(&["patch", "configmap", "settings", "-n", ns, "--type=merge", "-p", r#"{"data":{"color":"green"}}"#])
        .ok();
    eventually("a continuous backup by the webhook Pod", Duration::from_secs(90), || {
        names(&c.t).iter().any(|(n, b)| {
            !before.contains(n)
                && b["spec"]["schedule"] == "continuous"
                && b["spec"]["includedNamespaces"] == serde_json::json!([ns])
                && b["status"]["phase"] == "Completed"
        })
    });
    let short = unique("short");
    c.t.backup(&["create", &short, "-n", ns, "--ttl", "1s"]).ok();
    eventually("the expired backup deleted by the webhook Pod", Duration::from_secs(60), || {
        !names(&c.t).iter().any(|(n, _)| n == &short)
    });
}

/// Every object of the cluster, of every listable resource, that belongs to kubectl-backup: by name
/// or by the labels the chart and install put on what they create.
fn leftovers(t: &Tools) -> Vec<String> {
    let resources = t.kubectl(&["api-resources", "--verbs=list", "-o", "name"]).ok();
    let skip = ["events", "events.events.k8s.io", "componentstatuses"];
    let list: Vec<&str> = resources.stdout.lines().filter(|r| !skip.contains(r)).collect();
    let all = t.get_json(&[&list.join(","), "-A"]);
    all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let labels = o["metadata"]["labels"].to_string();
            name.contains("kubectl-backup")
                || name.contains("backup-webhook")
                || name.contains("kubectl-backup.dev")
                || o["metadata"]["namespace"] == OWN_NS
                || labels.contains("backup-webhook")
        })
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Nothing of kubectl-backup is left in the cluster, and its container is gone from the node.
fn assert_nothing_left(c: &NodeCluster, image: &str) {
    let t0 = Instant::now();
    eventually(&format!("namespace {OWN_NS} gone"), Duration::from_secs(120), || {
        c.t.kubectl(&["get", "namespace", OWN_NS]).code != 0
    });
    eprintln!("namespace {OWN_NS} gone after {:.1?}", t0.elapsed());
    let left = leftovers(&c.t);
    assert!(left.is_empty(), "left behind: {left:#?}");
    eventually("no webhook container on the node", Duration::from_secs(60), || {
        let containers = c.node.ctr(&["containers", "ls"]).unwrap_or_default();
        !containers.contains(image)
    });
}

/// The chart's values for this cluster: the node's S3 endpoint, credentials created by the chart,
/// the local image (never pulled).
fn chart_values(c: &NodeCluster, image: &str) -> String {
    let (repository, tag) = image.rsplit_once(':').expect("image:tag");
    format!(
        r#"location:
  url: {location}
  endpoint: {endpoint}
  region: us-east-1
credentials:
  secretName: s3-credentials
  create: true
  data:
    AWS_ACCESS_KEY_ID: {S3_ACCESS_KEY}
    AWS_SECRET_ACCESS_KEY: {S3_SECRET_KEY}
image:
  repository: {repository}
  tag: {tag}
  pullPolicy: Never
logFormat: text
ephemeralPatterns: ["pr-*"]
# Expiry and continuous backup on test time scales.
extraArgs: ["--gc-interval=2s", "--debounce=2s"]
"#,
        location = c.location,
        endpoint = c.s3_endpoint(),
    )
}

/// `charts/test-chart.py` (real Helm, embedded in helm-python-sdk) renders the chart with `values`.
fn render_chart(dir: &Path, values: &str) -> PathBuf {
    let values_file = dir.join("node-values.yaml");
    std::fs::write(&values_file, values).expect("writing values");
    let out_dir = dir.join("rendered");
    let python = cached_tool("venv/bin/python").expect("the Helm SDK venv (tests/env/install.sh helm)");
    let out = Command::new(python)
        .arg(repo().join("charts/test-chart.py"))
        .arg(&out_dir)
        .arg("--values")
        .arg(&values_file)
        .args(["--namespace", OWN_NS])
        .output()
        .expect("running charts/test-chart.py");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    r.ok();
    out_dir.join("node.yaml")
}

#[test]
fn the_chart_runs_on_the_node_restores_backs_up_continuously_and_expires() {
    let (_one, c) = start("chart");
    let t0 = Instant::now();
    let image = build_and_import(&c);
    let (ns, backup) = backed_up_namespace(&c);

    // What `helm install --create-namespace` does: crds/ first, then the templates.
    let rendered = render_chart(&c.dir, &chart_values(&c, &image));
    let crds = repo().join("charts/kubectl-backup/crds");
    c.t.kubectl(&["apply", "-f", &crds.display().to_string()]).ok();
    for crd in c.t.names(&["crds"]) {
        wait_crd(&c.t, &crd);
    }
    c.t.kubectl(&["create", "namespace", OWN_NS]).ok();
    c.t.kubectl(&["apply", "-f", &rendered.display().to_string()]).ok();
    assert_webhook_pod_ready(&c);
    eprintln!("[chart] webhook Pod Ready {:.1?} after the start of the test", t0.elapsed());
    assert_auto_restore(&c, &ns, &backup);
    eprintln!("[chart] auto-restore done {:.1?} after the start of the test", t0.elapsed());
    // The chart's ephemeralPatterns reach the Pod: a matching namespace is labelled on creation.
    let pr = unique("pr");
    c.t.kubectl(&["create", "namespace", &pr]).ok();
    let v = c.t.get_json(&["namespace", &pr]);
    assert_eq!(v["metadata"]["labels"]["kubectl-backup.dev/ephemeral"], "true", "{v}");
    assert_continuous_and_expiry(&c, &ns);
    eprintln!("[chart] continuous backup and expiry done {:.1?} after the start of the test", t0.elapsed());

    // `helm uninstall` removes the templates' objects and keeps crds/ (Helm's rule); removing the
    // CRDs and the namespace too must leave nothing.
    c.t.kubectl(&["delete", "-f", &rendered.display().to_string(), "--wait=true", "--timeout=120s"]).ok();
    c.t.kubectl(&["delete", "-f", &crds.display().to_string(), "--wait=true", "--timeout=120s"]).ok();
    c.t.kubectl(&["delete", "namespace", OWN_NS, "--wait=true", "--timeout=120s"]).ok();
    assert_nothing_left(&c, &image);
    eprintln!("[chart] test body took {:.1?}", t0.elapsed());
}

#[test]
fn install_runs_on_the_node_and_uninstall_leaves_nothing() {
    let (_one, c) = start("install");
    let t0 = Instant::now();
    let image = build_and_import(&c);
    let (ns, backup) = backed_up_namespace(&c);

    c.install(&image, &[]);
    assert_webhook_pod_ready(&c);
    eprintln!("[install] webhook Pod Ready {:.1?} after the start of the test", t0.elapsed());
    assert_auto_restore(&c, &ns, &backup);
    eprintln!("[install] auto-restore done {:.1?} after the start of the test", t0.elapsed());
    assert_scheduled_backup(&c, &ns);
    eprintln!("[install] scheduled backup done {:.1?} after the start of the test", t0.elapsed());

    let out = c.t.backup(&["uninstall", "--yes"]).ok();
    assert!(out.stdout.contains("deleted MutatingWebhookConfiguration"), "{}", out.stdout);
    eprintln!("[install] uninstalled {:.1?} after the start of the test", t0.elapsed());
    assert_nothing_left(&c, &image);
    eprintln!("[install] test body took {:.1?}", t0.elapsed());
}
