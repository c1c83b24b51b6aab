//! A real node for a test's own cluster: containerd + runc, a kubelet registered as a node,
//! kube-scheduler and kube-proxy (iptables mode), so a chart's Deployment, its container image and
//! its Service run for real.
//!
//! Network: the node lives in a network namespace of its own (`kbk-<id>`), joined to the host by a
//! veth pair on a /30 (`10.201.N.1` host side, `10.201.N.2` node side). Pods get addresses from a
//! CNI bridge inside that namespace (`10.200.N.0/24`); the host has a route to them through the veth.
//! The control plane binds and advertises `10.201.N.1` (see [`control_plane::Options`]), which the
//! node, its Pods (through the `kubernetes` Service, DNATed by kube-proxy inside the namespace) and the
//! tests reach. The namespace has no default route (only the Service range is routed to the host,
//! so kube-proxy's REJECT applies as on a real node) and the host forwards nothing
//! (`net.ipv4.ip_forward` of the host is untouched; the namespace's own is set), so Pod traffic can
//! only reach the node, other Pods and the host's end of the veth. kube-proxy's iptables rules live
//! in the namespace too, so parallel nodes never share rules.
//!
//! Cleanup on drop, by PID: kube-proxy, kubelet, scheduler; containerd ends its tasks; then SIGKILL to
//! every process left in the node's cgroups (containerd and its shims in `kubectl-backup-<id>`, which
//! the harness puts containerd in; each container in `k8s.io/<container id>`, where containerd puts
//! it); then the mounts under the node's directory (kubelet's root dir, `umount -R`, and the Pods'
//! network namespaces, which containerd mounts there), those cgroups, libcni's cached results, the
//! Pods' log directories and the node's network namespace with its bridge and veth. The next run
//! inherits nothing. A test process killed before its Drop ran (SIGKILL, Ctrl-C) leaves its shims
//! and containers running: the next node start finds it by its subnet lock file (`<id> <dir>`, no
//! longer locked) and does the same cleanup from what is on disk.
//!
//! Images: no registry is reachable. `tests/env/install.sh node` builds the pause and busybox images
//! (docker-archive tars under the cache); they are imported into the node's containerd, which runs
//! Pods with `imagePullPolicy: Never`/`IfNotPresent` only.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::control_plane::{ClusterInfo, ControlPlane, K8S_BIN, Options, random_token};
use crate::process::{Process, cached_tool, tail, wait_for};

/// The kube-apiserver flags a node needs: webhooks (and aggregated APIs) are called on the Service's
/// endpoint (the Pod IP, which the host routes to) instead of its ClusterIP (which only kube-proxy in
/// the node's namespace knows), and kubelet is reached on its InternalIP (`logs`, `exec`).
pub const APISERVER_NODE_FLAGS: [&str; 2] =
    ["--enable-aggregator-routing=true", "--kubelet-preferred-address-types=InternalIP"];

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Runs a short command with a time limit; its stdout, or an error with both streams.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(timeout.as_secs().max(1).to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}{}):\n{}{}",
            args.join(" "),
            out.status,
            if out.status.code() == Some(124) { ", timed out" } else { "" },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An image `tests/env/install.sh node` built: (name, archive).
pub fn cached_image(stem: &str) -> Result<(String, PathBuf)> {
    let tar = cached_tool(&format!("images/{stem}.tar"))?;
    let name = std::fs::read_to_string(cached_tool(&format!("images/{stem}.name"))?)?.trim().to_string();
    Ok((name, tar))
}

/// The busybox image for test Pods (`imagePullPolicy: Never`).
pub fn busybox_image() -> Result<String> {
    Ok(cached_image("busybox")?.0)
}

/// The node's network namespace, its veth pair and the host's route to the Pods.
pub struct NodeNetwork {
    pub netns: String,
    host_if: String,
    /// The host's end of the veth: where the control plane and the test's servers listen.
    pub host_ip: Ipv4Addr,
    /// The node's InternalIP.
    pub node_ip: Ipv4Addr,
    /// The Pods' subnet (CNI host-local range), e.g. `10.200.7.0/24`.
    pub pod_cidr: String,
    /// Held (flock) while the node exists, so parallel nodes never take the same subnets. It holds
    /// `<id> <node dir>` while the node runs, so a later run can clean up after a killed one.
    lock: File,
}

