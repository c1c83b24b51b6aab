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
/// The Secret holding the key that signs the webhook's marks (the webhook creates it).
pub const SIGNING_KEY_SECRET: &str = "backup-webhook-signing-key";
/// The ConfigMap holding the restore worker's heartbeat (the webhook creates it).
pub const STATE_CONFIGMAP: &str = "backup-webhook-state";
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
    /// Public keys every backup of the default location is encrypted to.
    pub encrypt_to: Vec<String>,
    /// The Secret whose key `identity` opens them (for auto-restore).
    pub identity_secret: Option<String>,
    /// Annotations of the controller's ServiceAccount: cloud identities (IRSA's
    /// `eks.amazonaws.com/role-arn`, GKE's `iam.gke.io/gcp-service-account`, ...).
    pub sa_annotations: std::collections::BTreeMap<String, String>,
    /// The default location's path-style setting and PEM CA bundle.
    pub path_style: Option<bool>,
    pub ca_bundle: Option<String>,
    /// S3: the role the default location assumes through STS.
    pub assume_role: Option<crate::crd::AssumeRoleSpec>,
    /// The webhook's `--log-level` (None: its default).
    pub log_level: Option<String>,
    /// The webhook's `--volume-identity`: whom schedules' and continuous backups' mover Pods act as.
    pub volume_identity: Option<String>,
    /// The webhook's `--mover-bandwidth`: a quantity of bytes per second, as given.
    pub mover_bandwidth: Option<String>,
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
    let mut ns_labels = labels();
    ns_labels[ADMISSION_SKIP_LABEL] = json!(ADMISSION_SKIP_VALUE);
    let mut out = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": ns_labels}})];
    for c in crd::definitions() {
        let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
        v["metadata"]["labels"] = labels();
        out.push(v);
    }
    let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": APP, "namespace": ns, "labels": labels()}});
    if !opts.sa_annotations.is_empty() {
        sa["metadata"]["annotations"] = json!(opts.sa_annotations);
    }
    out.push(sa);
    out.extend(rbac(ns, &opts.workspace_resources));
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
                 // `protocol` is part of the list's key for server-side apply: without it the API
                 // server refuses the apply.
                 "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
                           {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]}
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
    if let Some(e) = crate::crd::LocationEncryption::of(&opts.encrypt_to, opts.identity_secret.as_deref()) {
        location["spec"]["encryption"] = json!(e);
    }
    if let Some(p) = opts.path_style {
        location["spec"]["pathStyle"] = json!(p);
    }
    if let Some(c) = &opts.ca_bundle {
        location["spec"]["caBundle"] = json!(c);
    }
    if let Some(r) = &opts.assume_role {
        location["spec"]["assumeRole"] = json!(r);
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
    if let Some(p) = opts.path_style {
        args.push(format!("--default-location-path-style={p}"));
    }
    if let Some(c) = &opts.ca_bundle {
        args.push(format!("--default-location-ca-bundle={c}"));
    }
    if !opts.encrypt_to.is_empty() {
        args.push(format!("--default-location-encrypt-to={}", opts.encrypt_to.join(",")));
    }
    if let Some(s) = &opts.identity_secret {
        args.push(format!("--default-location-identity-secret={s}"));
    }
    if let Some(r) = &opts.assume_role {
        args.push(format!("--default-location-role-arn={}", r.role_arn));
        if let Some(v) = &r.external_id {
            args.push(format!("--default-location-external-id={v}"));
        }
        if let Some(v) = &r.session_name {
            args.push(format!("--default-location-session-name={v}"));
        }
        if let Some(v) = r.duration_seconds {
            args.push(format!("--default-location-role-duration-seconds={v}"));
        }
        if let Some(v) = &r.sts_endpoint {
            args.push(format!("--default-location-sts-endpoint={v}"));
        }
    }
    args
}

