//! The Helm chart `charts/kubectl-backup`, linted and rendered by real Helm (v4, embedded in the PyPI
//! package helm-python-sdk, driven by `charts/test-chart.py`), compared object by object with what
//! `kubectl backup install` renders, and applied to a real API server.
//!
//! The values the chart is rendered with are the chart's own `ci/*-values.yaml`; every expectation is
//! read from those files or from `kubectl backup install --dry-run`, never written down twice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use kubectl_backup_e2e::control_plane::ControlPlane;
use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{Run, Tools, namespace, plugin_path, service_account_kubeconfig, unique, wait_crd};
use kubectl_backup_e2e::process::{Process, cached_tool, free_port, wait_for};
use kubectl_backup_e2e::webhook::Webhook;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo().join("charts/kubectl-backup")
}

fn scratch(name: &str) -> PathBuf {
    let dir = SharedEnv::load().expect("shared environment").scratch.join(unique(name));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `charts/test-chart.py OUT_DIR ARGS...` with the venv's Python (tests/env/install.sh helm).
fn test_chart(out: &Path, args: &[&str]) -> Run {
    let python = cached_tool("venv/bin/python").expect("the Helm SDK venv");
    let output = Command::new(python)
        .arg(repo().join("charts/test-chart.py"))
        .arg(out)
        .args(args)
        .output()
        .expect("running charts/test-chart.py");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Lints and renders every `ci/*-values.yaml` for release namespace `ns` into `out`.
fn render(out: &Path, ns: &str) {
    test_chart(out, &["--namespace", ns]).ok();
}

fn read_stream(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// A values file of the chart's `ci/` directory.
fn ci_values(variant: &str) -> Value {
    let path = chart_dir().join(format!("ci/{variant}-values.yaml"));
    serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("ci values")).expect("ci values are YAML")
}

/// The CRDs the chart ships in `crds/` (Helm installs them before the templates).
fn chart_crds() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("crds"))
        .expect("crds/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| read_stream(f)).collect()
}

/// `kubectl-backup install --dry-run -o json ARGS...`: the objects install would apply.
fn install_dry_run(args: &[String]) -> Vec<Value> {
    let out = Command::new(plugin_path())
        .args(["install", "--dry-run", "-o", "json"])
        .args(args)
        .env_remove("KUBECTL_BACKUP_LOCATION")
        .output()
        .expect("running kubectl-backup install");
    assert!(out.status.success(), "install --dry-run failed: {}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).expect("install -o json is JSON");
    list["items"].as_array().expect("a List").clone()
}

/// The Secret with the store's credentials the values name (or make the chart create).
fn credentials_secret(values: &Value) -> Option<String> {
    let name = values["credentials"]["secretName"].as_str().filter(|n| !n.is_empty());
    match values["credentials"]["create"].as_bool() {
        Some(true) => Some(name.unwrap_or("backup-webhook-credentials").to_string()),
        _ => name.map(str::to_string),
    }
}

/// The `install` flags that mean what a values file means.
fn install_flags(values: &Value, ns: &str) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut flags = vec![format!("--location={}", s(&values["location"]["url"])), format!("--namespace={ns}")];
    for (key, flag) in [("region", "--region"), ("endpoint", "--s3-endpoint")] {
        if let Some(v) = values["location"][key].as_str().filter(|v| !v.is_empty()) {
            flags.push(format!("{flag}={v}"));
        }
    }
    if let Some(secret) = credentials_secret(values) {
        flags.push(format!("--credentials-secret={secret}"));
    }
    if let Some(repo) = values["image"]["repository"].as_str() {
        let tag = values["image"]["tag"].as_str().filter(|t| !t.is_empty()).unwrap_or(env!("CARGO_PKG_VERSION"));
        flags.push(format!("--image={repo}:{tag}"));
    }
    if let Some(patterns) = values["ephemeralPatterns"].as_array().filter(|p| !p.is_empty()) {
        let list: Vec<String> = patterns.iter().map(s).collect();
        flags.push(format!("--ephemeral-pattern={}", list.join(",")));
    }
    if let Some(sel) = values["workspaceSelector"].as_str().filter(|v| !v.is_empty()) {
        flags.push(format!("--workspace-selector={sel}"));
    }
    if let Some(resources) = values["workspaceResources"].as_array().filter(|r| !r.is_empty()) {
        let list: Vec<String> = resources.iter().map(s).collect();
        flags.push(format!("--workspace-resource={}", list.join(",")));
    }
    if let Some(c) = values["continuous"].as_bool() {
        flags.push(format!("--continuous={c}"));
    }
    if let Some(who) = values["volumeIdentity"].as_str().filter(|v| !v.is_empty()) {
        flags.push(format!("--volume-identity={who}"));
    }
    if let Some(rate) = values["moverBandwidth"].as_str().filter(|v| !v.is_empty()) {
        flags.push(format!("--mover-bandwidth={rate}"));
    }
    if values["certManager"]["enabled"].as_bool() == Some(true) {
        flags.push("--cert-manager".into());
    }
    let role = &values["location"]["assumeRole"];
    for (key, flag) in [
        ("roleArn", "--role-arn"),
        ("externalId", "--external-id"),
        ("sessionName", "--session-name"),
        ("stsEndpoint", "--sts-endpoint"),
    ] {
        if let Some(v) = role[key].as_str().filter(|v| !v.is_empty()) {
            flags.push(format!("{flag}={v}"));
        }
    }
    if let Some(d) = role["durationSeconds"].as_u64() {
        flags.push(format!("--role-duration-seconds={d}"));
    }
    if let Some(level) = values["logLevel"].as_str().filter(|v| !v.is_empty()) {
        flags.push(format!("--log-level={level}"));
    }
    if let Some(annotations) = values["serviceAccount"]["annotations"].as_object() {
        for (k, v) in annotations {
            flags.push(format!("--sa-annotation={k}={}", s(v)));
        }
    }
    flags
}

fn key(o: &Value) -> (String, String) {
    (o["kind"].as_str().unwrap_or_default().to_string(), o["metadata"]["name"].as_str().unwrap_or_default().to_string())
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", objs.iter().map(key).collect::<Vec<_>>()))
}

/// An object without what legitimately differs between the chart and install: labels (Helm adds
/// its own) and generated key material.
fn comparable(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("labels");
    }
    if let Some(m) = o.pointer_mut("/spec/template/metadata").and_then(Value::as_object_mut) {
        m.remove("labels");
    }
    if o["kind"] == "Secret" && o["type"] == "kubernetes.io/tls" {
        for v in o["data"].as_object_mut().into_iter().flat_map(|d| d.values_mut()) {
            *v = json!("<generated>");
        }
    }
    for w in o["webhooks"].as_array_mut().into_iter().flatten() {
        if let Some(c) = w["clientConfig"].as_object_mut() {
            c.remove("caBundle");
        }
    }
    o
}