impl NodeNetwork {
    fn create(id: &str) -> Result<NodeNetwork> {
        let (n, lock) = claim_subnet()?;
        lock.set_len(0)?;
        std::os::unix::fs::FileExt::write_all_at(&lock, format!("{id}\n").as_bytes(), 0)?;
        let netns = format!("kbk-{id}");
        let host_if = format!("kbk{id}h");
        let node_if = format!("kbk{id}n");
        let host_ip = Ipv4Addr::new(10, 201, n, 1);
        let node_ip = Ipv4Addr::new(10, 201, n, 2);
        let pod_cidr = format!("10.200.{n}.0/24");
        // Created before anything can fail, so Drop removes whatever exists.
        let net = NodeNetwork { netns, host_if, host_ip, node_ip, pod_cidr, lock };
        let t = Duration::from_secs(10);
        let ns = net.netns.as_str();
        run("ip", &["netns", "add", ns], t)?;
        run("ip", &["link", "add", &net.host_if, "type", "veth", "peer", "name", &node_if], t)?;
        run("ip", &["link", "set", &node_if, "netns", ns], t)?;
        run("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", &net.host_if], t)?;
        run("ip", &["link", "set", &net.host_if, "up"], t)?;
        run("ip", &["-n", ns, "addr", "add", &format!("{node_ip}/30"), "dev", &node_if], t)?;
        run("ip", &["-n", ns, "link", "set", &node_if, "up"], t)?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"], t)?;
        run("ip", &["route", "add", &net.pod_cidr, "via", &node_ip.to_string(), "dev", &net.host_if], t)?;
        // Service ClusterIPs are routed towards the host (which forwards nothing), so a Pod's packet
        // to a ClusterIP passes the FORWARD chain, where kube-proxy REJECTs Services without
        // endpoints, as on a real node; the ones with endpoints are DNATed before routing.
        let host = host_ip.to_string();
        run("ip", &["-n", ns, "route", "add", "10.96.0.0/16", "via", &host], t)?;
        // Forwarding inside the node's namespace only (host <-> Pods, Pod -> Service -> Pod); the
        // sysctls are per network namespace.
        for sysctl in ["net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"] {
            run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", sysctl], t)?;
        }
        Ok(net)
    }

    /// Records the node's directory next to its id in the lock file.
    fn record(&self, dir: &Path) -> Result<()> {
        let id = self.netns.trim_start_matches("kbk-");
        self.lock.set_len(0)?;
        std::os::unix::fs::FileExt::write_all_at(&self.lock, format!("{id} {}\n", dir.display()).as_bytes(), 0)?;
        Ok(())
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// `ip netns exec <ns> ARGS...` (a short command inside the node's network namespace).
    pub fn exec(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut a = vec!["netns", "exec", &self.netns];
        a.extend_from_slice(args);
        run("ip", &a, timeout)
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        let t = Duration::from_secs(10);
        // The bridge lives in the namespace; deleting it first frees the Pods' veth ends too.
        let _ = run("ip", &["-n", &self.netns, "link", "delete", "cni0"], t);
        let _ = run("ip", &["link", "delete", &self.host_if], t);
        if let Err(e) = run("ip", &["netns", "delete", &self.netns], t) {
            note(&format!("node cleanup: {e}"));
        }
        // Cleaned up: nothing for a later run to do.
        let _ = self.lock.set_len(0);
    }
}

/// A free N for 10.200.N.0/24 and 10.201.N.0/30: not on any interface or route of the host, and not
/// claimed by another node of this machine (an flock held for the node's life).
fn claim_subnet() -> Result<(u8, File)> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)?;
    let used = run("ip", &["-4", "-o", "addr", "show"], Duration::from_secs(10))?
        + &run("ip", &["-4", "route", "show", "table", "all"], Duration::from_secs(10))?;
    let start: u8 = {
        use rand::RngExt;
        rand::rng().random_range(1..=250)
    };
    for i in 0..250u16 {
        let n = ((u16::from(start) + i) % 250 + 1) as u8;
        if used.contains(&format!("10.200.{n}.")) || used.contains(&format!("10.201.{n}.")) {
            continue;
        }
        let lock = open_lock(&dir.join(format!("{n}.lock")))?;
        if lock.try_lock().is_ok() {
            return Ok((n, lock));
        }
    }
    bail!("no free 10.200.N.0/24 + 10.201.N.0/30 for a node (all 250 taken?)")
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("kubectl-backup-node-subnets")
}

