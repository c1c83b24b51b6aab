//! `kubectl backup etcd ...`: snapshots of etcd to a location, and back.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::args::Cli;

#[derive(Debug, Args)]
pub struct EtcdArgs {
    #[command(subcommand)]
    pub command: EtcdCommand,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// List etcd backups in the location.
    List,
}

pub async fn run(_cli: &Cli, _args: &EtcdArgs) -> Result<ExitCode> {
    bail!("etcd backups are being written")
}
