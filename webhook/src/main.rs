//! `backup-webhook`: install the crypto provider, parse flags, run. `backup-webhook mover ...` is
//! what a mover Pod runs instead.

use clap::Parser;

use backup_webhook::args::{Args, LogFormat, MoverArgs};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kubectl_backup_core::kube_client::install_crypto_provider();
    if std::env::args_os().nth(1).is_some_and(|a| a == "mover") {
        let args = MoverArgs::parse_from(std::env::args_os().skip(1));
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("info").with_ansi(false).init();
        // Progress, one JSON line at a time on stdout: the client reads the Pod's last log line.
        let report: kubectl_backup_core::volume::mover::Report = std::sync::Arc::new(|moved| {
            if let Ok(line) = serde_json::to_string(&moved) {
                println!("{line}");
            }
        });
        if let Err(e) = kubectl_backup_core::volume::mover::run(
            &args.plan,
            &args.dir,
            &args.termination_log,
            report,
            args.bytes_per_second,
        )
        .await
        {
            // The Pod's termination message: the error itself, not the tail of the progress lines.
            let _ = std::fs::write(&args.termination_log, format!("{e}"));
            return Err(e.into());
        }
        return Ok(());
    }
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
        // Colours only on a terminal: a Pod's log is a file.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
    backup_webhook::run(args).await
}