/// Objects the chart renders only when its values ask for them: a credentials Secret it creates and
/// the BackupSchedules.
fn chart_only(values: &Value) -> BTreeSet<(String, String)> {
    let mut extra = BTreeSet::new();
    if values["credentials"]["create"].as_bool() == Some(true) {
        extra.insert(("Secret".to_string(), credentials_secret(values).unwrap_or_default()));
    }
    for s in values["schedules"].as_array().into_iter().flatten() {
        extra.insert(("BackupSchedule".to_string(), s["name"].as_str().unwrap_or_default().to_string()));
    }
    if values["serviceMonitor"]["enabled"].as_bool() == Some(true) {
        extra.insert(("ServiceMonitor".to_string(), "backup-webhook".to_string()));
    }
    extra
}

/// The chart (templates + crds/) and `install` render the same objects, field for field, except
/// labels, generated keys, the Namespace (Helm's `--create-namespace`) and the chart-only extras.
fn assert_same_objects_as_install(rendered: &[Value], values: &Value, ns: &str) {
    let installed = install_dry_run(&install_flags(values, ns));
    let mut chart: Vec<Value> = chart_crds();
    chart.extend(rendered.iter().cloned());
    let extra = chart_only(values);
    let chart_keys: BTreeSet<_> = chart.iter().map(key).filter(|k| !extra.contains(k)).collect();
    let install_keys: BTreeSet<_> = installed.iter().map(key).filter(|(kind, _)| kind != "Namespace").collect();
    assert_eq!(chart_keys, install_keys, "the chart and `kubectl backup install` render different objects");
    for i in installed.iter().filter(|o| o["kind"] != "Namespace") {
        let (kind, name) = key(i);
        let c = find(&chart, &kind, &name);
        if kind == "CustomResourceDefinition" {
            assert_eq!(c, i, "crds/ differs from install's CRD {name}: run charts/update-crds.sh");
            continue;
        }
        assert_eq!(comparable(c), comparable(i), "{kind} {name}: the chart and install differ");
        // Helm's labels come on top of install's, and the selector still matches the pods.
        for (k, v) in i["metadata"]["labels"].as_object().expect("install labels") {
            if k != "app.kubernetes.io/managed-by" {
                assert_eq!(&c["metadata"]["labels"][k], v, "{kind} {name}: label {k}");
            }
        }
        if let Some(selector) = c.pointer("/spec/selector/matchLabels").and_then(Value::as_object) {
            for (k, v) in selector {
                assert_eq!(&c["spec"]["template"]["metadata"]["labels"][k], v, "{kind} {name}: pods miss {k}");
            }
        }
    }
}

