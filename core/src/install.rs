//! What `kubectl backup install` puts in a cluster, rendered as plain manifests (pure, no I/O):
//! namespace, CRDs, RBAC, ServiceAccount, Deployment, Service, TLS material (or cert-manager
//! objects) and the MutatingWebhookConfiguration. The default BackupLocation is not among them: the
//! webhook creates it from its flags, so `kubectl apply` of the rendered stream works in one go on an
//! empty cluster. The Helm chart in `charts/kubectl-backup` produces the same objects.

use serde_json::{Value, json};

use crate::crd;

pub const APP: &str = "backup-webhook";
pub const WEBHOOK_CONFIGURATION: &str = "kubectl-backup";
pub const TLS_SECRET: &str = "backup-webhook-tls";
pub const CONTROLLER_ROLE: &str = "kubectl-backup-controller";
pub const ADMIN_ROLE: &str = "kubectl-backup-admin";
pub const OPERATOR_ROLE: &str = "kubectl-backup-operator";
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/kubectl-backup/backup-webhook:", env!("CARGO_PKG_VERSION"));

/// Everything that varies between installs.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub namespace: String,
    pub image: String,
    pub location_url: String,
    /// A Secret (in the install namespace) with the store's credentials as environment variables.
    pub credentials_secret: Option<String>,
    pub s3_endpoint: Option<String>,
    pub region: Option<String>,
    pub cert_manager: bool,
    pub ephemeral_patterns: Vec<String>,
    pub workspace_selector: Option<String>,
    /// Custom resources that are workspaces too, as `<plural>.<group>`.
    pub workspace_resources: Vec<String>,
    pub continuous: bool,
}

/// TLS material for the webhook when cert-manager is not used.
#[derive(Clone, Debug)]
pub struct Tls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The DNS names of the webhook Service in `namespace`: what its serving certificate must hold.
pub fn serving_names(namespace: &str) -> Vec<String> {
    let svc = format!("{APP}.{namespace}.svc");
    vec![APP.to_string(), format!("{APP}.{namespace}"), svc.clone(), format!("{svc}.cluster.local")]
}

/// Generates a CA and a serving certificate for the webhook Service's DNS names.
pub fn generate_tls(namespace: &str) -> Result<Tls, crate::pki::Error> {
    let ca = crate::pki::Ca::new("kubectl-backup-webhook-ca")?;
    let names = serving_names(namespace);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (cert_pem, key_pem) = ca.leaf(&names[2], &refs)?;
    Ok(Tls { ca_pem: ca.cert_pem.clone(), cert_pem, key_pem })
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": APP, "app.kubernetes.io/part-of": "kubectl-backup", "app.kubernetes.io/managed-by": "kubectl-backup"})
}

fn b64(s: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s.as_bytes())
}

/// The manifests, in the order they are applied. `tls` is required unless `opts.cert_manager`.
pub fn render(opts: &InstallOptions, tls: Option<&Tls>) -> Vec<Value> {
    let ns = opts.namespace.as_str();
    let mut out = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels()}})];
    for c in crd::definitions() {
        let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
        v["metadata"]["labels"] = labels();
        out.push(v);
    }
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": APP, "namespace": ns, "labels": labels()}}));
    out.extend(rbac(ns));
    match (opts.cert_manager, tls) {
        (true, _) => out.extend(cert_manager(ns)),
        (false, Some(t)) => out.push(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": TLS_SECRET, "namespace": ns, "labels": labels()},
            "data": {"tls.crt": b64(&t.cert_pem), "tls.key": b64(&t.key_pem), "ca.crt": b64(&t.ca_pem)}
        })),
        (false, None) => {}
    }
    out.push(deployment(opts));
    out.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": APP, "namespace": ns, "labels": labels()},
        "spec": {"selector": {"app.kubernetes.io/name": APP},
                 "ports": [{"name": "https", "port": 443, "targetPort": 8443}, {"name": "metrics", "port": 9090, "targetPort": 9090}]}
    }));
    out.push(webhook_configuration(opts, if opts.cert_manager { None } else { tls.map(|t| t.ca_pem.as_str()) }));
    // No BackupLocation here: `kubectl apply` maps every document before creating any, and the kind
    // does not exist until its CRD is established. The controller creates it from its
    // --default-location-* flags (see `default_location_args`), so the manifests apply in one go.
    out
}

/// The name of the BackupLocation install sets up; the webhook's `--location`.
pub const DEFAULT_LOCATION: &str = "default";

