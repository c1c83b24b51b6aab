//! The command tree: `Cli` (the global flags and a subcommand) and where each subcommand goes.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::args::{Globals, OutputArg};
use kubectl_backup_core::catalog::Objects;

use crate::commands::{backup, catalog, certs, etcd, install, location, requests, restore, schedule, workspace};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-backup",
    bin_name = "kubectl backup",
    version,
    about = "Back up Kubernetes objects to object storage and restore them",
    long_about = "Back up a cluster's objects to S3, GCS, Azure Blob or a local directory, and restore them into the same or another cluster.\n\nRuns with your kubeconfig and RBAC; nothing needs to be installed in the cluster.",
    propagate_version = true,
    // The catalog commands are shared with `etcd`: their examples are set per parent.
    mut_subcommand("list", |c| c.after_help(backup::LIST_EXAMPLES)),
    mut_subcommand("describe", |c| c.after_help(backup::DESCRIBE_EXAMPLES)),
    mut_subcommand("delete", |c| c.after_help(backup::DELETE_EXAMPLES)),
    mut_subcommand("download", |c| c.after_help(backup::DOWNLOAD_EXAMPLES))
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

// Every command's `--help` ends with examples, kubectl's way: a `#` comment, then the command.
// A test parses each example, so they stay true as flags change.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up objects from the cluster to the location.
    #[command(after_help = backup::CREATE_EXAMPLES)]
    Create(backup::CreateArgs),
    #[command(flatten)]
    Catalog(catalog::CatalogCommand),
    /// Restore a backup into the cluster (the same one or another).
    #[command(after_help = restore::RESTORE_EXAMPLES)]
    Restore(restore::RestoreCommand),
    /// Print the log of a backup or a restore, stored next to it in the location.
    #[command(after_help = requests::LOGS_EXAMPLES)]
    Logs(requests::LogsArgs),
    /// Named storage locations (BackupLocations) the cluster knows.
    #[command(after_help = location::LOCATION_EXAMPLES)]
    Location(location::LocationArgs),
    /// Scheduled backups run by the in-cluster component.
    #[command(after_help = schedule::SCHEDULE_EXAMPLES)]
    Schedule(schedule::ScheduleArgs),
    /// Install the in-cluster component (webhook, controllers, CRDs, RBAC).
    #[command(after_help = install::INSTALL_EXAMPLES)]
    Install(install::InstallArgs),
    /// Remove the in-cluster component; backups in storage are kept.
    #[command(after_help = install::UNINSTALL_EXAMPLES)]
    Uninstall(install::UninstallArgs),
    /// Serving certificates for the webhook.
    #[command(after_help = certs::CERTS_EXAMPLES)]
    Certs(certs::CertsArgs),
    /// Workspaces (namespaces) as the auto-restore webhook sees them.
    #[command(alias = "ws", after_help = workspace::WORKSPACE_EXAMPLES)]
    Workspace(workspace::WorkspaceArgs),
    /// Back up and restore etcd itself: snapshots, keys, keys as JSON.
    #[command(after_help = etcd::ETCD_EXAMPLES)]
    Etcd(etcd::EtcdArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion(CompletionArgs),
    /// Print the version.
    #[command(after_help = VERSION_EXAMPLES)]
    Version(OutputArg),
}

const COMPLETION_EXAMPLES: &str = "\
Examples:
  # Install bash completion for the kubectl-backup command (bash-completion 2)
  kubectl backup completion bash > ~/.local/share/bash-completion/completions/kubectl-backup

  # Install zsh completion into a directory on your $fpath
  kubectl backup completion zsh > ~/.zfunc/_kubectl-backup

  # Install fish completion
  kubectl backup completion fish > ~/.config/fish/completions/kubectl-backup.fish";

const VERSION_EXAMPLES: &str = "\
Examples:
  # Print the plugin's version
  kubectl backup version

  # Print the version and the backup format version as JSON
  kubectl backup version -o json";

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