/// The label that keeps a namespace's objects away from the webhook. On Kubernetes 1.21+ the
/// `kubernetes.io/metadata.name` label does the same; 1.20 has no such label, so `install` labels
/// its own namespace and `kube-system` with this one (as Gatekeeper does with its ignore label).
pub const ADMISSION_SKIP_LABEL: &str = "kubectl-backup.dev/admission";
pub const ADMISSION_SKIP_VALUE: &str = "skip";
/// Read access to our CRDs, aggregated into the built-in view, edit and admin roles.
pub const VIEW_ROLE: &str = "kubectl-backup-view";

/// What every backup needs: LIST and WATCH of every resource (the engine never GETs an arbitrary
/// object), and GET of the three kinds it reads by name (named namespaces, the CRDs of backed-up
/// custom resources, the PVs of backed-up claims). `get` on `*` is never granted: on Kubernetes it
/// would include `pods/exec`, `pods/attach` and `pods/portforward` over websockets.
fn read_for_backups() -> Vec<Value> {
    vec![
        json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["list", "watch"]}),
        json!({"apiGroups": [""], "resources": ["namespaces", "persistentvolumes"], "verbs": ["get"]}),
        json!({"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get"]}),
    ]
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": name, "labels": labels()}, "rules": rules})
}

/// The roles. Each rule of the controller's says what it is for; none of them lets it write an
/// arbitrary object with its own rights: restores run as the person who created the workspace.
pub fn rbac(ns: &str, workspace_resources: &[String]) -> Vec<Value> {
    let group = crate::GROUP;
    let mut controller = read_for_backups();
    controller.extend([
        // Its own resources: schedules, locations, Backup and Restore requests, and the status it
        // writes on them.
        json!({"apiGroups": [group], "resources": ["backupschedules", "backuplocations", "backups", "restores"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": [group], "resources": ["backupschedules/status", "backuplocations/status", "backups/status", "restores/status"], "verbs": ["get", "patch", "update"]}),
        // The restore-status annotation on workspaces (and the marks of catch-up).
        json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["patch"]}),
        // Restores act as the workspace's creator, whom the webhook recorded (never anyone else).
        json!({"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]}),
        // ... with the extra attributes their authenticator gave them (scopes, bound pod names).
        json!({"apiGroups": ["authentication.k8s.io"], "resources": ["*"], "verbs": ["impersonate"]}),
        // Events about backups and restores.
        json!({"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}),
        // Expiry deletes the CSI snapshots of expired backups: the content each backup kept
        // (labelled with it) set to deletionPolicy Delete and deleted; the CSI snapshotter does the rest.
        json!({"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshotcontents"], "verbs": ["get", "list", "patch", "delete"]}),
    ]);
    for r in workspace_resources {
        let (plural, g) = r.split_once('.').unwrap_or((r, ""));
        // Workspace custom resources: read by name, restore-status annotation written.
        controller.push(json!({"apiGroups": [g], "resources": [plural], "verbs": ["get", "patch"]}));
    }
    let mut admin = vec![json!({"apiGroups": [group], "resources": ["*"], "verbs": ["*"]})];
    admin.extend(read_for_backups());
    let mut operator = vec![
        json!({"apiGroups": [group], "resources": ["backupschedules", "backups", "restores"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}),
        json!({"apiGroups": [group], "resources": ["backupschedules/status", "backups/status", "restores/status", "backuplocations"], "verbs": ["get", "list", "watch"]}),
    ];
    operator.extend(read_for_backups());
    let rb = |kind: &str, name: &str, namespace: Option<&str>| {
        let mut meta = json!({"name": name, "labels": labels()});
        if let Some(n) = namespace {
            meta["namespace"] = json!(n);
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind.replace("Binding", ""), "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": ns}]})
    };
    let mut view = cluster_role(
        VIEW_ROLE,
        vec![
            json!({"apiGroups": [group], "resources": ["backupschedules", "backupschedules/status", "backuplocations", "backuplocations/status", "backups", "backups/status", "restores", "restores/status"], "verbs": ["get", "list", "watch"]}),
        ],
    );
    for r in ["view", "edit", "admin"] {
        view["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{r}")] = json!("true");
    }
    vec![
        cluster_role(CONTROLLER_ROLE, controller),
        rb("ClusterRoleBinding", CONTROLLER_ROLE, None),
        // In its own namespace only: the worker's heartbeat ConfigMap, the key that signs the
        // webhook's marks (created on first start), the credentials Secrets of BackupLocations, and
        // the default BackupLocation it creates from its flags when missing.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": CONTROLLER_ROLE, "namespace": ns, "labels": labels()},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "update"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
            {"apiGroups": [group], "resources": ["backuplocations"], "verbs": ["create"]}
        ]}),
        rb("RoleBinding", CONTROLLER_ROLE, Some(ns)),
        // People who back up the whole cluster and manage kubectl-backup: all of our resources and
        // read access to every object. A restore runs with the restorer's own rights, so writes
        // to other objects come from the roles people already have (e.g. cluster-admin).
        cluster_role(ADMIN_ROLE, admin),
        // Bound with a RoleBinding in a namespace: schedules and backups of that namespace (the
        // controller refuses schedules reaching further); restores with the namespace's own
        // `admin`/`edit` role.
        cluster_role(OPERATOR_ROLE, operator),
        view,
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
    ];
    if let Some(level) = &opts.log_level {
        args.push(format!("--log-level={level}"));
    }
    args.push(format!("--continuous={}", opts.continuous));
    // Mover Pods run the webhook's own image.
    args.push(format!("--mover-image={}", opts.image));
    if let Some(who) = &opts.volume_identity {
        args.push(format!("--volume-identity={who}"));
    }
    if let Some(rate) = &opts.mover_bandwidth {
        args.push(format!("--mover-bandwidth={rate}"));
    }
    args.extend(default_location_args(opts));
    args.extend(opts.ephemeral_patterns.iter().map(|p| format!("--ephemeral-pattern={p}")));
    if let Some(s) = &opts.workspace_selector {
        args.push(format!("--workspace-selector={s}"));
    }
    args.extend(opts.workspace_resources.iter().map(|r| format!("--workspace-resource={r}")));
    let mut container = json!({
        "name": APP, "image": opts.image, "imagePullPolicy": "IfNotPresent", "args": args,
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [{"name": "https", "containerPort": 8443, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security_context(),
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
            // Never two controllers at once: schedules, expiry and restores assume one runner.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": APP}},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": APP,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": "tls", "secret": {"secretName": TLS_SECRET}}, {"name": "tmp", "emptyDir": {}}]
                }
            }
        }
    })
}

/// The pod's securityContext (the chart's `podSecurityContext` default).
pub fn pod_security_context() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
           "seccompProfile": {"type": "RuntimeDefault"}})
}

/// The container's securityContext (the chart's `containerSecurityContext` default).
pub fn container_security_context() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
           "runAsUser": 65532, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
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
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [ns, "kube-system"]},
                {"key": ADMISSION_SKIP_LABEL, "operator": "NotIn", "values": [ADMISSION_SKIP_VALUE]}
            ]},
            "rules": rules
        }, {
            // Backup and Restore requests, in every namespace (the install namespace's too): the
            // controller runs only those the webhook marked with their creator, so when the
            // webhook does not answer they are refused rather than admitted unmarked.
            "name": "requests.kubectl-backup.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "clientConfig": client_config,
            "rules": [{"apiGroups": [crate::GROUP], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["backups", "restores"], "scope": "Namespaced"}]
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
            encrypt_to: Vec::new(),
            identity_secret: None,
            sa_annotations: Default::default(),
            path_style: None,
            ca_bundle: None,
            assume_role: None,
            log_level: None,
            volume_identity: None,
            mover_bandwidth: None,
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