/// A lock file, opened without truncating what its holder wrote.
fn open_lock(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Cleans up after nodes whose test process was killed before it could (SIGKILL, Ctrl-C): a lock
/// file nobody holds that still names a node (`<id> <dir>`). Their shims and containers outlived
/// them; their mounts, cgroups, network namespace and veth are still there.
fn sweep_abandoned_nodes() {
    for e in std::fs::read_dir(lock_dir()).into_iter().flatten().flatten() {
        let Ok(lock) = open_lock(&e.path()) else { continue };
        if lock.try_lock().is_err() {
            continue; // a running node
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut words = text.split_whitespace();
        let Some(id) = words.next() else { continue };
        let dir = words.next().map(PathBuf::from);
        note(&format!("cleaning up node {id}, left by a test process that was killed"));
        let containers = dir.as_deref().map(containers_on_disk).unwrap_or_default();
        kill_node_processes(id, &containers);
        if let Some(dir) = &dir {
            let pod_uids = pod_uids_on_disk(dir);
            remove_node_files(id, dir, &containers, &pod_uids);
        }
        let t = Duration::from_secs(10);
        let _ = run("ip", &["link", "delete", &format!("kbk{id}h")], t);
        let _ = run("ip", &["netns", "delete", &format!("kbk-{id}")], t);
        let _ = lock.set_len(0);
    }
}

/// The containers containerd had tasks for, from its state directory (no daemon needed).
fn containers_on_disk(dir: &Path) -> Vec<String> {
    let tasks = dir.join("containerd/state/io.containerd.runtime.v2.task/k8s.io");
    std::fs::read_dir(tasks)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// UIDs of the Pods kubelet ran, from its root dir and its log (Pods already deleted included).
fn pod_uids_on_disk(dir: &Path) -> Vec<String> {
    let mut uids: Vec<String> = std::fs::read_dir(dir.join("kubelet/pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let log = std::fs::read_to_string(dir.join("kubelet.log")).unwrap_or_default();
    uids.extend(log.split("(UID: \"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_string));
    uids.retain(|u| u.len() == 36 && u.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    uids.sort();
    uids.dedup();
    uids
}

/// The node's cgroups, relative to a hierarchy's root: containerd's and its shims'
/// (`kubectl-backup-<id>`) and each container's (with cgroups-per-qos off, kubelet gives no cgroup
/// parent and containerd uses `k8s.io/<id>`).
fn node_cgroups(id: &str, containers: &[String]) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(format!("kubectl-backup-{id}"))];
    v.extend(containers.iter().map(|c| Path::new("k8s.io").join(c)));
    v
}

/// Every PID in those cgroup trees (pids hierarchy).
fn cgroup_pids(cgroups: &[PathBuf]) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack: Vec<PathBuf> = cgroups.iter().map(|c| Path::new(CGROUP_ROOT).join("pids").join(c)).collect();
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    pids
}

/// SIGKILL, by PID, to every process left in the node's cgroups (containers, shims, containerd).
fn kill_node_processes(id: &str, containers: &[String]) {
    let cgroups = node_cgroups(id, containers);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pids = cgroup_pids(&cgroups);
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                note(&format!("node cleanup: processes {pids:?} survived SIGKILL"));
            }
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Once no process of the node is left: its mounts, cgroups, shim sockets, libcni results and Pod logs.
fn remove_node_files(id: &str, dir: &Path, containers: &[String], pod_uids: &[String]) {
    remove_shim_sockets(&dir.join("containerd/containerd.sock"), containers);
    unmount_under(dir);
    remove_cgroups(&node_cgroups(id, containers));
    remove_pod_logs(pod_uids);
    // libcni's result cache (/var/lib/cni/results/<network>-<container>-<if>): ours by network
    // name, and containerd's loopback network's by container ID.
    let network = format!("kubectl-backup-{id}-");
    for e in std::fs::read_dir("/var/lib/cni/results").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&network) || containers.iter().any(|c| name.contains(&format!("-{c}-"))) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// containerd + kubelet + kube-scheduler + kube-proxy for one control plane.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub containerd_socket: PathBuf,
    /// The cgroup (under every hierarchy) of containerd and its shims: `kubectl-backup-<id>`. Also
    /// the CNI network's name.
    cgroup: String,
    kubeconfig: PathBuf,
    kube_proxy: Option<Process>,
    kubelet: Option<Process>,
    scheduler: Option<Process>,
    containerd: Option<Process>,
    /// Dropped last: the namespace goes once every process in it is gone.
    pub network: NodeNetwork,
}

impl Node {
    /// The network comes first: the control plane must listen on `network.host_ip`.
    /// Cleans up first after nodes of killed test processes.
    pub fn network() -> Result<NodeNetwork> {
        sweep_abandoned_nodes();
        NodeNetwork::create(&random_token()[..6])
    }

    /// Starts the node in `dir` for the control plane `cluster` (which listens on `network.host_ip`
    /// with [`APISERVER_NODE_FLAGS`]) and waits until it is Ready and kube-proxy has its rules.
    pub fn start(dir: &Path, cluster: &ClusterInfo, network: NodeNetwork) -> Result<Node> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        network.record(&dir)?;
        let id = network.netns.trim_start_matches("kbk-").to_string();
        let mut node = Node {
            name: format!("node-{id}"),
            containerd_socket: dir.join("containerd/containerd.sock"),
            cgroup: format!("kubectl-backup-{id}"),
            kubeconfig: cluster.kubeconfig.clone(),
            dir,
            kube_proxy: None,
            kubelet: None,
            scheduler: None,
            containerd: None,
            network,
        };
        let bin = cached_tool(K8S_BIN)?;
        node.start_containerd()?;
        for stem in ["pause", "busybox"] {
            node.import_image(&cached_image(stem)?.1)?;
        }
        node.start_kubelet(&bin)?;
        node.scheduler = Some(Process::spawn(
            "kube-scheduler",
            bin.join("kube-scheduler"),
            &[
                format!("--kubeconfig={}", node.kubeconfig.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--port=0".into(),
                "--v=1".into(),
            ],
            &node.dir.join("kube-scheduler.log"),
            &[],
        )?);
        node.start_kube_proxy(&bin)?;
        Ok(node)
    }

    /// A process inside the node's network namespace (same mount namespace as the host).
    fn spawn_in_netns(&self, name: &str, program: &Path, args: &[String]) -> Result<Process> {
        let mut a = vec![format!("--net={}", self.network.netns_path().display()), "--".into()];
        a.push(program.display().to_string());
        a.extend(args.iter().cloned());
        // kubelet's in-tree AWS plugins look for credentials at start; never the metadata address
        // (unreachable from the namespace anyway).
        let env = [("AWS_EC2_METADATA_DISABLED", "true".to_string())];
        Process::spawn(name, "/usr/bin/nsenter", &a, &self.dir.join(format!("{name}.log")), &env)
    }

    fn start_containerd(&mut self) -> Result<()> {
        let dir = self.dir.join("containerd");
        let cni = self.dir.join("cni");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&cni)?;
        let (pause, _) = cached_image("pause")?;
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # The harness lacks CAP_SYS_RESOURCE: without this every sandbox fails in runc create.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  # The Pods' network namespaces are mounted under the node's directory, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            sock = self.containerd_socket.display(),
            cni = cni.display(),
        );
        std::fs::write(dir.join("config.toml"), config)?;
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.cgroup,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.network.pod_cidr }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": self.dir.join("cni-ipam"),
                    },
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
            ],
        });
        std::fs::write(cni.join("10-node.conflist"), serde_json::to_vec_pretty(&conflist)?)?;

        // containerd and its shims live in this cgroup, so cleanup finds each of their PIDs.
        let runtime_cgroup = Path::new(CGROUP_ROOT).join("pids").join(&self.cgroup).join("runtime");
        std::fs::create_dir_all(&runtime_cgroup)
            .with_context(|| format!("creating the node's cgroup {}", runtime_cgroup.display()))?;
        let mut p = self.spawn_in_netns(
            "containerd",
            Path::new("/usr/bin/containerd"),
            &["--config".into(), dir.join("config.toml").display().to_string()],
        )?;
        std::fs::write(runtime_cgroup.join("cgroup.procs"), p.pid().to_string())
            .context("moving containerd into the node's cgroup")?;
        let sock = self.containerd_socket.clone();
        wait_for("containerd", &mut p, Duration::from_secs(60), || sock.exists() && self.ctr(&["version"]).is_ok())?;
        self.containerd = Some(p);
        Ok(())
    }

    /// `ctr -n k8s.io ARGS...` against this node's containerd.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let sock = self.containerd_socket.display().to_string();
        let mut a = vec!["--address", &sock, "--namespace", "k8s.io"];
        a.extend_from_slice(args);
        run("ctr", &a, Duration::from_secs(120))
    }

    /// Imports a docker-archive tar into the node's containerd (the CRI's image store).
    pub fn import_image(&self, tar: &Path) -> Result<()> {
        let tar = tar.display().to_string();
        self.ctr(&["images", "import", "--snapshotter", "native", &tar])
            .with_context(|| format!("importing {tar} into the node's containerd"))?;
        Ok(())
    }

    fn start_kubelet(&mut self, bin: &Path) -> Result<()> {
        let kubelet_dir = self.dir.join("kubelet");
        std::fs::create_dir_all(&kubelet_dir)?;
        let (pause, _) = cached_image("pause")?;
        let endpoint = format!("unix://{}", self.containerd_socket.display());
        let node_ip = self.network.node_ip.to_string();
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={node_ip}"),
            format!("--address={node_ip}"),
            "--container-runtime=remote".into(),
            format!("--container-runtime-endpoint={endpoint}"),
            format!("--image-service-endpoint={endpoint}"),
            "--runtime-request-timeout=2m".into(),
            format!("--root-dir={}", kubelet_dir.display()),
            format!("--cert-dir={}", self.dir.join("kubelet-pki").display()),
            format!("--volume-plugin-dir={}", self.dir.join("volume-plugins").display()),
            format!("--pod-infra-container-image={pause}"),
            "--cgroup-driver=cgroupfs".into(),
            "--cgroups-per-qos=false".into(),
            "--enforce-node-allocatable=".into(),
            "--fail-swap-on=false".into(),
            "--eviction-hard=".into(),
            "--image-gc-high-threshold=100".into(),
            "--image-gc-low-threshold=99".into(),
            "--read-only-port=0".into(),
            "--authorization-mode=AlwaysAllow".into(),
            "--authentication-token-webhook=false".into(),
            // No cluster DNS: Pods get an empty resolv.conf (they use IPs and the Service env vars).
            "--resolv-conf=".into(),
            "--serialize-image-pulls=false".into(),
            "--node-status-update-frequency=5s".into(),
            "--v=1".into(),
        ];
        let mut p = self.spawn_in_netns("kubelet", &bin.join("kubelet"), &args)?;
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        wait_for("kubelet (node Ready)", &mut p, Duration::from_secs(120), || node_ready(&kubeconfig, &name))?;
        self.kubelet = Some(p);
        Ok(())
    }

    fn start_kube_proxy(&mut self, bin: &Path) -> Result<()> {
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--hostname-override={}", self.name),
            "--proxy-mode=iptables".into(),
            format!("--cluster-cidr={}", self.network.pod_cidr),
            format!("--bind-address={}", self.network.node_ip),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            // conntrack sysctls are not all per namespace: leave the host's alone.
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            "--iptables-sync-period=10s".into(),
            "--iptables-min-sync-period=0s".into(),
            "--v=1".into(),
        ];
        let mut p = self.spawn_in_netns("kube-proxy", &bin.join("kube-proxy"), &args)?;
        // Ready once the `kubernetes` Service has its DNAT rule in the node's namespace.
        let net = &self.network;
        wait_for("kube-proxy (rules for default/kubernetes)", &mut p, Duration::from_secs(60), || {
            net.exec(&["iptables", "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES"], Duration::from_secs(10))
                .is_ok_and(|rules| rules.contains("default/kubernetes"))
        })?;
        self.kube_proxy = Some(p);
        Ok(())
    }

    /// Fails with the tail of its log if a node process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in
            [&mut self.containerd, &mut self.kubelet, &mut self.scheduler, &mut self.kube_proxy].into_iter().flatten()
        {
            p.check_alive()?;
        }
        Ok(())
    }

    /// The last lines of kubelet's log (for failure messages).
    pub fn kubelet_log(&self) -> String {
        tail(&self.dir.join("kubelet.log"), 40)
    }

    /// UIDs of every Pod this node ran (their log directories under /var/log/pods are named after
    /// them): those the API server lists now, those kubelet still has a directory for, and those in
    /// kubelet's log (Pods already deleted).
    fn pod_uids(&self) -> Vec<String> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let selector = format!("spec.nodeName={}", self.name);
        let args = [
            "--kubeconfig",
            &kubeconfig,
            "--request-timeout=10s",
            "get",
            "pods",
            "-A",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ];
        let mut uids: Vec<String> = run("kubectl", &args, Duration::from_secs(15))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        uids.extend(pod_uids_on_disk(&self.dir));
        uids.sort();
        uids.dedup();
        uids
    }

    /// Stops everything, by PID, and removes what it left on the host.
    fn cleanup(&mut self) {
        let pod_uids = self.pod_uids();
        for p in [&mut self.kube_proxy, &mut self.kubelet, &mut self.scheduler].into_iter().flatten() {
            p.stop(Duration::from_secs(5));
        }
        // Before anything dies: the container IDs (their cgroups, libcni's cached results).
        let containers: Vec<String> =
            self.ctr(&["containers", "ls", "-q"]).unwrap_or_default().split_whitespace().map(str::to_string).collect();
        // Ask containerd to end every task (shims exit and remove their sockets), then SIGKILL
        // whatever is left: containers, shims, containerd.
        if self.containerd.is_some() {
            let tasks = self.ctr(&["tasks", "ls", "-q"]).unwrap_or_default();
            for task in tasks.split_whitespace() {
                let _ = self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", task]);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            for task in tasks.split_whitespace() {
                // Done when deleted, here or by the CRI plugin on the task's exit ("not found").
                while let Err(e) = self.ctr(&["tasks", "delete", task]) {
                    if e.to_string().contains("not found") || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let mut containers = containers;
        containers.extend(containers_on_disk(&self.dir));
        containers.sort();
        containers.dedup();
        let id = self.cgroup.trim_start_matches("kubectl-backup-").to_string();
        kill_node_processes(&id, &containers);
        if let Some(mut p) = self.containerd.take() {
            p.stop(Duration::from_secs(1));
        }
        remove_node_files(&id, &self.dir, &containers, &pod_uids);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let started = Instant::now();
        self.cleanup();
        note(&format!("node {} stopped and cleaned up in {:.1?}", self.name, started.elapsed()));
    }
}

/// A line on stderr that never panics (cleanup runs in Drop, maybe while a test is unwinding, maybe
/// with stderr closed).
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether node `name` has condition Ready=True.
pub fn node_ready(kubeconfig: &Path, name: &str) -> bool {
    let kubeconfig = kubeconfig.display().to_string();
    let args = [
        "--kubeconfig",
        &kubeconfig,
        "--request-timeout=5s",
        "get",
        "node",
        name,
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
    ];
    run("kubectl", &args, Duration::from_secs(10)).is_ok_and(|s| s.trim() == "True")
}

/// Unmounts every mount point under `dir`, deepest first (kubelet's root dir bind-mounted onto
/// itself, Secret tmpfs volumes, containerd's sandbox /dev/shm).
fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        if run("umount", &["-R", &p], Duration::from_secs(10)).is_err() {
            let _ = run("umount", &["-l", &p], Duration::from_secs(10));
        }
    }
}

