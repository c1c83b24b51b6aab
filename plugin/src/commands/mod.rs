//! One module per command group; each turns arguments into engine calls and prints the result.

mod backup;
pub mod certs;
pub mod etcd;
pub mod install;
pub mod location;
mod restore;
pub mod schedule;
pub mod workspace;

use std::process::ExitCode;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, Command, Output};
use crate::output::print_document;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Create(a) => backup::create(&cli, a).await,
        Command::List(a) => backup::list(&cli, a).await,
        Command::Describe(a) => backup::describe(&cli, a).await,
        Command::Delete(a) => backup::delete(&cli, a).await,
        Command::Download(a) => backup::download(&cli, a).await,
        Command::Restore(a) => restore::restore(&cli, a).await,
        Command::Etcd(a) => etcd::run(&cli, a).await,
        Command::Workspace(a) => workspace::run(&cli, a).await,
        Command::Location(a) => location::run(&cli, a).await,
        Command::Certs(a) => certs::run(a),
        Command::Schedule(a) => schedule::run(&cli, a).await,
        Command::Install(a) => install::install(&cli, a).await,
        Command::Uninstall(a) => install::uninstall(&cli, a).await,
        Command::Completion(a) => {
            clap_complete::generate(a.shell, &mut Cli::command(), "kubectl-backup", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Version(o) => {
            match o.output {
                Output::Table => println!("kubectl-backup {}", env!("CARGO_PKG_VERSION")),
                f => print_document(&backup::version_info(), f)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

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
