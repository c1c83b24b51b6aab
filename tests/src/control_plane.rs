//! A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager
//! (1.20.2, built from Debian's source package by tests/env/install.sh).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kubectl_backup_core::pki::{Ca, LeafFiles};
use serde::{Deserialize, Serialize};

use crate::process::{Process, cached_tool, free_port, free_port_on, port_open, retry_on_port_clash, wait_for};

pub const K8S_BIN: &str = "k8s-1.20.2/bin";

/// TLS files for an etcd with client-certificate authentication.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub server: LeafFiles,
    pub client: LeafFiles,
}

/// An etcd server.
pub struct Etcd {
    pub endpoint: String,
    pub data_dir: PathBuf,
    pub tls: Option<EtcdTls>,
    process: Process,
    args: Vec<String>,
    log: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data in `dir/data`. With `tls`, clients must present a certificate.
    pub fn start(dir: &Path, tls: bool) -> Result<Etcd> {
        Self::start_on(dir, &dir.join("data"), tls)
    }

    /// Starts etcd on an existing (or new) data directory, on new ports if another process took
    /// one before etcd bound it.
    pub fn start_on(dir: &Path, data_dir: &Path, tls: bool) -> Result<Etcd> {
        retry_on_port_clash(&dir.join("etcd.log"), || Self::start_once(dir, data_dir, tls))
    }

    fn start_once(dir: &Path, data_dir: &Path, tls: bool) -> Result<Etcd> {
        std::fs::create_dir_all(dir)?;
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let mut args = vec![
            "--name".into(),
            "harness".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client-urls".into(),
            endpoint.clone(),
            "--advertise-client-urls".into(),
            endpoint.clone(),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-cluster".into(),
            format!("harness=http://127.0.0.1:{peer}"),
            "--quota-backend-bytes".into(),
            (4u64 << 30).to_string(),
            "--log-level".into(),
            "warn".into(),
        ];
        let tls_files = if tls {
            let ca = Ca::new("etcd-ca")?;
            let server = ca.write_leaf(&dir.join("pki"), "server", "etcd", &["127.0.0.1", "localhost"])?;
            let client = ca.write_leaf(&dir.join("pki"), "client", "etcd-client", &[])?;
            args.extend([
                "--cert-file".into(),
                server.cert.display().to_string(),
                "--key-file".into(),
                server.key.display().to_string(),
                "--trusted-ca-file".into(),
                server.ca.display().to_string(),
                "--client-cert-auth".into(),
            ]);
            Some(EtcdTls { server, client })
        } else {
            None
        };
        let log = dir.join("etcd.log");
        let mut process =
            Process::spawn("etcd", "/usr/bin/etcd", &args, &log, &[("ETCD_UNSUPPORTED_ARCH", String::new())])?;
        wait_for("etcd", &mut process, Duration::from_secs(30), || port_open(client))?;
        Ok(Etcd { endpoint, data_dir: data_dir.to_path_buf(), tls: tls_files, process, args, log })
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Stops and starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(10));
        self.process = Process::spawn("etcd", "/usr/bin/etcd", &self.args, &self.log, &[])?;
        let port: u16 = self.endpoint.rsplit(':').next().unwrap_or_default().parse()?;
        wait_for("etcd", &mut self.process, Duration::from_secs(30), || port_open(port))
    }

    /// `etcdctl` arguments that reach this server (endpoint and, with TLS, the client certificate).
    pub fn etcdctl_args(&self) -> Vec<String> {
        let mut a = vec![format!("--endpoints={}", self.endpoint)];
        if let Some(t) = &self.tls {
            a.push(format!("--cacert={}", t.client.ca.display()));
            a.push(format!("--cert={}", t.client.cert.display()));
            a.push(format!("--key={}", t.client.key.display()));
        }
        a
    }
}

/// Credentials of one API server user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub token: String,
    pub kubeconfig: PathBuf,
}

/// Where a control plane is and who may talk to it. Serializable so tests started by `cargo test` can
/// use a control plane the harness started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub server: String,
    pub ca_file: PathBuf,
    /// kubeconfig of a cluster admin (system:masters).
    pub kubeconfig: PathBuf,
    /// Unprivileged users (no RBAC bindings until a test makes them): `alice`, `bob`.
    pub users: Vec<User>,
    pub etcd_endpoint: String,
    pub dir: PathBuf,
}

impl ClusterInfo {
    pub fn user(&self, name: &str) -> &User {
        self.users.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("no harness user {name}"))
    }
}

/// How a control plane is reachable and what its API server does beyond the defaults. The default
/// is what every test without a node uses: everything on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct Options {
    /// The API server binds, advertises (the `kubernetes` Service's endpoint) and is reached on this
    /// address; the serving certificate covers it besides 127.0.0.1. A node's Pods cannot reach
    /// 127.0.0.1 of the host, so a control plane for a node uses an address on the node's link.
    pub address: std::net::Ipv4Addr,
    /// More kube-apiserver flags (e.g. `--enable-aggregator-routing=true`).
    pub extra_apiserver_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options { address: std::net::Ipv4Addr::LOCALHOST, extra_apiserver_args: Vec::new() }
    }
}

