//! The real `backup-webhook` process, served over TLS on 127.0.0.1 and registered with a real API
//! server through a MutatingWebhookConfiguration (`clientConfig.url` + `caBundle`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use kubectl_backup_core::pki::{Ca, LeafFiles};

use crate::fixtures::bin_dir;
use crate::process::{Process, free_port, wait_for};

pub struct Webhook {
    pub port: u16,
    pub metrics_port: u16,
    pub tls: LeafFiles,
    pub ca_pem: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Option<Process>,
}

impl Webhook {
    /// Starts the webhook with a fresh CA and serving certificate for 127.0.0.1. `extra` flags are
    /// appended (e.g. `--ephemeral-pattern pr-*`).
    pub fn start(
        dir: &Path,
        kubeconfig: &Path,
        location: &str,
        store_env: &[(String, String)],
        extra: &[&str],
    ) -> Result<Webhook> {
        let mut flags = vec![format!("--location={location}")];
        flags.extend(extra.iter().map(|s| s.to_string()));
        Self::start_with(dir, kubeconfig, store_env, flags)
    }

    /// Starts the webhook with the flags of a rendered Deployment (`kubectl backup install` or the
    /// chart), as its Pod would run in `namespace` (no node runs the Pod here): only the listen,
    /// metrics and certificate flags are replaced by local ones.
    pub fn from_deployment(
        dir: &Path,
        kubeconfig: &Path,
        deployment: &serde_json::Value,
        namespace: &str,
        store_env: &[(String, String)],
    ) -> Result<Webhook> {
        let local = ["--listen=", "--metrics-addr=", "--tls-cert=", "--tls-key="];
        let mut flags: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("the Deployment has no container args"))?
            .iter()
            .filter_map(|a| a.as_str())
            .filter(|a| !local.iter().any(|p| a.starts_with(p)))
            .map(str::to_string)
            .collect();
        // POD_NAMESPACE, from the downward API in the Pod.
        flags.push(format!("--namespace={namespace}"));
        Self::start_with(dir, kubeconfig, store_env, flags)
    }

    fn start_with(
        dir: &Path,
        kubeconfig: &Path,
        store_env: &[(String, String)],
        flags: Vec<String>,
    ) -> Result<Webhook> {
        std::fs::create_dir_all(dir)?;
        let ca = Ca::new("webhook-ca")?;
        let tls = ca.write_leaf(&dir.join("tls"), "serving", "backup-webhook", &["127.0.0.1", "localhost"])?;
        let port = free_port();
        let metrics_port = free_port();
        let mut args: Vec<String> = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            format!("--tls-cert={}", tls.cert.display()),
            format!("--tls-key={}", tls.key.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--index-refresh=2s".into(),
        ];
        args.extend(flags);
        let mut env = store_env.to_vec();
        env.push(("RUST_LOG".into(), "info,backup_webhook=debug,kube=warn".into()));
        let mut w = Webhook {
            port,
            metrics_port,
            ca_pem: ca.cert_pem.clone(),
            tls,
            args,
            env,
            log: dir.join("backup-webhook.log"),
            process: None,
        };
        w.spawn()?;
        Ok(w)
    }

    fn spawn(&mut self) -> Result<()> {
        let env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let mut p = Process::spawn("backup-webhook", bin_dir().join("backup-webhook"), &self.args, &self.log, &env)?;
        let url = format!("https://127.0.0.1:{}/readyz", self.port);
        let ca = self.tls.ca.clone();
        wait_for("backup-webhook /readyz", &mut p, Duration::from_secs(60), || {
            std::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "2", "--cacert"])
                .arg(&ca)
                .arg(&url)
                .status()
                .is_ok_and(|s| s.success())
        })?;
        self.process = Some(p);
        Ok(())
    }

    /// Stops the process (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Starts it again with the same flags, port and certificate files.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A MutatingWebhookConfiguration for namespace CREATE, as `kubectl backup install` renders it.
    pub fn configuration(&self, name: &str) -> String {
        self.configuration_with(name, &[])
    }

    /// The same, also for CREATE of these workspace resources: `(group, version, plural)`.
    pub fn configuration_with(&self, name: &str, resources: &[(&str, &str, &str)]) -> String {
        let extra: String = resources
            .iter()
            .map(|(g, v, p)| {
                format!(
                    "  - apiGroups: [\"{g}\"]\n    apiVersions: [\"{v}\"]\n    operations: [\"CREATE\"]\n    resources: [\"{p}\"]\n    scope: \"*\"\n"
                )
            })
            .collect();
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, self.ca_pem.as_bytes());
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {name}
webhooks:
- name: workspaces.kubectl-backup.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 5
  clientConfig:
    url: https://127.0.0.1:{port}/mutate
    caBundle: {ca}
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["namespaces"]
    scope: "*"
{extra}"#,
            port = self.port
        )
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}
