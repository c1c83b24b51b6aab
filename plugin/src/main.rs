//! `kubectl backup`: back up Kubernetes objects to object storage and restore them.

mod args;
mod cli;
mod commands;
mod complete;
mod jsonpath;
mod open_location;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

/// Exit code when a backup or restore finished but some objects failed (PartiallyFailed).
pub const EXIT_PARTIAL: u8 = 3;

fn main() -> ExitCode {
    kubectl_backup_core::kube_client::install_crypto_provider();
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a == "__complete") {
        return complete::run(&argv[2..]);
    }
    let cli = Cli::parse();
    init_tracing(cli.globals.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            // Stopped at the user's Ctrl-C: the shell's code for SIGINT.
            let interrupted = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<kubectl_backup_core::Error>(),
                    Some(kubectl_backup_core::Error::Interrupted(_))
                )
            });
            if interrupted { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}

/// The error and its causes on one line, without repeating a cause already in the message.
fn chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,kube=warn",
        2 => "debug,hyper=info,h2=info,rustls=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBECTL_BACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a log kept in a file or read by a script has no escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
