//! The argument groups commands share: the global connection and location flags ([`Globals`],
//! before or after the subcommand, like kubectl's), output formats and backup filters. Each
//! command's own arguments live with the command; the command tree is in `cli.rs`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kubectl_backup_core::collect::{ListEncoding, NamespaceLists};
use kubectl_backup_core::kube_client::KubeOptions;
use kubectl_backup_core::model::{ClusterResources, Filters};
use kubectl_backup_core::store::StoreOptions;

/// The flags every command takes (global, so they may come before or after the subcommand).
#[derive(Debug, Args, Clone)]
pub struct Globals {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub location: StoreArgs,
    /// Log verbosity: -v info, -vv debug, -vvv trace (logs go to stderr).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// kubectl's connection flags.
#[derive(Debug, Args, Clone, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, env = "KUBECTL_BACKUP_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// Client-side limit of API requests per second. The server's own priority and fairness
    /// (429 answers, which are retried with backoff) and --concurrency are the main guards; lower
    /// this to be gentler on a busy control plane.
    #[arg(long, global = true, default_value_t = 1000, value_name = "N")]
    pub qps: u32,
    /// Requests allowed in a burst above --qps.
    #[arg(long, global = true, default_value_t = 2000, value_name = "N")]
    pub burst: u32,
    /// API requests in flight at once.
    #[arg(long, global = true, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
    /// How long discovering one API group may take, retries included. A group that does not answer
    /// in time (an aggregated API whose server is down) is reported by name and left out; the rest
    /// of the backup or restore goes on.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_timeout, value_name = "DURATION")]
    pub discovery_timeout: std::time::Duration,
    /// How a large namespaced resource is listed across namespaces: auto lists the rest of it one
    /// namespace at a time after its first page when that costs etcd less than paging through it
    /// (each page of a cluster-wide LIST counts the rest of the resource); always does so whenever
    /// there is more than one page; never pages through one cluster-wide LIST.
    #[arg(long, global = true, default_value = "auto", value_name = "auto|always|never")]
    pub list_per_namespace: NamespaceLists,
    /// How LIST pages are asked for: auto reads ConfigMaps and Secrets in protobuf, which costs the
    /// API server less than JSON, and stores the JSON the server would have sent, byte for byte
    /// (a page that cannot be rebuilt exactly is read again in JSON); json reads everything in JSON.
    #[arg(long, global = true, default_value = "auto", value_name = "auto|json")]
    pub list_encoding: ListEncoding,
    /// The address and port of the Kubernetes API server (no kubeconfig is needed with it).
    #[arg(short = 's', long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for authentication to the API server, instead of the kubeconfig user's credentials.
    #[arg(long, global = true, value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Username to impersonate for the operation (a user or a service account).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate (repeatable, with --as).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_groups: Vec<String>,
    /// UID to impersonate (with --as).
    #[arg(long = "as-uid", global = true, value_name = "UID")]
    pub as_uid: Option<String>,
    /// Path to a PEM file of the CA the API server's certificate chains to.
    #[arg(long, global = true, value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// Do not check the API server's certificate (insecure: anyone on the path can read the
    /// Secrets a backup transfers).
    #[arg(long, global = true, conflicts_with = "certificate_authority")]
    pub insecure_skip_tls_verify: bool,
    /// How long one API request may wait for an answer, e.g. 30s or 1m ("0": no limit). Default 2m.
    #[arg(long, global = true, value_parser = parse_request_timeout, value_name = "DURATION")]
    pub request_timeout: Option<std::time::Duration>,
}

/// `--request-timeout`: a duration, or kubectl's bare number of seconds ("0" for none).
fn parse_request_timeout(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(std::time::Duration::from_secs(seconds)),
        Err(_) => parse_timeout(text),
    }
}

/// A duration flag like `5s` or `1m30s`.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    kubectl_backup_core::input::parse_duration("duration", text)
        .map_err(|e| e.to_string())
        .and_then(|d| std::time::Duration::try_from(d).map_err(|e| e.to_string()))
}

impl KubeArgs {
    pub fn options(&self) -> KubeOptions {
        KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
            overrides: kubectl_backup_core::kube_client::Overrides {
                server: self.server.clone(),
                token: self.token.clone(),
                as_user: self.as_user.clone(),
                as_groups: self.as_groups.clone(),
                as_uid: self.as_uid.clone(),
                certificate_authority: self.certificate_authority.clone(),
                insecure_skip_tls_verify: self.insecure_skip_tls_verify,
                request_timeout: self.request_timeout,
            },
        }
    }
}