/// The kube-apiserver flags both [`ControlPlane`] and [`ApiServer`] use.
struct ApiServerFlags<'a> {
    etcd: &'a str,
    port: u16,
    pki: &'a Path,
    serving: &'a LeafFiles,
    tokens: &'a Path,
    sa_key: &'a Path,
    sa_pub: &'a Path,
    options: &'a Options,
}

impl ApiServerFlags<'_> {
    fn args(&self) -> Vec<String> {
        let address = self.options.address;
        let mut args: Vec<String> = vec![
            format!("--etcd-servers={}", self.etcd),
            format!("--bind-address={address}"),
            format!("--secure-port={}", self.port),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", self.pki.display()),
            format!("--tls-cert-file={}", self.serving.cert.display()),
            format!("--tls-private-key-file={}", self.serving.key.display()),
            format!("--client-ca-file={}", self.serving.ca.display()),
            format!("--token-auth-file={}", self.tokens.display()),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", self.sa_pub.display()),
            format!("--service-account-signing-key-file={}", self.sa_key.display()),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--advertise-address={address}"),
        ];
        args.extend(self.options.extra_apiserver_args.iter().cloned());
        args
    }
}

/// The serving certificate's names: 127.0.0.1, `address` and the `kubernetes` Service's names.
fn serving_names(address: std::net::Ipv4Addr) -> Vec<String> {
    let mut names: Vec<String> =
        ["127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
            .map(String::from)
            .to_vec();
    if !address.is_loopback() {
        names.push(address.to_string());
    }
    names
}

/// A fresh service-account signing key (ECDSA P-256, PKCS#8) in `pki`: the API server and the
/// controller manager read the same file. Returns (private key, public key).
fn write_service_account_key(pki: &Path) -> Result<(PathBuf, PathBuf)> {
    let sa_key = pki.join("service-account.key");
    let sa_pub = pki.join("service-account.pub");
    let key = rcgen::KeyPair::generate()?;
    std::fs::write(&sa_key, key.serialize_pem())?;
    std::fs::write(&sa_pub, key.public_key_pem())?;
    Ok((sa_key, sa_pub))
}

/// etcd + kube-apiserver + kube-controller-manager.
pub struct ControlPlane {
    pub info: ClusterInfo,
    pub etcd: Etcd,
    apiserver: Process,
    controller_manager: Process,
    apiserver_args: Vec<String>,
    apiserver_port: u16,
    address: std::net::Ipv4Addr,
}

impl ControlPlane {
    pub fn start(dir: &Path) -> Result<ControlPlane> {
        Self::start_with(dir, &Options::default())
    }

    /// A control plane reached on `options.address`, with more API server flags.
    pub fn start_with(dir: &Path, options: &Options) -> Result<ControlPlane> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let bin = cached_tool(K8S_BIN)?;
        let etcd = Etcd::start(&dir.join("etcd"), false)?;

        let pki = dir.join("pki");
        let ca = Ca::new("kubernetes-ca")?;
        let names = serving_names(options.address);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let serving = ca.write_leaf(&pki, "apiserver", "kube-apiserver", &names)?;
        let (sa_key, sa_pub) = write_service_account_key(&pki)?;

        let admin_token = random_token();
        let mut users = vec![("admin", admin_token.clone(), "system:masters")];
        let alice = random_token();
        let bob = random_token();
        users.push(("alice", alice.clone(), "developers"));
        users.push(("bob", bob.clone(), "developers"));
        let tokens = pki.join("tokens.csv");
        let csv: String = users.iter().map(|(n, t, g)| format!("{t},{n},{n},{g}\n")).collect();
        std::fs::write(&tokens, csv)?;

        let port = free_port_on(options.address);
        let server = format!("https://{}:{port}", options.address);
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &serving.ca, "admin", &admin_token)?;
        let mut user_list = Vec::new();
        for (name, token) in [("alice", alice), ("bob", bob)] {
            let path = dir.join(format!("{name}.kubeconfig"));
            write_kubeconfig(&path, &server, &serving.ca, name, &token)?;
            user_list.push(User { name: name.into(), token, kubeconfig: path });
        }

        let flags = ApiServerFlags {
            etcd: &etcd.endpoint,
            port,
            pki: &pki,
            serving: &serving,
            tokens: &tokens,
            sa_key: &sa_key,
            sa_pub: &sa_pub,
            options,
        };
        let mut apiserver_args = flags.args();
        apiserver_args.extend(["--allow-privileged=true".to_string(), "--v=1".to_string()]);
        let apiserver = start_apiserver(&bin, &apiserver_args, &dir, options.address, port)?;
        let info = ClusterInfo {
            server,
            ca_file: serving.ca.clone(),
            kubeconfig: kubeconfig.clone(),
            users: user_list,
            etcd_endpoint: etcd.endpoint.clone(),
            dir: dir.clone(),
        };
        let cm_args: Vec<String> = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--service-account-private-key-file={}", sa_key.display()),
            format!("--root-ca-file={}", serving.ca.display()),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            format!("--port={}", free_port()),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=false".into(),
            "--v=1".into(),
        ];
        let controller_manager = Process::spawn(
            "kube-controller-manager",
            bin.join("kube-controller-manager"),
            &cm_args,
            &dir.join("kube-controller-manager.log"),
            &[],
        )?;
        let mut cp = ControlPlane {
            info,
            etcd,
            apiserver,
            controller_manager,
            apiserver_args,
            apiserver_port: port,
            address: options.address,
        };
        cp.wait_for_default_service_account()?;
        Ok(cp)
    }

    /// Stops the API server (etcd and the controller manager keep running).
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop(Duration::from_secs(10));
    }

    /// Starts the API server again on the same port and data.
    pub fn start_apiserver(&mut self) -> Result<()> {
        let bin = cached_tool(K8S_BIN)?;
        self.apiserver =
            start_apiserver(&bin, &self.apiserver_args, &self.info.dir, self.address, self.apiserver_port)?;
        Ok(())
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.apiserver.check_alive()?;
        self.controller_manager.check_alive()?;
        self.etcd.process().check_alive()
    }

    /// The controller manager is working once the `default` namespace has its ServiceAccount.
    fn wait_for_default_service_account(&mut self) -> Result<()> {
        let kubeconfig = self.info.kubeconfig.clone();
        let cm = &mut self.controller_manager;
        wait_for("kube-controller-manager (default ServiceAccount)", cm, Duration::from_secs(60), || {
            std::process::Command::new("kubectl")
                .args([
                    "--kubeconfig",
                    &kubeconfig.display().to_string(),
                    "get",
                    "serviceaccount",
                    "default",
                    "-n",
                    "default",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }
}

/// Stops the clients of etcd before etcd (fields would drop etcd first, and the API server then
/// spends its whole grace period retrying it).
impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.controller_manager.stop(Duration::from_secs(5));
        self.apiserver.stop(Duration::from_secs(5));
    }
}

fn start_apiserver(bin: &Path, args: &[String], dir: &Path, address: std::net::Ipv4Addr, port: u16) -> Result<Process> {
    let mut p =
        Process::spawn("kube-apiserver", bin.join("kube-apiserver"), args, &dir.join("kube-apiserver.log"), &[])?;
    let url = format!("https://{address}:{port}/readyz");
    wait_for("kube-apiserver /readyz", &mut p, Duration::from_secs(60), || {
        // /readyz is open to anonymous users; any 200 means ready.
        std::process::Command::new("curl")
            .args(["-ksf", "-o", "/dev/null", "--max-time", "2", &url])
            .status()
            .is_ok_and(|s| s.success())
    })?;
    Ok(p)
}

pub fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: &str, token: &str) -> Result<()> {
    let ca_data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, std::fs::read(ca)?);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: harness\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_data}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}@harness\n  context:\n    cluster: harness\n    user: {user}\n    namespace: default\ncurrent-context: {user}@harness\n"
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn random_token() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..32).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
}

