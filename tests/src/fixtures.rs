//! What tests use to drive the real tools: the real `kubectl` (which finds the plugin on PATH), the
//! plugin binary, objects applied from YAML, and unique names so tests never share namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::control_plane::ClusterInfo;
use crate::stores::StoreInfo;

/// `target/debug` (or the profile dir the tests were built in), where `kubectl-backup` is.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

pub fn plugin_path() -> PathBuf {
    let p = bin_dir().join("kubectl-backup");
    assert!(p.exists(), "{} is missing: build it first (cargo build --workspace --bins)", p.display());
    p
}

/// A unique DNS-label name: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &crate::control_plane::random_token()[..8])
}

/// The result of running a command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the command succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed (exit {}):\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// Runs tools as one user against one cluster, with one store's environment.
#[derive(Clone, Debug)]
pub struct Tools {
    pub kubeconfig: PathBuf,
    pub env: Vec<(String, String)>,
    pub location: Option<String>,
}

impl Tools {
    pub fn new(cluster: &ClusterInfo) -> Tools {
        Tools { kubeconfig: cluster.kubeconfig.clone(), env: Vec::new(), location: None }
    }

    /// The same tools with a store's credentials and a location under `prefix`.
    pub fn with_store(&self, store: &StoreInfo, prefix: &str) -> Tools {
        let mut t = self.clone();
        t.env.extend(store.env.iter().cloned());
        t.location = Some(store.location(prefix));
        t
    }

    pub fn as_user(&self, kubeconfig: &Path) -> Tools {
        let mut t = self.clone();
        t.kubeconfig = kubeconfig.to_path_buf();
        t
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
        c.env("PATH", path).env("KUBECONFIG", &self.kubeconfig).env_remove("KUBECTL_BACKUP_LOCATION");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The real kubectl, to spawn (e.g. `logs -f` beside what a test does).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut c = self.command("kubectl");
        c.args(args);
        c
    }

    /// The real kubectl.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        Run::from(self.command("kubectl").args(args).output().expect("running kubectl"))
    }

    /// `kubectl backup ARGS --location <this location>`, through the real kubectl.
    pub fn backup(&self, args: &[&str]) -> Run {
        Run::from(self.backup_command(args).output().expect("running kubectl backup"))
    }

    /// The command [`Tools::backup`] runs, to spawn (kubectl execs the plugin: the child's pid is
    /// the plugin's).
    pub fn backup_command(&self, args: &[&str]) -> Command {
        let mut c = self.command("kubectl");
        c.arg("backup").args(args);
        if let Some(l) = &self.location {
            c.arg("--location").arg(l);
        }
        c
    }

    /// A shell command line (`sh -c`), with this cluster, store environment and PATH: for pipelines
    /// exactly as documented, e.g. `kubectl backup install --dry-run -o yaml | kubectl apply -f -`.
    pub fn sh(&self, script: &str) -> Run {
        Run::from(self.command("sh").arg("-c").arg(script).output().expect("running sh"))
    }

    /// `kubectl apply -f -` of a YAML document.
    pub fn apply(&self, yaml: &str) -> Run {
        self.pipe(&["apply", "-f", "-"], yaml)
    }

    /// kubectl with `input` on its standard input.
    pub fn pipe(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command("kubectl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running kubectl apply");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writing stdin");
        Run::from(child.wait_with_output().expect("kubectl"))
    }

    /// `kubectl create -f -` of a YAML document (no last-applied annotation: for large objects).
    pub fn create(&self, yaml: &str) -> Run {
        self.pipe(&["create", "-f", "-"], yaml)
    }

    /// `kubectl get ... -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        self.kubectl(&a).ok().json()
    }

    /// Names of the items of `kubectl get ... -o json`.
    pub fn names(&self, args: &[&str]) -> Vec<String> {
        let v = self.get_json(args);
        let mut names: Vec<String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Deletes a namespace and waits until it is gone.
    pub fn delete_namespace(&self, ns: &str) {
        self.kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=120s"]).ok();
    }
}