/// Where backups are stored.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Storage location: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix,
    /// file:///path, or the name of a BackupLocation (default: $KUBECTL_BACKUP_LOCATION, else the
    /// cluster's default BackupLocation, else ~/.local/share/kubectl-backup).
    #[arg(long, global = true, value_name = "URL")]
    pub location: Option<String>,
    /// S3-compatible endpoint (MinIO, Ceph, ...), e.g. http://minio:9000. Implies path-style requests.
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket.
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// PEM file with the CA that signed the object store's certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Namespace of the in-cluster component and its BackupLocations.
    #[arg(long, global = true, env = "KUBECTL_BACKUP_NAMESPACE", default_value = "kubectl-backup", value_name = "NS")]
    pub install_namespace: String,
    /// Path-style S3 requests (default: true when --s3-endpoint or AWS_ENDPOINT_URL is set).
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub path_style: Option<bool>,
    /// A private key that opens encrypted backups: an age identity file (AGE-SECRET-KEY-1...) or
    /// an SSH private key. Repeatable, or comma-separated.
    #[arg(
        long = "identity",
        global = true,
        env = "KUBECTL_BACKUP_IDENTITY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub identities: Vec<PathBuf>,
    /// A file whose first line is the passphrase of backups encrypted with one.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub role: RoleArgs,
}

/// S3: an IAM role assumed through STS (docs/storage.md).
#[derive(Debug, Args, Clone, Default)]
pub struct RoleArgs {
    /// S3: assume this IAM role through STS before talking to the bucket, on top of the base
    /// credentials (keys, AWS_PROFILE, web identity, instance role...).
    #[arg(long, global = true, value_name = "ARN")]
    pub role_arn: Option<String>,
    /// The External ID the role's trust policy requires (with --role-arn).
    #[arg(long, global = true, value_name = "ID", requires = "role_arn")]
    pub external_id: Option<String>,
    /// The role session name, shown in CloudTrail (with --role-arn). Default: kubectl-backup-<time>.
    #[arg(long, global = true, value_name = "NAME", requires = "role_arn")]
    pub session_name: Option<String>,
    /// Lifetime of the role's temporary credentials in seconds (with --role-arn); they are renewed
    /// when three quarters of it has passed. Default 3600.
    #[arg(long, global = true, value_name = "SECONDS", requires = "role_arn")]
    pub role_duration_seconds: Option<u32>,
    /// The STS endpoint (with --role-arn), e.g. an S3-compatible store's own STS. Default: the
    /// region's AWS STS, or AWS_ENDPOINT_URL_STS.
    #[arg(long, global = true, value_name = "URL", requires = "role_arn")]
    pub sts_endpoint: Option<String>,
}

impl RoleArgs {
    pub fn spec(&self) -> Option<kubectl_backup_core::crd::AssumeRoleSpec> {
        kubectl_backup_core::crd::AssumeRoleSpec::of(
            self.role_arn.as_deref(),
            self.external_id.as_deref(),
            self.session_name.as_deref(),
            self.role_duration_seconds,
            self.sts_endpoint.as_deref(),
        )
    }
}

/// Encryption of what a command writes (`create`, `etcd snapshot`).
#[derive(Debug, Args, Clone, Default)]
pub struct EncryptArgs {
    /// Encrypt the backup to these recipients (age1... public keys, or SSH ed25519/RSA public
    /// keys); only their private keys can read it. Repeatable, or comma-separated. Default: the
    /// BackupLocation's recipients, if it names any.
    #[arg(long, value_delimiter = ',', value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Encrypt the backup with the passphrase in FILE's first line (scrypt) instead.
    #[arg(long, value_name = "FILE", conflicts_with = "encrypt_to")]
    pub encrypt_passphrase_file: Option<PathBuf>,
}

impl EncryptArgs {
    /// The seal these flags ask for, if any (`None`: the location's default).
    pub fn seal(&self) -> kubectl_backup_core::Result<Option<kubectl_backup_core::crypto::Seal>> {
        use kubectl_backup_core::crypto::Seal;
        if let Some(f) = &self.encrypt_passphrase_file {
            return Seal::passphrase_file(f).map(Some);
        }
        if self.encrypt_to.is_empty() {
            return Ok(None);
        }
        Seal::recipients(&self.encrypt_to).map(Some)
    }
}

