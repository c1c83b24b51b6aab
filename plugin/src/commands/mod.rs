//! One module per command group; each turns arguments into engine calls and prints the result.

pub mod backup;
pub mod catalog;
pub mod certs;
pub mod etcd;
pub mod install;
pub mod location;
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
    Throttle::new(cli.kube.qps, cli.kube.burst, cli.kube.concurrency).with_discovery_timeout(cli.kube.discovery_timeout)
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
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientVersion {
    pub version: &'static str,
    pub format_version: u32,
}

pub fn version_info() -> VersionInfo {
    VersionInfo {
        client_version: ClientVersion { version: env!("CARGO_PKG_VERSION"), format_version: model::FORMAT_VERSION },
    }
}