/// A kubeconfig (written in `dir`) with the token of ServiceAccount `ns/name`, from its token
/// Secret, which kube-controller-manager creates on 1.20.
pub fn service_account_kubeconfig(t: &Tools, cluster: &ClusterInfo, dir: &Path, ns: &str, name: &str) -> PathBuf {
    let token = service_account_token(t, ns, name);
    std::fs::create_dir_all(dir).expect("test dir");
    let path = dir.join(format!("{ns}-{name}.kubeconfig"));
    crate::control_plane::write_kubeconfig(&path, &cluster.server, &cluster.ca_file, name, &token)
        .expect("writing the ServiceAccount kubeconfig");
    path
}

/// The token of ServiceAccount `ns/name` (from the Secret the token controller makes for it).
pub fn service_account_token(t: &Tools, ns: &str, name: &str) -> String {
    let mut token = None;
    for _ in 0..100 {
        let sa = t.kubectl(&["get", "serviceaccount", name, "-n", ns, "-o", "json"]);
        if sa.code == 0
            && let Some(secret) = sa.json()["secrets"][0]["name"].as_str()
        {
            let s = t.get_json(&["secret", secret, "-n", ns]);
            if let Some(tok) = s["data"]["token"].as_str() {
                let raw =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, tok).expect("base64 token");
                token = Some(String::from_utf8(raw).expect("a UTF-8 token"));
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    token.unwrap_or_else(|| panic!("ServiceAccount {ns}/{name} got no token Secret"))
}

/// An annotation of an object, as kubectl printed it.
pub fn annotation(v: &Value, key: &str) -> Option<String> {
    v["metadata"]["annotations"][key].as_str().map(str::to_string)
}

/// `(reason, message)` of the Events in `ns`.
pub fn events(t: &Tools, ns: &str) -> Vec<(String, String)> {
    t.get_json(&["events", "-n", ns])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().or(e["note"].as_str()).unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// An identity for `--catch-up-identity`: ServiceAccount `catch-up` in `ns`, bound to
/// cluster-admin (the admin's choice in these tests). Returns its user name.
pub fn catch_up_identity(t: &Tools, ns: &str) -> String {
    t.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: catch-up\n  namespace: {ns}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: catch-up-{ns}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\nsubjects:\n- {{kind: ServiceAccount, name: catch-up, namespace: {ns}}}\n"
    ))
    .ok();
    format!("system:serviceaccount:{ns}:catch-up")
}

/// A realistic small application in `ns`: ConfigMap, Secret, ServiceAccount, Role, RoleBinding,
/// Deployment, Service and a PVC.
pub fn sample_app(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    team: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
  labels:
    app: web
data:
  color: blue
  size: "3"
---
apiVersion: v1
kind: Secret
metadata:
  name: credentials
  namespace: {ns}
  labels:
    app: web
type: Opaque
stringData:
  password: s3cr3t
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
  namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
  namespace: {ns}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: web-reads
  namespace: {ns}
subjects:
- kind: ServiceAccount
  name: web
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: reader
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: {ns}
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 1Gi
"#
    )
}

/// A CRD `widgets.<group>` (namespaced) and one Widget in `ns`.
pub fn widget_crd(group: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size:
                type: integer
              color:
                type: string
"#
    )
}

pub fn widget(group: &str, ns: &str, name: &str) -> String {
    format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  size: 3\n  color: red\n"
    )
}

/// Waits until a CRD is established (after `apply`), so custom resources can be created.
pub fn wait_crd(tools: &Tools, name: &str) {
    tools.kubectl(&["wait", "--for=condition=Established", &format!("crd/{name}"), "--timeout=60s"]).ok();
}

