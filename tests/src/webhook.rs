//! The real `backup-webhook` process, served over TLS on 127.0.0.1 and registered with a real API
//! server through a MutatingWebhookConfiguration (`clientConfig.url` + `caBundle`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use kubectl_backup_core::pki::{Ca, LeafFiles};

use crate::fixtures::bin_dir;
use crate::process::{Process, free_port, retry_on_port_clash, wait_for};

/// The ServiceAccount `kubectl backup install` and the chart create for the webhook.
pub const SERVICE_ACCOUNT: &str = "backup-webhook";
/// The MutatingWebhookConfiguration they create.
pub const CONFIGURATION: &str = "kubectl-backup";

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

    /// A port another process took between `free_port` and the webhook's bind (tests run in
    /// parallel) means another try on new ports.
    fn start_with(
        dir: &Path,
        kubeconfig: &Path,
        store_env: &[(String, String)],
        flags: Vec<String>,
    ) -> Result<Webhook> {
        retry_on_port_clash(&dir.join("backup-webhook.log"), || {
            Self::start_once(dir, kubeconfig, store_env, flags.clone())
        })
    }

    fn start_once(
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
        ];
        if !flags.iter().any(|a| a.starts_with("--index-refresh")) {
            args.push("--index-refresh=2s".into());
        }
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

    /// Starts it again after [`Webhook::stop`], as [`Webhook::restart`] does.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Points the installed MutatingWebhookConfiguration (rules, namespaceSelector, timeout and
    /// failurePolicy as installed) at this process: `clientConfig.url` and this CA instead of the
    /// in-cluster Service, which has no Pod behind it here.
    pub fn point_installed_configuration_here(&self, t: &crate::fixtures::Tools) {
        self.register(t, &self.ca_pem);
    }

    /// The same, trusting `ca_pem` (e.g. after a rotation).
    pub fn register(&self, t: &crate::fixtures::Tools, ca_pem: &str) {
        let mut mwc = t.get_json(&["mutatingwebhookconfiguration", CONFIGURATION]);
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca_pem.as_bytes());
        for w in mwc["webhooks"].as_array_mut().expect("installed webhooks") {
            w["clientConfig"] =
                serde_json::json!({"url": format!("https://127.0.0.1:{}/mutate", self.port), "caBundle": ca});
        }
        t.pipe(&["replace", "-f", "-"], &mwc.to_string()).ok();
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}