/// Removes the given cgroups (relative to each hierarchy's root) and what runc made below them,
/// deepest first, then `k8s.io` itself if that left it empty (it is containerd's, not the host's).
fn remove_cgroups(cgroups: &[PathBuf]) {
    for h in std::fs::read_dir(CGROUP_ROOT).into_iter().flatten().flatten() {
        for cgroup in cgroups {
            let top = h.path().join(cgroup);
            if !top.is_dir() {
                continue;
            }
            let mut dirs = Vec::new();
            let mut stack = vec![top];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
                dirs.push(d);
            }
            for d in dirs.iter().rev() {
                if let Err(e) = std::fs::remove_dir(d) {
                    note(&format!("node cleanup: removing cgroup {}: {e}", d.display()));
                }
            }
        }
        let _ = std::fs::remove_dir(h.path().join("k8s.io"));
    }
}

/// Removes the sockets of shims that were killed rather than shut down: containerd 1.6 names them
/// `/run/containerd/s/<sha256 of "<containerd address>/<namespace>/<shim id>">`, and a Pod's shim id
/// is its sandbox's container ID.
fn remove_shim_sockets(containerd_socket: &Path, containers: &[String]) {
    use std::io::Write;
    for id in containers {
        let key = format!("{}/k8s.io/{id}", containerd_socket.display());
        let Ok(mut child) = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn() else {
            return;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(key.as_bytes());
        }
        let Ok(out) = child.wait_with_output() else { continue };
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(hash) = text.split_whitespace().next() {
            let _ = std::fs::remove_file(Path::new("/run/containerd/s").join(hash));
        }
    }
}