/// The entry paths in a `.tar.zst` archive, read with the real `tar`.
pub fn tar_entries(archive: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("--zstd").arg("-tf").arg(archive).output().expect("running tar");
    assert!(out.status.success(), "tar failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Rewrites the contents file of the plain (format 2) backup `name` in the `file://` location `dir`
/// with `edit`, and records the new file's size and SHA-256 in `metadata.json`, as a writer with
/// the location's credentials could: only the per-object checks can then tell.
pub fn rewrite_contents(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<Value>)) {
    let bdir = dir.join("backups").join(name);
    let meta_path = bdir.join("metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let key = meta["contents"]["file"]["key"].as_str().expect("a format-2 backup with a contents file").to_string();
    let plain = zstd::decode_all(std::fs::File::open(bdir.join(&key)).unwrap()).unwrap();
    let mut lines: Vec<Value> =
        plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    edit(&mut lines);
    let mut out = Vec::new();
    for l in &lines {
        serde_json::to_writer(&mut out, l).unwrap();
        out.push(b'\n');
    }
    let packed = zstd::encode_all(out.as_slice(), 3).unwrap();
    std::fs::write(bdir.join(&key), &packed).unwrap();
    meta["contents"]["entries"] = lines.len().into();
    meta["contents"]["file"]["size"] = packed.len().into();
    meta["contents"]["file"]["sha256"] = kubectl_backup_core::archive::sha256_hex(&packed).into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// `count` ConfigMaps of `bytes` random bytes each in `ns` (as binaryData: incompressible).
pub fn random_configmaps(ns: &str, count: usize, bytes: usize) -> String {
    use base64::Engine;
    use rand::RngExt;
    let mut rng = rand::rng();
    let mut yaml = String::new();
    for i in 0..count {
        let data: Vec<u8> = (0..bytes).map(|_| rng.random()).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
        yaml.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: blob-{i:03}\n  namespace: {ns}\nbinaryData:\n  blob: {b64}\n"));
    }
    yaml
}

/// `count` small ConfigMaps in `ns`.
pub fn small_configmaps(ns: &str, count: usize) -> String {
    let mut yaml = String::new();
    for i in 0..count {
        yaml.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:05}\n  namespace: {ns}\n  labels:\n    app: bulk\ndata:\n  i: \"{i}\"\n"));
    }
    yaml
}

/// A Role in `ns` allowing `verbs` on core-group `resources`, bound to the harness user `user`.
pub fn user_role(ns: &str, user: &str, role: &str, resources: &[&str], verbs: &[&str]) -> String {
    let (resources, verbs) = (resources.join(", "), verbs.join(", "));
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {role}, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [{resources}], verbs: [{verbs}]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}-{role}, namespace: {ns}}}
subjects: [{{kind: User, name: {user}, apiGroup: rbac.authorization.k8s.io}}]
roleRef: {{kind: Role, name: {role}, apiGroup: rbac.authorization.k8s.io}}
"#
    )
}