/// The webhook settings the issue requires, and the namespaces it must never touch.
fn assert_webhook_settings(mwc: &Value, ns: &str) {
    let w = &mwc["webhooks"][0];
    assert_eq!(mwc["webhooks"].as_array().map(Vec::len), Some(2));
    // Backup and Restore requests: every namespace, and refused when the webhook does not answer.
    let r = &mwc["webhooks"][1];
    assert_eq!(r["name"], "requests.kubectl-backup.dev");
    assert_eq!(r["failurePolicy"], "Fail");
    assert_eq!(r["namespaceSelector"], Value::Null);
    assert_eq!(r["rules"][0]["resources"], json!(["backups", "restores"]));
    assert_eq!(r["clientConfig"]["service"], w["clientConfig"]["service"]);
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["timeoutSeconds"], 5);
    assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        w["namespaceSelector"]["matchExpressions"],
        json!([
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [ns, "kube-system"]},
            {"key": "kubectl-backup.dev/admission", "operator": "NotIn", "values": ["skip"]}
        ])
    );
    assert_eq!(
        w["clientConfig"]["service"],
        json!({"name": "backup-webhook", "namespace": ns, "path": "/mutate", "port": 443})
    );
}

fn b64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s.as_str().expect("a base64 string")).expect("valid base64")
}

