//! `kubectl backup <TAB>`: kubectl (1.26 and later) completes a plugin's arguments by running
//! `kubectl_complete-backup ARGS...` from PATH, which calls `kubectl-backup __complete ARGS...`.
//! The answer follows Cobra's protocol, which kubectl relays to the shell: one candidate per line,
//! then `:DIRECTIVE` (4: do not fall back to file names; 0: the shell's default).
//!
//! Subcommands and flags come from the clap command tree; backup names, etcd backup names and
//! schedule names are listed from the location and the cluster the words so far point at.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Command, CommandFactory, Parser};

use crate::cli::Cli;

/// Cobra's ShellCompDirectiveNoFileComp.
const NO_FILES: u8 = 4;
/// Cobra's ShellCompDirectiveDefault: the shell may complete file names.
const DEFAULT: u8 = 0;

/// Commands whose first positional argument is a backup's name (after the path's last word).
const BACKUP_NAME: &[&str] = &["describe", "get", "delete", "rm", "download", "restore", "logs"];
const SCHEDULE_NAME: &[&str] = &["describe", "pause", "resume", "delete"];

pub fn run(args: &[String]) -> ExitCode {
    let (words, partial) = match args.split_last() {
        Some((last, rest)) => (rest, last.as_str()),
        None => (&[][..], ""),
    };
    let (candidates, directive) = complete(words, partial);
    for c in candidates.iter().filter(|c| c.starts_with(partial)) {
        println!("{c}");
    }
    println!(":{directive}");
    ExitCode::SUCCESS
}

/// Where the words so far lead: the command, its path and how many positionals it was given.
struct Position {
    command: Command,
    path: Vec<String>,
    positionals: usize,
    /// The flag whose value is being completed.
    value_of: Option<clap::Arg>,
}

fn walk(words: &[String]) -> Position {
    let mut root = Cli::command();
    root.build();
    let mut p = Position { command: root, path: Vec::new(), positionals: 0, value_of: None };
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        p.value_of = None;
        if let Some(flag) = w.strip_prefix("--").or_else(|| w.strip_prefix('-')) {
            if !flag.contains('=')
                && let Some(arg) = find_flag(&p.command, flag)
                && arg.get_action().takes_values()
            {
                if i + 1 == words.len() {
                    p.value_of = Some(arg.clone());
                }
                i += 1;
            }
        } else if let Some(sub) = p.command.find_subcommand(w).cloned() {
            p.path.push(sub.get_name().to_string());
            p.command = sub;
            p.positionals = 0;
        } else {
            p.positionals += 1;
        }
        i += 1;
    }
    p
}

fn find_flag<'a>(command: &'a Command, flag: &str) -> Option<&'a clap::Arg> {
    command.get_arguments().find(|a| {
        a.get_long() == Some(flag)
            || a.get_all_aliases().is_some_and(|al| al.contains(&flag))
            || (flag.len() == 1 && a.get_short() == flag.chars().next())
    })
}

fn complete(words: &[String], partial: &str) -> (Vec<String>, u8) {
    let p = walk(words);
    if let Some(arg) = &p.value_of {
        let values: Vec<String> =
            arg.get_possible_values().iter().filter(|v| !v.is_hide_set()).map(|v| v.get_name().to_string()).collect();
        return if values.is_empty() { (Vec::new(), DEFAULT) } else { (values, NO_FILES) };
    }
    if partial.starts_with('-') {
        let flags = p
            .command
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        return (flags, NO_FILES);
    }
    let subcommands: Vec<String> = p
        .command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    // `restore` takes a backup's name or one of its subcommands (list, describe).
    let takes_both = p.path.len() == 1 && p.path[0] == "restore" && p.positionals == 0;
    if !subcommands.is_empty() && !takes_both {
        return (subcommands, NO_FILES);
    }
    if takes_both {
        let mut all = subcommands;
        all.extend(names(words, Names::Backups));
        return (all, NO_FILES);
    }
    if p.positionals == 0 {
        let last = p.path.last().map(String::as_str).unwrap_or_default();
        let in_schedule = p.path.first().is_some_and(|f| f == "schedule");
        let in_etcd = p.path.first().is_some_and(|f| f == "etcd");
        // `restore describe` takes a restore's name, not a backup's.
        let in_restore = p.path.first().is_some_and(|f| f == "restore") && p.path.len() > 1;
        if in_schedule && SCHEDULE_NAME.contains(&last) {
            return (names(words, Names::Schedules), NO_FILES);
        }
        if !in_schedule && !in_restore && BACKUP_NAME.contains(&last) {
            return (names(words, if in_etcd { Names::Etcd } else { Names::Backups }), NO_FILES);
        }
    }
    (Vec::new(), NO_FILES)
}