/// A CustomResourceDefinition of `<plural>.<group>`, version v1, `scope` `Namespaced` or `Cluster`,
/// whose objects may hold any field.
pub fn crd(group: &str, plural: &str, kind: &str, scope: &str) -> String {
    let singular = kind.to_lowercase();
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  scope: {scope}
  names: {{plural: {plural}, singular: {singular}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"#
    )
}

pub fn namespace(ns: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
}

/// Starts `command` (a plugin run) with its output piped, waits until `ready` holds (failing the
/// test with what it waited for after two minutes), presses Ctrl-C (SIGINT to the process; kubectl
/// execs its plugins, so that is the plugin), and waits up to a minute for it to end, killing it
/// after that: its exit code and stderr, and how long it took to end after Ctrl-C.
pub fn ctrl_c(
    mut command: Command,
    ready: (&str, &mut dyn FnMut() -> bool),
) -> (Option<i32>, String, std::time::Duration) {
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starting the plugin");
    let (what, ready) = ready;
    if !wait_until(std::time::Duration::from_secs(120), ready) {
        let _ = child.kill();
        let out = child.wait_with_output().expect("the plugin's output");
        panic!("{what}: not within 120 s; the plugin said: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sigint = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
    assert!(sigint.success());
    let pressed = std::time::Instant::now();
    let ended = wait_until(std::time::Duration::from_secs(60), || child.try_wait().ok().flatten().is_some());
    let took = pressed.elapsed();
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("the plugin's output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ended, "the plugin did not end within 60 s of Ctrl-C: {stderr}");
    eprintln!("[ctrl-c] the plugin ended {took:.1?} after Ctrl-C");
    (out.status.code(), stderr, took)
}

/// Waits until `f` holds, failing the test with `what` after `timeout`.
pub fn eventually(what: &str, timeout: std::time::Duration, f: impl FnMut() -> bool) {
    assert!(wait_until(timeout, f), "{what}: not within {timeout:?}");
}

/// Waits until `f` holds; false when `timeout` passes first.
pub fn wait_until(timeout: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !f() {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    true
}

/// A control plane of a test's own (for tests that install cluster-wide things: webhooks,
/// controllers), with admin tools pointed at the shared S3 server under a fresh prefix.
pub struct OwnCluster {
    pub env: crate::env::SharedEnv,
    pub cp: crate::control_plane::ControlPlane,
    /// Admin tools on this cluster, with the S3 store and `location`.
    pub t: Tools,
    pub location: String,
    pub dir: PathBuf,
}

impl OwnCluster {
    pub fn start(name: &str) -> OwnCluster {
        let env = crate::env::SharedEnv::load().expect("shared environment");
        let dir = env.scratch.join(unique(name));
        let cp =
            crate::control_plane::ControlPlane::start(&dir.join("cluster")).expect("a control plane for this test");
        let prefix = unique(name);
        let t = Tools::new(&cp.info).with_store(&env.s3, &prefix);
        let location = env.s3.location(&prefix);
        OwnCluster { env, cp, t, location, dir }
    }

    /// Installs kubectl-backup in `own_namespace` with the real `kubectl backup install` (its
    /// ServiceAccount, roles, CRDs, MutatingWebhookConfiguration; the Deployment stays Pending on
    /// this node-less cluster) and starts backup-webhook as a local process **with that
    /// ServiceAccount's token**, the installed webhook configuration pointed at it. So the RBAC,
    /// the rules, the namespaceSelector, the timeout and the failurePolicy the tests exercise are
    /// exactly what users install. `extra` flags go to the webhook; `--workspace-resource` ones to
    /// install too.
    pub fn webhook(&self, own_namespace: &str, extra: &[&str]) -> crate::webhook::Webhook {
        self.webhook_at(own_namespace, &self.location, extra)
    }

    /// [`OwnCluster::webhook`] with `--location` `location` (a URL, or a BackupLocation's name).
    pub fn webhook_at(&self, own_namespace: &str, location: &str, extra: &[&str]) -> crate::webhook::Webhook {
        let mut install = vec![
            "backup".to_string(),
            "install".into(),
            "--namespace".into(),
            own_namespace.into(),
            "--location".into(),
            self.location.clone(),
        ];
        install.extend(extra.iter().filter(|a| a.starts_with("--workspace-resource")).map(|s| s.to_string()));
        let args: Vec<&str> = install.iter().map(String::as_str).collect();
        self.t.kubectl(&args).ok();
        let kubeconfig = self.service_account_kubeconfig(own_namespace, crate::webhook::SERVICE_ACCOUNT);
        let mut args = vec![format!("--namespace={own_namespace}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let w =
            crate::webhook::Webhook::start(&self.dir.join("webhook"), &kubeconfig, location, &self.env.s3.env, &args)
                .expect("starting backup-webhook");
        w.point_installed_configuration_here(&self.t);
        w
    }

    /// The CRDs `install --dry-run -o json` renders, applied and Established (no controller).
    pub fn install_crds(&self) {
        let rendered = self.t.backup(&["install", "--dry-run", "-o", "json"]).ok().json();
        let crds: Vec<Value> = rendered["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .cloned()
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": crds});
        self.t.pipe(&["apply", "-f", "-"], &list.to_string()).ok();
        for crd in &crds {
            let name = format!("crd/{}", crd["metadata"]["name"].as_str().unwrap_or_default());
            self.t.kubectl(&["wait", "--for=condition=Established", &name, "--timeout=60s"]).ok();
        }
    }

    /// A kubeconfig with the token of ServiceAccount `ns/name` (see [`service_account_kubeconfig`]).
    pub fn service_account_kubeconfig(&self, ns: &str, name: &str) -> PathBuf {
        service_account_kubeconfig(&self.t, &self.cp.info, &self.dir, ns, name)
    }
}
