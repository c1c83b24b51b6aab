//! One module per command group; each turns arguments into engine calls and prints the result.

pub mod backup;
pub mod catalog;
pub mod certs;
pub mod etcd;
pub mod install;
pub mod location;
pub mod requests;
pub mod restore;
pub mod schedule;
pub mod workspace;

use std::process::ExitCode;

use kubectl_backup_core::kube_client::Throttle;
use kubectl_backup_core::model::{self, Phase};

use crate::EXIT_PARTIAL;
use crate::args::Globals;

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Set in the environment of the background process `--wait=false` starts.
const DETACHED_ENV: &str = "KUBECTL_BACKUP_DETACHED";

/// True in the background process of `--wait=false`. It ignores SIGHUP so it outlives the
/// terminal that started it.
pub fn detached() -> bool {
    let detached = std::env::var_os(DETACHED_ENV).is_some();
    if detached && let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move { while hup.recv().await.is_some() {} });
    }
    detached
}

/// Runs this same command again in the background, logging to a file, and returns at once.
pub fn detach(what: &str, name: &str) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("finding this program to run it in the background")?;
    let log_dir = log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let log_path = log_dir.join(format!("{what}-{name}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the background {what}"))?;
    let follow = if what == "backup" {
        format!("kubectl backup describe {name}")
    } else {
        format!("tail -f {}", log_path.display())
    };
    println!(
        "{what} \"{name}\" started in the background (pid {}, log {}); follow it with: {follow}",
        child.id(),
        log_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `run`, a backup or a restore, so that a first Ctrl-C asks it to end cleanly
/// ([`kubectl_backup_core::interrupt`]: no further LIST or restore group begun, a mover Pod
/// deleted and its post hooks run, nothing committed and what a backup wrote removed), printing
/// `doing` ("stopping the backup: ..."), and a second quits at once.
pub async fn interruptible<T>(doing: &str, run: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => return r,
        _ = tokio::signal::ctrl_c() => {}
    }
    kubectl_backup_core::interrupt::request();
    eprintln!("interrupted: {doing}; press Ctrl-C again to quit at once");
    tokio::select! {
        r = &mut run => r,
        _ = tokio::signal::ctrl_c() => std::process::exit(130),
    }
}

fn log_dir() -> PathBuf {
    use etcetera::BaseStrategy;
    etcetera::choose_base_strategy()
        .ok()
        .and_then(|b| b.state_dir())
        .unwrap_or_else(std::env::temp_dir)
        .join("kubectl-backup/logs")
}

/// Asks `question` on a terminal. Without `--yes` and without a terminal, refuses (an error naming
/// `action`), so a script never deletes by accident. Returns whether to go ahead.
pub fn confirm(action: &str, question: &str, yes: bool) -> Result<bool> {
    use std::io::{IsTerminal, Write};
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to {action} without confirmation: standard input is not a terminal; pass --yes");
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let go = matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes");
    if !go {
        eprintln!("Nothing done.");
    }
    Ok(go)
}

/// The client-side limits of the global flags.
pub fn throttle(cli: &Globals) -> Throttle {
    Throttle::new(cli.kube.qps, cli.kube.burst, cli.kube.concurrency)
        .with_discovery_timeout(cli.kube.discovery_timeout)
        .with_namespace_lists(cli.kube.list_per_namespace)
        .with_list_encoding(cli.kube.list_encoding)
}

pub fn exit_for(phase: Phase) -> ExitCode {
    match phase {
        Phase::Completed => ExitCode::SUCCESS,
        Phase::PartiallyFailed => ExitCode::from(EXIT_PARTIAL),
        Phase::InProgress | Phase::Failed => ExitCode::FAILURE,
    }
}

/// The version document `version -o json|yaml` prints.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub client_version: ClientVersion,
    /// The in-cluster component, when a cluster could be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_cluster: Option<InCluster>,
}

/// What `version` finds of the in-cluster component (the Deployment `install` and the chart make).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InCluster {
    pub namespace: String,
    pub installed: bool,
    /// The image's tag (the chart's appVersion, or what `install --image` named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Ready replicas / desired replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Why it could not be read (no cluster, no permission).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The in-cluster component in `namespace`: its Deployment's image and readiness. Never fails:
/// what could not be read is said in `error`.
pub async fn in_cluster(g: &Globals) -> InCluster {
    use k8s_openapi::api::apps::v1::Deployment;
    let namespace = g.location.install_namespace.clone();
    let mut found = InCluster { namespace, installed: false, version: None, image: None, ready: None, error: None };
    let options = g.kube.options();
    let ns = found.namespace.clone();
    let deployment = async {
        let cluster = kubectl_backup_core::kube_client::Cluster::connect(&options, throttle(g))
            .await
            .map_err(|e| e.to_string())?;
        let api: kube::Api<Deployment> = kube::Api::namespaced(cluster.client.clone(), &ns);
        api.get_opt(kubectl_backup_core::install::APP).await.map_err(|e| kubectl_backup_core::error::kube_message(&e))
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), deployment).await;
    match answer {
        Err(_) => found.error = Some("the cluster did not answer within 10s".into()),
        Ok(Err(e)) => found.error = Some(e),
        Ok(Ok(None)) => {}
        Ok(Ok(Some(d))) => {
            found.installed = true;
            let image = d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone());
            found.version = image
                .as_deref()
                .and_then(|i| i.rsplit_once(':'))
                .map(|(_, tag)| tag.to_string())
                .filter(|t| !t.contains('/'));
            found.image = image;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            found.ready = Some(format!("{ready}/{want}"));
        }
    }
    found
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientVersion {
    pub version: &'static str,
    pub format_version: u32,
}

pub fn version_info(in_cluster: Option<InCluster>) -> VersionInfo {
    VersionInfo {
        client_version: ClientVersion { version: env!("CARGO_PKG_VERSION"), format_version: model::FORMAT_VERSION },
        in_cluster,
    }
}

/// `version`: this plugin's, and the in-cluster component's when a cluster is configured.
pub async fn version(g: &Globals, output: crate::args::Output) -> Result<ExitCode> {
    let found = in_cluster(g).await;
    match output {
        crate::args::Output::Table => {
            println!("kubectl-backup {}", env!("CARGO_PKG_VERSION"));
            let ns = &found.namespace;
            match (&found.error, found.installed) {
                (Some(e), _) => println!("backup-webhook: unknown ({e})"),
                (None, false) => println!("backup-webhook: not installed in namespace {ns}"),
                (None, true) => println!(
                    "backup-webhook {} in namespace {ns} (image {}, {} ready)",
                    found.version.as_deref().unwrap_or("(untagged)"),
                    found.image.as_deref().unwrap_or("-"),
                    found.ready.as_deref().unwrap_or("-")
                ),
            }
        }
        f => crate::output::print_document(&version_info(Some(found)), f)?,
    }
    Ok(ExitCode::SUCCESS)
}