fn container(objs: &[Value]) -> &Value {
    &find(objs, "Deployment", "backup-webhook")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objs: &[Value]) -> Vec<String> {
    container(objs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Serves HTTPS with the chart's generated certificate and key through the real `backup-webhook`,
/// and checks a client trusting only the chart's caBundle reaches it under the Service's DNS names.
fn assert_webhook_serves_the_generated_certificate(
    secret: &Value,
    ca_bundle: &Value,
    ns: &str,
    cp: &ControlPlane,
    dir: &Path,
) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for (file, k) in [("tls.crt", "tls.crt"), ("tls.key", "tls.key"), ("ca.crt", "ca.crt")] {
        std::fs::write(tls.join(file), b64(&secret["data"][k])).unwrap();
    }
    std::fs::write(tls.join("bundle.crt"), b64(ca_bundle)).unwrap();
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let port = free_port();
    let bin = kubectl_backup_e2e::fixtures::bin_dir().join("backup-webhook");
    let args: Vec<String> = vec![
        format!("--listen=127.0.0.1:{port}"),
        format!("--tls-cert={}", tls.join("tls.crt").display()),
        format!("--tls-key={}", tls.join("tls.key").display()),
        format!("--location=file://{}", dir.join("store").display()),
        format!("--kubeconfig={}", cp.info.kubeconfig.display()),
        format!("--namespace={ns}"),
        "--continuous=false".into(),
        "--restore-worker=false".into(),
        "--schedules=false".into(),
    ];
    let mut webhook = Process::spawn("backup-webhook", &bin, &args, &dir.join("backup-webhook.log"), &[])
        .expect("starting backup-webhook");
    let curl = |host: &str| {
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "2", "--cacert"])
            .arg(tls.join("bundle.crt"))
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg(format!("https://{host}:{port}/healthz"))
            .status()
            .is_ok_and(|s| s.success())
    };
    let svc = format!("backup-webhook.{ns}.svc");
    wait_for("backup-webhook with the chart's certificate", &mut webhook, Duration::from_secs(60), || curl(&svc))
        .expect("the webhook serves the chart's certificate, trusted through the caBundle");
    assert!(curl(&format!("{svc}.cluster.local")), "the certificate lacks {svc}.cluster.local");
    assert!(!curl("backup-webhook.elsewhere.svc"), "a name the certificate must not cover was accepted");
}