impl Cli {
    pub async fn run(self) -> Result<ExitCode> {
        let g = &self.globals;
        match &self.command {
            Command::Create(a) => backup::create(g, a).await,
            Command::Catalog(c) => catalog::run::<Objects>(g, c).await,
            Command::Restore(a) => match &a.history {
                Some(h) => requests::history(g, h).await,
                None => restore::restore(g, &a.run).await,
            },
            Command::Logs(a) => requests::logs(g, a).await,
            Command::Etcd(a) => etcd::run(g, a).await,
            Command::Workspace(a) => workspace::run(g, a).await,
            Command::Location(a) => location::run(g, a).await,
            Command::Certs(a) => certs::run(a),
            Command::Schedule(a) => schedule::run(g, a).await,
            Command::Install(a) => install::install(g, a).await,
            Command::Uninstall(a) => install::uninstall(g, a).await,
            Command::Completion(a) => {
                clap_complete::generate(a.shell, &mut Cli::command(), "kubectl-backup", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Version(o) => crate::commands::version(g, o.output).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    /// Every command and subcommand ends its help with examples, kubectl's way (a `# comment`
    /// line, then `kubectl backup ...`), and every example is true: this parser accepts it, and it
    /// runs the command whose help shows it (or one of that command's subcommands).
    #[test]
    fn every_command_has_examples_that_parse() {
        let mut problems = Vec::new();
        let checked = check_examples(&Cli::command(), &[], &mut problems);
        assert!(problems.is_empty(), "{} problem(s) with the examples:\n{}", problems.len(), problems.join("\n"));
        assert!(checked >= 60, "only {checked} examples found");
    }

    /// Checks the examples of `cmd`'s subcommands, recursively; returns how many were parsed.
    fn check_examples(cmd: &clap::Command, parents: &[&str], problems: &mut Vec<String>) -> usize {
        let mut checked = 0;
        // `help` is clap's own (and only there once the command is built).
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path: Vec<&str> = parents.iter().copied().chain([sub.get_name()]).collect();
            let command = format!("kubectl backup {}", path.join(" "));
            let texts: Vec<String> = [sub.get_after_help(), sub.get_after_long_help()]
                .into_iter()
                .flatten()
                .map(|t| t.to_string())
                .collect();
            if !texts.iter().any(|t| t.contains("Examples:")) {
                problems.push(format!("`{command} --help` has no Examples: section"));
            }
            for text in &texts {
                checked += check_section(&command, &path, text, problems);
            }
            checked += check_examples(sub, &path, problems);
        }
        checked
    }

    /// Checks one Examples: section of `command`'s help: 2 to 5 examples, each one or more
    /// `# comment` lines then one or more command lines, indented, separated by blank lines.
    fn check_section(command: &str, path: &[&str], text: &str, problems: &mut Vec<String>) -> usize {
        let Some((_, section)) = text.split_once("Examples:\n") else { return 0 };
        let examples: Vec<&str> = section.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
        if !(2..=5).contains(&examples.len()) {
            problems.push(format!("`{command} --help` has {} examples, not 2 to 5", examples.len()));
        }
        let mut checked = 0;
        for example in examples {
            let lines: Vec<&str> = example.lines().collect();
            let comments = lines.iter().take_while(|l| l.trim_start().starts_with('#')).count();
            let commands = &lines[comments..];
            if comments == 0 || commands.is_empty() || commands.iter().any(|l| l.trim_start().starts_with('#')) {
                problems.push(format!("{command}: not a `# comment` then commands: {example:?}"));
            }
            if let Some(line) = lines.iter().find(|l| !l.starts_with("  ") || l.starts_with("   ")) {
                problems.push(format!("{command}: not indented by two spaces: {line:?}"));
            }
            for line in commands {
                checked += 1;
                if let Err(e) = check_example(path, line.trim()) {
                    problems.push(format!("{command}: example {:?} {e}", line.trim()));
                }
            }
        }
        checked
    }

    /// Parses one example as the plugin would, and checks that it runs the command at `path` (or
    /// one of its subcommands).
    fn check_example(path: &[&str], example: &str) -> Result<(), String> {
        let words = shell_words(example)?;
        let Some(args) = words.strip_prefix(&["kubectl".to_string(), "backup".to_string()]) else {
            return Err("does not start with `kubectl backup`".into());
        };
        let argv = std::iter::once("kubectl-backup").chain(args.iter().map(String::as_str));
        let matches = Cli::command().try_get_matches_from(argv).map_err(|e| {
            let e = e.to_string();
            format!("does not parse: {}", e.lines().next().unwrap_or_default())
        })?;
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).map_err(|e| format!("does not parse: {e}"))?;
        let mut ran = Vec::new();
        let mut m = &matches;
        while let Some((name, sub)) = m.subcommand() {
            ran.push(name);
            m = sub;
        }
        if !ran.starts_with(path) {
            return Err(format!("runs `kubectl backup {}`, another command", ran.join(" ")));
        }
        Ok(())
    }

    /// The words of a command line as a POSIX shell splits them: blanks separate words, quotes
    /// and backslashes quote (nothing is expanded). It stops at an unquoted `|`, `;`, `&`, `<` or
    /// `>`: what follows (a pipe, a redirection) is not the plugin's to parse.
    fn shell_words(line: &str) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                ' ' | '\t' => words.extend(word.take()),
                '|' | ';' | '&' | '<' | '>' => break,
                '\\' => word.get_or_insert_default().push(chars.next().ok_or("a backslash at the end")?),
                '\'' => {
                    let w = word.get_or_insert_default();
                    loop {
                        match chars.next().ok_or("an unterminated single quote")? {
                            '\'' => break,
                            c => w.push(c),
                        }
                    }
                }
                '"' => {
                    let w = word.get_or_insert_default();
                    loop {
                        match chars.next().ok_or("an unterminated double quote")? {
                            '"' => break,
                            '\\' => match chars.next().ok_or("an unterminated double quote")? {
                                c @ ('"' | '\\' | '$' | '`') => w.push(c),
                                c => w.extend(['\\', c]),
                            },
                            c => w.push(c),
                        }
                    }
                }
                c => word.get_or_insert_default().push(c),
            }
        }
        words.extend(word);
        Ok(words)
    }

    #[test]
    fn example_lines_split_like_a_shell() {
        assert_eq!(
            shell_words(r#"kubectl backup create a --include-namespaces 'team-*' --encrypt-to "$(cat k.pub)" x\ y"#)
                .unwrap(),
            [
                "kubectl",
                "backup",
                "create",
                "a",
                "--include-namespaces",
                "team-*",
                "--encrypt-to",
                "$(cat k.pub)",
                "x y"
            ]
        );
        assert_eq!(
            shell_words("kubectl backup download b -f - | tar -x").unwrap(),
            ["kubectl", "backup", "download", "b", "-f", "-"]
        );
        assert_eq!(shell_words("kubectl backup completion zsh > ~/.zfunc/_kubectl-backup").unwrap().len(), 4);
        assert!(shell_words("kubectl backup create 'a").is_err());
    }

    #[test]
    fn filters_parse_like_kubectl() {
        let cli = Cli::parse_from([
            "kubectl-backup",
            "create",
            "b1",
            "--include-namespaces",
            "a,b",
            "--exclude-resources=secrets,events",
            "-l",
            "app=web",
            "--include-cluster-resources",
            "false",
            "--location",
            "s3://bucket/p",
            "--wait=false",
        ]);
        let Command::Create(c) = cli.command else { panic!("not create") };
        let f = c.filters.filters();
        assert_eq!(f.included_namespaces, vec!["a", "b"]);
        assert_eq!(f.excluded_resources, vec!["secrets", "events"]);
        assert_eq!(f.label_selector.as_deref(), Some("app=web"));
        assert_eq!(f.include_cluster_resources, kubectl_backup_core::model::ClusterResources::Never);
        assert!(!c.wait);
        assert_eq!(cli.globals.location.location.as_deref(), Some("s3://bucket/p"));
    }

    #[test]
    fn restore_mapping_parses_and_rejects_garbage() {
        let cli = Cli::parse_from([
            "kubectl-backup",
            "restore",
            "b",
            "--namespace-mapping",
            "a:b,c:d",
            "--existing",
            "update",
            "--dry-run",
        ]);
        let Command::Restore(restore::RestoreCommand { run: r, .. }) = cli.command else { panic!("not restore") };
        assert_eq!(r.mapping().unwrap().get("a").map(String::as_str), Some("b"));
        assert_eq!(r.existing, kubectl_backup_core::model::ExistingPolicy::Update);
        assert!(r.dry_run);
        let cli = Cli::parse_from(["kubectl-backup", "restore", "b", "--namespace-mapping", "nocolon"]);
        let Command::Restore(restore::RestoreCommand { run: r, .. }) = cli.command else { panic!("not restore") };
        assert!(r.mapping().unwrap_err().contains("SRC:DST"));
        assert!(Cli::try_parse_from(["kubectl-backup", "restore", "b", "--existing", "merge"]).is_err());
    }

    #[test]
    fn discovery_timeout_defaults_to_the_engine_default() {
        let cli = Cli::parse_from(["kubectl-backup", "list"]);
        assert_eq!(cli.globals.kube.discovery_timeout, kubectl_backup_core::kube_client::DISCOVERY_TIMEOUT);
        let cli = Cli::parse_from(["kubectl-backup", "create", "b", "--discovery-timeout", "1m30s"]);
        assert_eq!(cli.globals.kube.discovery_timeout, std::time::Duration::from_secs(90));
        let err = Cli::try_parse_from(["kubectl-backup", "list", "--discovery-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn namespace_flag_conflicts_with_include() {
        use kubectl_backup_core::model::ClusterResources;
        let r = Cli::try_parse_from(["kubectl-backup", "create", "b", "-n", "x", "--include-namespaces", "y"]);
        assert!(r.is_err());
        let r = Cli::try_parse_from(["kubectl-backup", "create", "b", "--include-cluster-resources", "maybe"]);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("Auto, Always or Never"), "{err}");
        for (given, want) in [
            ("always", ClusterResources::Always),
            ("Never", ClusterResources::Never),
            ("true", ClusterResources::Always),
        ] {
            let cli = Cli::parse_from(["kubectl-backup", "create", "b", "--include-cluster-resources", given]);
            let Command::Create(c) = cli.command else { panic!("not create") };
            assert_eq!(c.filters.filters().include_cluster_resources, want, "{given}");
        }
    }
}