enum Names {
    Backups,
    Etcd,
    Schedules,
}

/// Names from the location and cluster that the words' connection and location flags name (a
/// few seconds at most; nothing when they cannot be reached).
fn names(words: &[String], what: Names) -> Vec<String> {
    // The global flags among the words, given to `list` to parse them as the command would.
    let mut argv = vec!["kubectl-backup".to_string(), "list".to_string()];
    let mut root = Cli::command();
    root.build();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let flag = w.trim_start_matches('-');
        let name = flag.split('=').next().unwrap_or_default();
        if w.starts_with('-')
            && let Some(arg) = find_flag(&root, name)
            && arg.is_global_set()
        {
            argv.push(w.clone());
            if !flag.contains('=') && arg.get_action().takes_values() && i + 1 < words.len() {
                argv.push(words[i + 1].clone());
                i += 1;
            }
        }
        // A schedule's namespace.
        if matches!(what, Names::Schedules) && (w == "-n" || w == "--namespace") && i + 1 < words.len() {
            argv.push("--install-namespace".into());
            argv.push(words[i + 1].clone());
            i += 1;
        }
        i += 1;
    }
    let Ok(cli) = Cli::try_parse_from(&argv) else { return Vec::new() };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return Vec::new() };
    let mut names = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), list_names(&cli.globals, what)).await.unwrap_or_default()
    });
    names.sort();
    names
}

async fn list_names(g: &crate::args::Globals, what: Names) -> Vec<String> {
    use kubectl_backup_core::catalog::Objects;
    use kubectl_backup_core::committed;
    use kubectl_backup_core::etcd::catalog::Etcd;
    let store = || async { crate::open_location::open(g, None).await.ok().map(|r| r.store) };
    match what {
        Names::Backups => match store().await {
            Some(s) => committed::list::<Objects>(&s)
                .await
                .map(|l| l.backups.iter().map(|b| b.metadata.name.clone()).collect()),
            None => return Vec::new(),
        }
        .unwrap_or_default(),
        Names::Etcd => match store().await {
            Some(s) => {
                committed::list::<Etcd>(&s).await.map(|l| l.backups.iter().map(|b| b.metadata.name.clone()).collect())
            }
            None => return Vec::new(),
        }
        .unwrap_or_default(),
        Names::Schedules => {
            let Ok(cluster) =
                kubectl_backup_core::kube_client::Cluster::connect(&g.kube.options(), crate::commands::throttle(g))
                    .await
            else {
                return Vec::new();
            };
            let api: kube::Api<kubectl_backup_core::crd::BackupSchedule> =
                kube::Api::namespaced(cluster.client.clone(), &g.location.install_namespace);
            api.list_metadata(&Default::default())
                .await
                .map(|l| l.items.into_iter().filter_map(|s| s.metadata.name).collect())
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_values_of_the_lists_are_completed() {
        for words in [&["list", "-o"][..], &["schedule", "list", "--output"], &["location", "list", "-o"]] {
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            let (values, directive) = complete(&words, "");
            assert_eq!(
                values,
                ["table", "wide", "name", "json", "yaml", "jsonpath=", "jsonpath-as-json="],
                "{words:?}"
            );
            assert_eq!(directive, NO_FILES);
        }
    }
}