/// The default BackupLocation `kubectl backup install` applies, and the controller creates from
/// its flags when it is missing.
pub fn default_location(opts: &InstallOptions) -> Value {
    let mut location = json!({
        "apiVersion": crate::API_VERSION, "kind": "BackupLocation",
        "metadata": {"name": DEFAULT_LOCATION, "namespace": opts.namespace, "labels": labels()},
        "spec": {"url": opts.location_url, "default": true, "accessMode": "ReadWrite"}
    });
    if let Some(s) = &opts.credentials_secret {
        location["spec"]["credentialsSecret"] = json!(s);
    }
    if let Some(e) = &opts.s3_endpoint {
        location["spec"]["endpoint"] = json!(e);
    }
    if let Some(r) = &opts.region {
        location["spec"]["region"] = json!(r);
    }
    location
}

/// The webhook flags that describe the default BackupLocation, which it creates when missing.
/// The Helm chart renders the same flags in the same order.
fn default_location_args(opts: &InstallOptions) -> Vec<String> {
    let mut args = vec![format!("--default-location-url={}", opts.location_url)];
    if let Some(e) = &opts.s3_endpoint {
        args.push(format!("--default-location-endpoint={e}"));
    }
    if let Some(r) = &opts.region {
        args.push(format!("--default-location-region={r}"));
    }
    if let Some(s) = &opts.credentials_secret {
        args.push(format!("--default-location-credentials-secret={s}"));
    }
    args
}

fn rbac(ns: &str) -> Vec<Value> {
    let group = crate::GROUP;
    vec![
        // The controller backs up and restores arbitrary objects: it needs to read and write everything.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": CONTROLLER_ROLE, "labels": labels()},
               "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": CONTROLLER_ROLE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROLLER_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": ns}]}),
        // People who run backups of the whole cluster: everything of ours, read everything, restore anything.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": ADMIN_ROLE, "labels": labels()},
        "rules": [
            {"apiGroups": [group], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "create", "update", "patch"]}
        ]}),
        // Bound with a RoleBinding in a namespace: schedules, backups and restores of that namespace only.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": OPERATOR_ROLE, "labels": labels()},
        "rules": [
            {"apiGroups": [group], "resources": ["backupschedules", "backupschedules/status"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": [group], "resources": ["backuplocations"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "create", "update", "patch"]}
        ]}),
    ]
}

fn cert_manager(ns: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
               "metadata": {"name": "backup-webhook-selfsigned", "namespace": ns, "labels": labels()}, "spec": {"selfSigned": {}}}),
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
               "metadata": {"name": TLS_SECRET, "namespace": ns, "labels": labels()},
               "spec": {"secretName": TLS_SECRET, "issuerRef": {"name": "backup-webhook-selfsigned"},
                        "dnsNames": [format!("{APP}.{ns}.svc"), format!("{APP}.{ns}.svc.cluster.local")],
                        "duration": "2160h", "renewBefore": "360h"}}),
    ]
}

fn deployment(opts: &InstallOptions) -> Value {
    let ns = opts.namespace.as_str();
    let mut args = vec![
        "--listen=0.0.0.0:8443".to_string(),
        "--metrics-addr=0.0.0.0:9090".to_string(),
        "--tls-cert=/tls/tls.crt".to_string(),
        "--tls-key=/tls/tls.key".to_string(),
        "--location=default".to_string(),
        "--log-format=json".to_string(),
        format!("--continuous={}", opts.continuous),
    ];
    args.extend(default_location_args(opts));
    args.extend(opts.ephemeral_patterns.iter().map(|p| format!("--ephemeral-pattern={p}")));
    if let Some(s) = &opts.workspace_selector {
        args.push(format!("--workspace-selector={s}"));
    }
    args.extend(opts.workspace_resources.iter().map(|r| format!("--workspace-resource={r}")));
    let mut container = json!({
        "name": APP, "image": opts.image, "imagePullPolicy": "IfNotPresent", "args": args,
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [{"name": "https", "containerPort": 8443}, {"name": "metrics", "containerPort": 9090}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
                            "runAsUser": 65532, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true}, {"name": "tmp", "mountPath": "/tmp"}]
    });
    if let Some(s) = &opts.credentials_secret {
        container["envFrom"] = json!([{"secretRef": {"name": s, "optional": false}}]);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP, "namespace": ns, "labels": labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": APP}},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": APP,
                    "containers": [container],
                    "volumes": [{"name": "tls", "secret": {"secretName": TLS_SECRET}}, {"name": "tmp", "emptyDir": {}}]
                }
            }
        }
    })
}

fn webhook_configuration(opts: &InstallOptions, ca_pem: Option<&str>) -> Value {
    let ns = opts.namespace.as_str();
    let mut rules = vec![
        json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["namespaces"], "scope": "*"}),
    ];
    for r in &opts.workspace_resources {
        let (plural, group) = r.split_once('.').unwrap_or((r, ""));
        rules.push(json!({"apiGroups": [group], "apiVersions": ["*"], "operations": ["CREATE"], "resources": [plural], "scope": "*"}));
    }
    let mut client_config = json!({"service": {"name": APP, "namespace": ns, "path": "/mutate", "port": 443}});
    if let Some(ca) = ca_pem {
        client_config["caBundle"] = json!(b64(ca));
    }
    let mut meta = json!({"name": WEBHOOK_CONFIGURATION, "labels": labels()});
    if ca_pem.is_none() {
        meta["annotations"] = json!({"cert-manager.io/inject-ca-from": format!("{ns}/{TLS_SECRET}")});
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": meta,
        "webhooks": [{
            "name": "workspaces.kubectl-backup.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
            "clientConfig": client_config,
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [ns, "kube-system"]}
            ]},
            "rules": rules
        }]
    })
}