#[test]
fn the_chart_renders_what_install_renders_and_the_api_server_accepts_it() {
    let dir = scratch("chart");
    let ns = unique("kb");
    let out = dir.join("rendered");
    render(&out, &ns);
    let values = ci_values("default");
    let objs = read_stream(&out.join("default.yaml"));

    // Structure: the webhook settings, the CA in the caBundle, the location given.
    let mwc = find(&objs, "MutatingWebhookConfiguration", "kubectl-backup");
    assert_webhook_settings(mwc, &ns);
    let secret = find(&objs, "Secret", "backup-webhook-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca_bundle = &mwc["webhooks"][0]["clientConfig"]["caBundle"];
    assert_eq!(ca_bundle, &secret["data"]["ca.crt"], "the caBundle is not the CA in the Secret");
    assert!(String::from_utf8(b64(ca_bundle)).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    // The default location is in the webhook's flags (it creates the BackupLocation), so the
    // rendered stream holds no custom resource and applies in one go.
    let url = values["location"]["url"].as_str().unwrap();
    assert!(args(&objs).contains(&format!("--default-location-url={url}")), "{:?}", args(&objs));
    assert!(
        !objs.iter().any(|o| ["BackupSchedule", "BackupLocation", "Namespace"].contains(&o["kind"].as_str().unwrap()))
    );
    for o in &objs {
        if o["metadata"].get("namespace").is_some() {
            assert_eq!(o["metadata"]["namespace"], ns.as_str(), "{:?} is outside the release namespace", key(o));
        }
    }
    assert_same_objects_as_install(&objs, &values, &ns);

    // The real API server: CRDs for real, then every rendered object with a server-side dry run.
    let cp = ControlPlane::start(&dir.join("cluster")).expect("a control plane for this test");
    let t = Tools::new(&cp.info);
    t.apply(&namespace(&ns)).ok();
    t.kubectl(&["apply", "-f", &chart_dir().join("crds").display().to_string()]).ok();
    for crd in chart_crds() {
        wait_crd(&t, crd["metadata"]["name"].as_str().unwrap());
    }
    let default_yaml = out.join("default.yaml").display().to_string();
    let dry = t.kubectl(&["apply", "--dry-run=server", "-f", &default_yaml]).ok();
    assert_eq!(dry.stdout.matches("(server dry run)").count(), objs.len(), "{}", dry.stdout);
    assert!(t.names(&["deployments", "-n", &ns]).is_empty(), "a dry run created objects");

    // The cert-manager variant without the cert-manager objects (no cert-manager here): the created
    // credentials Secret and the BackupSchedules validate against the real CRDs.
    let cm: Vec<Value> = read_stream(&out.join("cert-manager.yaml"))
        .into_iter()
        .filter(|o| !o["apiVersion"].as_str().unwrap_or_default().starts_with("cert-manager.io/"))
        .collect();
    let cm_file = dir.join("cert-manager-without-cert-manager.json");
    std::fs::write(&cm_file, serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": cm})).unwrap())
        .unwrap();
    let dry = t.kubectl(&["apply", "--dry-run=server", "-f", &cm_file.display().to_string()]).ok();
    assert_eq!(dry.stdout.matches("(server dry run)").count(), cm.len(), "{}", dry.stdout);

    // The generated key pair works in the real webhook, for the Service's names, under the caBundle.
    assert_webhook_serves_the_generated_certificate(secret, ca_bundle, &ns, &cp, &dir.join("webhook"));

    // Installed for real, and the webhook run with the chart's Deployment flags (no node runs its
    // Pod here) against the shared S3 server, whose bucket the values name: it creates the
    // BackupLocation the plugin finds.
    t.kubectl(&["apply", "-f", &default_yaml]).ok();
    let env = SharedEnv::load().expect("shared environment");
    let deployment = find(&objs, "Deployment", "backup-webhook");
    // With the token of the chart's ServiceAccount: the chart's RBAC is what is tested.
    let kubeconfig = service_account_kubeconfig(&t, &cp.info, &dir, &ns, kubectl_backup_e2e::webhook::SERVICE_ACCOUNT);
    let _webhook = Webhook::from_deployment(&dir.join("webhook-chart"), &kubeconfig, deployment, &ns, &env.s3.env)
        .expect("backup-webhook with the chart's flags");
    let listed = t.backup(&["location", "list", "-o", "json", "--install-namespace", &ns]).ok().json();
    assert_eq!(listed["items"][0]["spec"]["url"], values["location"]["url"], "{listed}");
    // Every `kubectl backup` command NOTES.txt tells the user to run works, as NOTES.txt says to
    // run it (with KUBECTL_BACKUP_NAMESPACE exported when the release is not in kubectl-backup).
    let notes = std::fs::read_to_string(out.join("default.NOTES.txt")).expect("NOTES.txt rendered");
    let commands: Vec<&str> = notes.lines().map(str::trim).filter(|l| l.starts_with("kubectl backup ")).collect();
    assert!(commands.len() >= 2, "{notes}");
    assert!(notes.contains(&format!("export KUBECTL_BACKUP_NAMESPACE={ns}")), "{notes}");
    let mut as_told = t.clone();
    as_told.env.push(("KUBECTL_BACKUP_NAMESPACE".into(), ns.clone()));
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().skip(2).collect();
        let run = as_told.backup(&words);
        assert_eq!(run.code, 0, "NOTES.txt's `{command}` failed: {}", run.stderr);
    }
    // `version` finds the installed component: the chart's image, not ready (no node here).
    let v = t.backup(&["version", "-o", "json", "--install-namespace", &ns]).ok().json();
    let image = container(&objs)["image"].as_str().unwrap().to_string();
    assert_eq!(v["inCluster"]["installed"], true, "{v}");
    assert_eq!(v["inCluster"]["image"], image.as_str(), "{v}");
    assert_eq!(v["inCluster"]["version"], image.rsplit_once(':').unwrap().1, "{v}");
    assert_eq!(v["inCluster"]["ready"], "0/1", "{v}");

    // An upgrade (lookup sees the live Secret) keeps the certificate; a fresh install would not.
    let live = t.get_json(&["secret", "backup-webhook-tls", "-n", &ns]);
    assert!(live["data"] == secret["data"], "the live Secret is not the rendered one");
    let default_values = chart_dir().join("ci/default-values.yaml").display().to_string();
    let kubeconfig = cp.info.kubeconfig.display().to_string();
    let upgrade = dir.join("upgrade");
    test_chart(&upgrade, &["--namespace", &ns, "--values", &default_values, "--kubeconfig", &kubeconfig]).ok();
    let upgraded = read_stream(&upgrade.join("default.yaml"));
    let kept = &find(&upgraded, "Secret", "backup-webhook-tls")["data"];
    assert!(kept == &live["data"], "the upgrade changed the certificate (lookup did not find the live Secret)");
    let mwc2 = find(&upgraded, "MutatingWebhookConfiguration", "kubectl-backup");
    assert!(&mwc2["webhooks"][0]["clientConfig"]["caBundle"] == ca_bundle, "the upgrade changed the caBundle");
    let fresh = dir.join("fresh");
    test_chart(&fresh, &["--namespace", &ns, "--values", &default_values]).ok();
    let fresh_objs = read_stream(&fresh.join("default.yaml"));
    let fresh_ca = &find(&fresh_objs, "Secret", "backup-webhook-tls")["data"]["ca.crt"];
    assert!(fresh_ca != &secret["data"]["ca.crt"], "an offline render reused the CA: the upgrade check proves nothing");
}

#[test]
fn the_cert_manager_variant_renders_schedules_credentials_and_no_generated_ca() {
    let dir = scratch("chart-cm");
    let ns = unique("kb");
    render(&dir, &ns);
    let values = ci_values("cert-manager");
    let objs = read_stream(&dir.join("cert-manager.yaml"));

    // cert-manager issues the certificate and injects the CA: nothing generated here.
    let mwc = find(&objs, "MutatingWebhookConfiguration", "kubectl-backup");
    assert_webhook_settings(mwc, &ns);
    assert_eq!(mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], format!("{ns}/backup-webhook-tls"));
    assert!(mwc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    assert!(!objs.iter().any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "backup-webhook-tls"));
    let cert = find(&objs, "Certificate", "backup-webhook-tls");
    assert_eq!(cert["spec"]["secretName"], "backup-webhook-tls");
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        find(&objs, "Issuer", "backup-webhook-selfsigned")["metadata"]["name"]
    );
    assert_eq!(
        cert["spec"]["dnsNames"],
        json!([format!("backup-webhook.{ns}.svc"), format!("backup-webhook.{ns}.svc.cluster.local")])
    );

    // Schedules: one BackupSchedule per entry, its spec the entry without name and namespace.
    let schedules = values["schedules"].as_array().expect("the cert-manager values have schedules");
    assert!(!schedules.is_empty());
    let rendered: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "BackupSchedule").collect();
    assert_eq!(rendered.len(), schedules.len());
    for s in schedules {
        let name = s["name"].as_str().unwrap();
        let bs = find(&objs, "BackupSchedule", name);
        assert_eq!(bs["apiVersion"], "kubectl-backup.dev/v1alpha1");
        assert_eq!(bs["metadata"]["namespace"], ns.as_str());
        let mut spec = s.clone();
        spec.as_object_mut().unwrap().remove("name");
        assert_eq!(bs["spec"], spec, "schedule {name}");
    }

    // Credentials: the created Secret holds the values, the webhook and the location use it.
    let secret_name = values["credentials"]["secretName"].as_str().unwrap();
    let creds = find(&objs, "Secret", secret_name);
    for (k, v) in values["credentials"]["data"].as_object().unwrap() {
        assert_eq!(b64(&creds["data"][k]), v.as_str().unwrap().as_bytes(), "credentials key {k}");
    }
    assert_eq!(container(&objs)["envFrom"][0]["secretRef"]["name"], secret_name);
    let flags = args(&objs);
    for (flag, value) in [
        ("--default-location-url", values["location"]["url"].as_str().unwrap()),
        ("--default-location-region", values["location"]["region"].as_str().unwrap()),
        ("--default-location-credentials-secret", secret_name),
    ] {
        assert!(flags.contains(&format!("{flag}={value}")), "{flag} missing: {flags:?}");
    }

    // Image and webhook flags from the values.
    assert_eq!(
        container(&objs)["image"],
        format!("{}:{}", values["image"]["repository"].as_str().unwrap(), values["image"]["tag"].as_str().unwrap())
    );
    let args = args(&objs);
    for p in values["ephemeralPatterns"].as_array().unwrap() {
        assert!(args.contains(&format!("--ephemeral-pattern={}", p.as_str().unwrap())), "{args:?}");
    }
    assert!(args.contains(&format!("--continuous={}", values["continuous"])), "{args:?}");
    assert!(args.contains(&format!("--workspace-selector={}", values["workspaceSelector"].as_str().unwrap())));

    assert_same_objects_as_install(&objs, &values, &ns);
}