impl StoreArgs {
    /// What opens encrypted backups: `--identity` files and `--passphrase-file`.
    pub fn unseal(&self) -> kubectl_backup_core::Result<kubectl_backup_core::crypto::Unseal> {
        let mut u = kubectl_backup_core::crypto::Unseal::identity_files(&self.identities)?;
        if let Some(f) = &self.passphrase_file {
            u.add_passphrase_file(f)?;
        }
        Ok(u)
    }

    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
            ca_cert: self.ca_cert.clone(),
            path_style: self.path_style,
            assume_role: self.role.spec().map(|r| r.to_options()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// A readable table or summary.
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args, Clone, Default)]
pub struct OutputArg {
    /// Output format: json or yaml print the document; the default is a table or summary.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `-o` and `--no-headers` of the list commands, like `kubectl get`'s.
#[derive(Debug, Args, Clone, Default)]
pub struct ListOutputArg {
    /// Output format: a table (default); wide (the table with more columns); name (KIND/NAME
    /// lines, for scripts); json or yaml (the list document); jsonpath=TEMPLATE (kubectl's
    /// JSONPath template over the json document, e.g. '{.items[*].metadata.name}' or
    /// '{range .items[*]}{.metadata.name}{"\n"}{end}'); jsonpath-as-json=TEMPLATE (its results
    /// as a JSON array).
    #[arg(short = 'o', long = "output", value_parser = ListOutputParser, default_value = "table", value_name = "FORMAT")]
    pub output: ListOutput,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum ListOutput {
    /// A readable table.
    #[default]
    Table,
    /// The table with its wide columns too.
    Wide,
    /// One KIND/NAME per line.
    Name,
    Json,
    Yaml,
    /// `jsonpath=TEMPLATE`.
    JsonPath(crate::jsonpath::Template),
    /// `jsonpath-as-json=TEMPLATE`.
    JsonPathAsJson(crate::jsonpath::Template),
}

/// Parses `-o` of the lists: a format name, or `jsonpath=TEMPLATE` (the template is checked here,
/// so a bad one is a usage error, exit code 2, like any bad flag value).
#[derive(Clone)]
struct ListOutputParser;

impl clap::builder::TypedValueParser for ListOutputParser {
    type Value = ListOutput;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ListOutput, clap::Error> {
        let invalid = |why: String| {
            let flag = arg.map(|a| a.to_string()).unwrap_or_else(|| "--output".into());
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("invalid value for '{flag}': {why}\n"))
                .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid("not UTF-8".into()))?;
        let template = |t: &str| crate::jsonpath::Template::parse(t).map_err(invalid);
        Ok(match text {
            "table" => ListOutput::Table,
            "wide" => ListOutput::Wide,
            "name" => ListOutput::Name,
            "json" => ListOutput::Json,
            "yaml" => ListOutput::Yaml,
            _ if text.starts_with("jsonpath-as-json=") => ListOutput::JsonPathAsJson(template(&text[17..])?),
            _ if text.starts_with("jsonpath=") => ListOutput::JsonPath(template(&text[9..])?),
            "jsonpath" | "jsonpath-as-json" => {
                return Err(invalid(format!("{text} needs a template, e.g. -o {text}='{{.items[*].metadata.name}}'")));
            }
            other => {
                return Err(invalid(format!(
                    "{other:?} is not a format: table, wide, name, json, yaml, jsonpath=TEMPLATE or jsonpath-as-json=TEMPLATE"
                )));
            }
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let names = ["table", "wide", "name", "json", "yaml", "jsonpath=", "jsonpath-as-json="];
        Some(Box::new(names.into_iter().map(clap::builder::PossibleValue::new)))
    }
}

/// One column of a list: its header, whether only `-o wide` shows it, and its cell for an item.
/// Each list declares its columns once; every table format is made from them.
pub struct Column<T> {
    pub header: &'static str,
    pub wide: bool,
    pub cell: fn(&T) -> String,
}

impl<T> Column<T> {
    /// A column of the table.
    pub const fn new(header: &'static str, cell: fn(&T) -> String) -> Self {
        Column { header, wide: false, cell }
    }