/// Removes the Pods' log directories (/var/log/pods/<ns>_<pod>_<uid>, which kubelet 1.20 always
/// uses) and the /var/log/containers links into them.
fn remove_pod_logs(uids: &[String]) {
    let mut removed = Vec::new();
    for e in std::fs::read_dir("/var/log/pods").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if uids.iter().any(|u| name.ends_with(&format!("_{u}"))) {
            let _ = std::fs::remove_dir_all(e.path());
            removed.push(e.path());
        }
    }
    for e in std::fs::read_dir("/var/log/containers").into_iter().flatten().flatten() {
        if let Ok(target) = std::fs::read_link(e.path())
            && removed.iter().any(|r| target.starts_with(r))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A test's own control plane with a node, and an S3 server its Pods reach.
pub struct NodeCluster {
    /// Dropped first: the node stops before its control plane.
    pub node: Node,
    pub s3: crate::stores::S3Server,
    pub cp: ControlPlane,
    /// Admin tools on this cluster, with the S3 store and `location`.
    pub t: crate::fixtures::Tools,
    pub location: String,
    pub dir: PathBuf,
    /// How long the control plane and the node took to start.
    pub startup: Duration,
    /// Dropped last: removes `dir` (180 MB: etcd, containerd's images) once everything is stopped,
    /// unless the test failed (then its logs are kept).
    _remove_dir: RemoveDirOnSuccess,
}

/// Removes a directory when dropped, unless the thread is panicking (a failed test).
struct RemoveDirOnSuccess(PathBuf);

impl Drop for RemoveDirOnSuccess {
    fn drop(&mut self) {
        let prefix = format!("{}/", self.0.display());
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(&prefix)));
        if std::thread::panicking() {
            note(&format!("logs of the failed test's cluster and node: {}", self.0.display()));
        } else if mounted {
            // Never recurse into something still mounted (a volume could be a host directory).
            note(&format!("{} still has mounts: not removed", self.0.display()));
        } else if let Err(e) = std::fs::remove_dir_all(&self.0) {
            note(&format!("removing {}: {e}", self.0.display()));
        }
    }
}