/// Renders manifests as a multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    objects.iter().map(|o| format!("---\n{}", serde_saphyr::to_string(o).unwrap_or_default())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> InstallOptions {
        InstallOptions {
            namespace: "kubectl-backup".into(),
            image: "example/backup-webhook:1".into(),
            location_url: "s3://b/p".into(),
            credentials_secret: Some("creds".into()),
            s3_endpoint: None,
            region: None,
            cert_manager: false,
            ephemeral_patterns: vec!["pr-*".into()],
            workspace_selector: None,
            workspace_resources: vec!["workspaces.example.org".into()],
            continuous: true,
        }
    }

    #[test]
    fn renders_every_object_with_the_webhook_settings_the_issue_requires() {
        let tls = generate_tls("kubectl-backup").unwrap();
        let objs = render(&opts(), Some(&tls));
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        for k in [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
            "Deployment",
            "Service",
            "MutatingWebhookConfiguration",
        ] {
            assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
        }
        let mwc = objs.iter().find(|o| o["kind"] == "MutatingWebhookConfiguration").unwrap();
        let w = &mwc["webhooks"][0];
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["timeoutSeconds"], 5);
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(w["namespaceSelector"]["matchExpressions"][0]["values"], json!(["kubectl-backup", "kube-system"]));
        assert_eq!(w["clientConfig"]["caBundle"], json!(b64(&tls.ca_pem)));
        let roles: Vec<&str> = objs
            .iter()
            .filter(|o| o["kind"] == "ClusterRole")
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(roles.contains(&ADMIN_ROLE) && roles.contains(&OPERATOR_ROLE));
        let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains("--ephemeral-pattern=pr-*"), "{args}");
        assert!(args.contains("--workspace-resource=workspaces.example.org"), "{args}");
        assert_eq!(
            w["rules"][1],
            json!({"apiGroups": ["example.org"], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["workspaces"], "scope": "*"})
        );
        assert_eq!(dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"], "creds");
    }

    #[test]
    fn the_default_location_is_in_the_webhook_flags_not_a_custom_resource() {
        let tls = generate_tls("kubectl-backup").unwrap();
        let o = InstallOptions { region: Some("eu-1".into()), s3_endpoint: Some("http://minio:9000".into()), ..opts() };
        let objs = render(&o, Some(&tls));
        // Every object's kind exists before anything is applied: only built-in kinds and CRDs.
        assert!(!objs.iter().any(|x| x["apiVersion"].as_str().is_some_and(|v| v.starts_with(crate::GROUP))));
        let dep = objs.iter().find(|x| x["kind"] == "Deployment").unwrap();
        let args: Vec<&str> = dep["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .filter(|a| a.starts_with("--default-location-") || a.starts_with("--location="))
            .collect();
        assert_eq!(
            args,
            [
                "--location=default",
                "--default-location-url=s3://b/p",
                "--default-location-endpoint=http://minio:9000",
                "--default-location-region=eu-1",
                "--default-location-credentials-secret=creds"
            ]
        );
        let bl = default_location(&o);
        assert_eq!(bl["metadata"]["name"], DEFAULT_LOCATION);
        assert_eq!(
            bl["spec"],
            json!({"url": "s3://b/p", "default": true, "accessMode": "ReadWrite", "credentialsSecret": "creds",
                   "endpoint": "http://minio:9000", "region": "eu-1"})
        );
    }

    #[test]
    fn cert_manager_replaces_the_generated_secret() {
        let objs = render(&InstallOptions { cert_manager: true, ..opts() }, None);
        assert!(objs.iter().any(|o| o["kind"] == "Certificate"));
        assert!(!objs.iter().any(|o| o["kind"] == "Secret"));
        let mwc = objs.iter().find(|o| o["kind"] == "MutatingWebhookConfiguration").unwrap();
        assert_eq!(
            mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "kubectl-backup/backup-webhook-tls"
        );
        assert!(mwc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    }

    #[test]
    fn yaml_is_a_multi_document_stream() {
        let tls = generate_tls("x").unwrap();
        let y = to_yaml(&render(&InstallOptions { namespace: "x".into(), ..opts() }, Some(&tls)));
        assert!(y.matches("---\n").count() >= 10);
        assert!(y.contains("kind: MutatingWebhookConfiguration"));
    }
}
