//! One module per command group; each turns arguments into engine calls and prints the result.

mod backup;

use std::process::ExitCode;

use anyhow::Result;
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
