//! `certs generate`: serving certificates for the webhook (local runs, or your own Secret).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kubectl_backup_core::install::serving_names;
use kubectl_backup_core::pki::Ca;

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// `kubectl backup certs --help`.
pub(crate) const CERTS_EXAMPLES: &str = "\
Examples:
  # Write ca.crt, tls.crt and tls.key for a webhook run as a local process
  kubectl backup certs generate --dir ./certs --host 127.0.0.1

  # Write them for a webhook installed in namespace backup-system
  kubectl backup certs generate --dir ./certs --namespace backup-system";

const GENERATE_EXAMPLES: &str = "\
Examples:
  # Write ca.crt, tls.crt and tls.key for a webhook run as a local process
  kubectl backup certs generate --dir ./certs --host 127.0.0.1

  # Write them for a webhook installed in namespace backup-system
  kubectl backup certs generate --dir ./certs --namespace backup-system

  # Add the names the webhook is reached by from outside the cluster
  kubectl backup certs generate --dir ./certs --host webhook.example.com,10.0.0.5";

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a new CA and a serving certificate signed by it: ca.crt, tls.crt, tls.key.
    #[command(after_help = GENERATE_EXAMPLES)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write the files to (created if needed; existing files are replaced).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Namespace of the webhook Service (its DNS names go in the certificate).
    #[arg(long, default_value = "kubectl-backup", value_name = "NS")]
    pub namespace: String,
    /// Extra DNS names or IP addresses, e.g. 127.0.0.1 for a webhook run as a local process.
    #[arg(long = "host", value_delimiter = ',', value_name = "NAME|IP")]
    pub hosts: Vec<String>,
}

pub fn run(args: &CertsArgs) -> Result<ExitCode> {
    let CertsCommand::Generate(g) = &args.command;
    let ca = Ca::new("kubectl-backup-webhook-ca")?;
    let mut names = serving_names(&g.namespace);
    let svc = names[2].clone();
    names.extend(g.hosts.iter().cloned());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    std::fs::create_dir_all(&g.dir).with_context(|| format!("creating {}", g.dir.display()))?;
    let files = ca.write_leaf(&g.dir, "tls", &svc, &refs)?;
    let bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.cert_pem.as_bytes());
    println!("wrote {}, {} and {}", files.ca.display(), files.cert.display(), files.key.display());
    println!("certificate names: {}", names.join(", "));
    println!("caBundle for the MutatingWebhookConfiguration:\n{bundle}");
    Ok(ExitCode::SUCCESS)
}