/// A kube-apiserver alone, on an etcd that already holds a cluster's objects (one restored from a
/// snapshot, say), with PKI and an admin token of its own.
pub struct ApiServer {
    pub info: ClusterInfo,
    process: Process,
}

impl ApiServer {
    /// Starts kube-apiserver in `dir` against `etcd_endpoint` and waits for `/readyz`.
    pub fn start(dir: &Path, etcd_endpoint: &str) -> Result<ApiServer> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let bin = cached_tool(K8S_BIN)?;
        let pki = dir.join("pki");
        let ca = Ca::new("kubernetes-ca")?;
        let serving = ca.write_leaf(&pki, "apiserver", "kube-apiserver", &["127.0.0.1", "localhost", "10.96.0.1"])?;
        let (sa_key, sa_pub) = write_service_account_key(&pki)?;
        let token = random_token();
        let tokens = pki.join("tokens.csv");
        std::fs::write(&tokens, format!("{token},admin,admin,system:masters\n"))?;
        let port = free_port();
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &serving.ca, "admin", &token)?;
        let options = Options::default();
        let flags = ApiServerFlags {
            etcd: etcd_endpoint,
            port,
            pki: &pki,
            serving: &serving,
            tokens: &tokens,
            sa_key: &sa_key,
            sa_pub: &sa_pub,
            options: &options,
        };
        let mut args = flags.args();
        args.push("--v=1".into());
        let process = start_apiserver(&bin, &args, &dir, options.address, port)?;
        let info = ClusterInfo {
            server,
            ca_file: serving.ca.clone(),
            kubeconfig,
            users: Vec::new(),
            etcd_endpoint: etcd_endpoint.to_string(),
            dir: dir.clone(),
        };
        Ok(ApiServer { info, process })
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }
}