/// Nodes are started one at a time within a test binary: on 2 CPUs, parallel nodes only make each slower.
static ONE_NODE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A control plane with a node for one test, and the lock that keeps it the only one; panics
/// saying why when it cannot start.
pub fn start_one(name: &str) -> (std::sync::MutexGuard<'static, ()>, NodeCluster) {
    let guard = ONE_NODE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = NodeCluster::start(name).unwrap_or_else(|e| panic!("starting a control plane and a node: {e:#}"));
    note(&format!("[{name}] control plane + node Ready in {:.1?} (logs in {})", c.startup, c.dir.display()));
    (guard, c)
}

impl NodeCluster {
    /// Starts a control plane on a fresh node network, the node, and s3s-fs on the host's end of the
    /// node's veth. `name` names the test's directory.
    pub fn start(name: &str) -> Result<NodeCluster> {
        let started = Instant::now();
        let dir = scratch_dir(name)?;
        let network = Node::network()?;
        let options =
            Options { address: network.host_ip, extra_apiserver_args: APISERVER_NODE_FLAGS.map(String::from).to_vec() };
        let host_ip = network.host_ip;
        let cp = ControlPlane::start_with(&dir.join("cluster"), &options).context("the node's control plane")?;
        let node = Node::start(&dir.join("node"), &cp.info, network).context("the node")?;
        let s3 = crate::stores::S3Server::start_on(&dir.join("store"), host_ip)?;
        let prefix = crate::fixtures::unique(name);
        let t = crate::fixtures::Tools::new(&cp.info).with_store(&s3.info, &prefix);
        let location = s3.info.location(&prefix);
        let _remove_dir = RemoveDirOnSuccess(dir.clone());
        Ok(NodeCluster { node, s3, cp, t, location, dir, startup: started.elapsed(), _remove_dir })
    }