#[test]
fn the_assumed_role_and_irsa_variant_renders_what_install_renders() {
    let dir = scratch("chart-role");
    let ns = unique("kb");
    let out = dir.join("rendered");
    render(&out, &ns);
    let values = ci_values("assume-role");
    let objs = read_stream(&out.join("assume-role.yaml"));
    let role = &values["location"]["assumeRole"];
    let flags = args(&objs);
    for (flag, value) in [
        ("--default-location-role-arn", role["roleArn"].as_str().unwrap().to_string()),
        ("--default-location-external-id", role["externalId"].as_str().unwrap().to_string()),
        ("--default-location-session-name", role["sessionName"].as_str().unwrap().to_string()),
        ("--default-location-role-duration-seconds", role["durationSeconds"].to_string()),
    ] {
        assert!(flags.contains(&format!("{flag}={value}")), "{flag} missing: {flags:?}");
    }
    let sa = find(&objs, "ServiceAccount", kubectl_backup_e2e::webhook::SERVICE_ACCOUNT);
    assert_eq!(sa["metadata"]["annotations"], values["serviceAccount"]["annotations"], "{sa}");
    assert!(flags.contains(&format!("--log-level={}", values["logLevel"].as_str().unwrap())), "{flags:?}");
    // The ServiceMonitor selects the Service (by labels it has) and scrapes its metrics port.
    // (No Prometheus Operator CRDs here: checked against the rendered Service, not an API server.)
    let sm = find(&objs, "ServiceMonitor", "backup-webhook");
    let svc = find(&objs, "Service", "backup-webhook");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "the Service lacks label {k}");
    }
    let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(svc["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == port), "{svc}");
    assert!(sm["spec"]["endpoints"][0].get("scheme").is_none(), "plain HTTP unless metricsTls: {sm}");
    assert_eq!(sm["metadata"]["labels"]["release"], values["serviceMonitor"]["labels"]["release"]);
    assert_same_objects_as_install(&objs, &values, &ns);
}

#[test]
fn lint_errors_and_missing_values_fail_the_chart_check() {
    let dir = scratch("chart-bad");
    // A schedule without `schedule` and with a misspelt field: values.schema.json rejects it in lint.
    let bad = dir.join("bad-schedule-values.yaml");
    std::fs::write(&bad, "location:\n  url: s3://b/p\nschedules:\n  - name: nightly\n    tll: 24h\n").unwrap();
    let run = test_chart(&dir.join("out"), &["--values", &bad.display().to_string()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("lint ERROR") && run.stderr.contains("tll"), "{}", run.stderr);
    assert!(!dir.join("out/bad-schedule.yaml").exists(), "a failed lint still wrote a rendering");

    // No location: the chart refuses to render, naming the value to set.
    let empty = dir.join("empty-values.yaml");
    std::fs::write(&empty, "{}\n").unwrap();
    let run = test_chart(&dir.join("out"), &["--values", &empty.display().to_string()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("location.url is required"), "{}", run.stderr);

    // The same script passes the chart's own values (so the failures above are about the values).
    test_chart(&dir.join("ok"), &[]).ok();
}