    /// A column only `-o wide` shows.
    pub const fn wide(header: &'static str, cell: fn(&T) -> String) -> Self {
        Column { header, wide: true, cell }
    }
}

impl ListOutputArg {
    /// True for the formats that print a table (table and wide), which say so when it is empty.
    pub fn is_table(&self) -> bool {
        matches!(self.output, ListOutput::Table | ListOutput::Wide)
    }

    /// Prints a list as this format asks: `document` (the list as `-o json` prints it) for json,
    /// yaml and the jsonpath formats; for table, wide and name, a row of `columns` per item of
    /// `rows`, or `kind/NAME` lines (NAME from the column headed NAME).
    pub fn print<'a, T: 'a>(
        &self,
        kind: &str,
        columns: &[Column<T>],
        rows: impl IntoIterator<Item = &'a T>,
        document: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        match &self.output {
            ListOutput::Json => crate::output::print_document(document, Output::Json),
            ListOutput::Yaml => crate::output::print_document(document, Output::Yaml),
            ListOutput::JsonPath(t) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(t.render(&serde_json::to_value(document)?).as_bytes())?;
                Ok(out.flush()?)
            }
            ListOutput::JsonPathAsJson(t) => {
                crate::output::print_document(&t.values(&serde_json::to_value(document)?), Output::Json)
            }
            ListOutput::Name => {
                let at = columns.iter().position(|c| c.header == "NAME").unwrap_or(0);
                for r in rows {
                    println!("{kind}/{}", (columns[at].cell)(r));
                }
                Ok(())
            }
            ListOutput::Table | ListOutput::Wide => {
                let wide = self.output == ListOutput::Wide;
                let shown: Vec<&Column<T>> = columns.iter().filter(|c| wide || !c.wide).collect();
                let headers: Vec<&str> = shown.iter().map(|c| c.header).collect();
                let mut t = crate::output::table(&headers);
                for r in rows {
                    t.add_row(shown.iter().map(|c| (c.cell)(r)).collect::<Vec<_>>());
                }
                crate::output::print_table_headers(&t, !self.no_headers);
                Ok(())
            }
        }
    }
}

/// The filters of create and restore: `-n`/`-A` and the selection.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this namespace (same as --include-namespaces NS).
    #[arg(short = 'n', long, value_name = "NS", conflicts_with_all = ["include_namespaces", "all_namespaces"])]
    pub namespace: Option<String>,
    /// All namespaces (the default; explicit form).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// What to back up or restore, without `-n` (which names a schedule's own namespace in
/// `schedule create`, as everywhere in kubectl).
#[derive(Debug, Args, Clone, Default)]
pub struct SelectionArgs {
    /// Namespaces to include (comma list, globs allowed). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "NS[,NS...]")]
    pub include_namespaces: Vec<String>,
    /// Namespaces to exclude (comma list, globs allowed).
    #[arg(long, value_delimiter = ',', value_name = "NS[,NS...]")]
    pub exclude_namespaces: Vec<String>,
    /// Resources to include: configmaps, deployments.apps, widgets.example.org, short names, globs.
    #[arg(long, value_delimiter = ',', value_name = "RES[,RES...]")]
    pub include_resources: Vec<String>,
    /// Resources to exclude.
    #[arg(long, value_delimiter = ',', value_name = "RES[,RES...]")]
    pub exclude_resources: Vec<String>,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Cluster-scoped objects: Auto (all of them when all namespaces are included, else those the
    /// included namespaces need), Always, or Never (any case; the old true and false still work).
    #[arg(long, default_value = "Auto", value_name = "Auto|Always|Never")]
    pub include_cluster_resources: ClusterResources,
}

impl SelectionArgs {
    pub fn filters(&self) -> Filters {
        Filters {
            included_namespaces: self.include_namespaces.clone(),
            excluded_namespaces: self.exclude_namespaces.clone(),
            included_resources: self.include_resources.clone(),
            excluded_resources: self.exclude_resources.clone(),
            label_selector: self.selector.clone(),
            include_cluster_resources: self.include_cluster_resources,
        }
    }
}

impl FilterArgs {
    pub fn filters(&self) -> Filters {
        let mut filters = self.selection.filters();
        if let Some(ns) = &self.namespace {
            filters.included_namespaces = vec![ns.clone()];
        }
        filters
    }
}