    /// `scripts/build-image.sh` of the debug `backup-webhook` (the image users install, which is
    /// also the volume mover's), imported into the node's containerd. Returns its name.
    pub fn build_and_import_image(&self) -> Result<String> {
        let t0 = Instant::now();
        let tar = self.dir.join("backup-webhook.tar");
        let image = format!("localhost/kubectl-backup/backup-webhook:{}", crate::fixtures::unique("e2e"));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace root")?;
        let out = Command::new(repo.join("scripts/build-image.sh"))
            .arg(&tar)
            .arg(crate::fixtures::bin_dir().join("backup-webhook"))
            .env("IMAGE", &image)
            .output()
            .context("running scripts/build-image.sh")?;
        if !out.status.success() {
            bail!("build-image.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if printed != image {
            bail!("build-image.sh printed {printed:?}, not {image:?}");
        }
        self.node.import_image(&tar).context("importing the image")?;
        note(&format!("image {image} built and imported in {:.1?}", t0.elapsed()));
        Ok(image)
    }

    /// Waits for a Deployment's rollout; on failure, panics saying why: its Pods, their events,
    /// kubelet's log.
    pub fn wait_rollout(&self, ns: &str, deployment: &str) {
        let r = self.t.kubectl(&["rollout", "status", "-n", ns, &format!("deployment/{deployment}"), "--timeout=180s"]);
        if r.code != 0 {
            panic!("deployment {ns}/{deployment} did not roll out:\n{}{}\n{}", r.stdout, r.stderr, self.why(ns));
        }
    }

    /// A namespace's Pods, their events and kubelet's log: why a Pod did not do what it should.
    pub fn why(&self, ns: &str) -> String {
        let pods = self.t.kubectl(&["get", "pods", "-n", ns, "-o", "wide"]);
        let describe = self.t.kubectl(&["describe", "pods", "-n", ns]);
        format!("{}\n{}\nkubelet:\n{}", pods.stdout, describe.stdout, self.node.kubelet_log())
    }

    /// The S3 endpoint as the Pods (and the host) reach it.
    pub fn s3_endpoint(&self) -> String {
        format!("http://{}:{}", self.node.network.host_ip, self.s3.info.port)
    }

    /// `kubectl backup install` of `image` with `flags`, its location this cluster's S3 server, and
    /// the credentials Secret install names (the Pod waits for it: envFrom is not optional).
    pub fn install(&self, image: &str, flags: &[&str]) {
        let mut install = vec![
            "install".to_string(),
            format!("--image={image}"),
            format!("--s3-endpoint={}", self.s3_endpoint()),
            "--region=us-east-1".into(),
            "--credentials-secret=s3-credentials".into(),
        ];
        install.extend(flags.iter().map(|f| f.to_string()));
        self.t.backup(&install.iter().map(String::as_str).collect::<Vec<_>>()).ok();
        self.t
            .kubectl(&[
                "create",
                "secret",
                "generic",
                "s3-credentials",
                "-n",
                "kubectl-backup",
                &format!("--from-literal=AWS_ACCESS_KEY_ID={}", crate::stores::S3_ACCESS_KEY),
                &format!("--from-literal=AWS_SECRET_ACCESS_KEY={}", crate::stores::S3_SECRET_KEY),
            ])
            .ok();
    }
}

/// A directory for this test: under the shared environment's scratch space when `tests/run.sh`
/// started one, else under the system's temporary directory (node tests need nothing shared).
fn scratch_dir(name: &str) -> Result<PathBuf> {
    let base = match crate::env::SharedEnv::load() {
        Ok(env) => env.scratch,
        Err(_) => std::env::temp_dir().join("kubectl-backup-node-tests"),
    };
    let dir = base.join(crate::fixtures::unique(name));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
