//! Volume data: the files of PersistentVolumeClaims, read and written by short-lived mover Pods.
//!
//! For each claim, the client (with the user's own credentials and RBAC) creates a mover Pod in
//! the claim's namespace, running this project's image in `mover` mode ([`mover`]), with the claim
//! mounted (read-only when backing up) and a plan Secret of presigned URLs: one per part under the
//! backup's directory, valid for this run only. No data passes through the client, and the Pod
//! holds no credentials of the location. A user who may not create Pods and Secrets in a namespace
//! gets an error naming the claim, never a silently skipped volume.
//!
//! Parts are data files of the backup like its archive: listed with size and SHA-256 in
//! `status.volumes`, kept by the commit, removed with the backup.

pub mod hooks;
pub mod mover;
pub mod snapshot;
pub mod tree;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use object_store::path::Path;
use serde_json::json;

use self::mover::{Finished, Manifest, PartSource, Plan};
use crate::catalog::Objects;
use crate::error::kube_message;
use crate::kube_client::Cluster;
use crate::model::{StoredFile, VolumeData, VolumeKey, VolumeMethod};
use crate::progress::{Event, Observer};
use crate::store::Store;

/// The mover image unless one is given: the `backup-webhook` image of this version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/kubectl-backup/backup-webhook:", env!("CARGO_PKG_VERSION"));
/// How a run's mover Pods run: not stored with a backup (how this run moves data, not what it
/// holds), so each run (the plugin's flags, the controller's) says it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoverSettings {
    /// Their image: [`DEFAULT_IMAGE`] unless given.
    pub image: String,
    /// The most bytes of files each mover reads (backing up) or writes (restoring) per second,
    /// so that a backup does not take a busy volume's whole disk or network.
    pub bytes_per_second: Option<u64>,
    /// How long after the backup's start its volume data may still be moved (the controller's
    /// `--continuous-timeout`): a mover Pod then running ends at that deadline (its
    /// `activeDeadlineSeconds`), the post hooks run, and the claims not begun are reported.
    pub time_limit: Option<Duration>,
}

impl Default for MoverSettings {
    fn default() -> Self {
        MoverSettings { image: DEFAULT_IMAGE.into(), bytes_per_second: None, time_limit: None }
    }
}

/// A bandwidth limit given as a Kubernetes quantity of bytes per second (`50Mi`, `100M`).
pub fn parse_bandwidth(q: &str) -> Result<u64, String> {
    match quantity_bytes(q) {
        Ok(0) => Err(format!("{q:?} is no bandwidth: give bytes per second above 0, e.g. 50Mi")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("cannot read {q:?} as bytes per second: give a quantity such as 50Mi or 100M")),
    }
}

/// Label on mover Pods and their plan Secrets: the backup or restore they work for.
pub const MOVER_LABEL: &str = "kubectl-backup.dev/mover";
/// Smallest part; parts grow with the claim so that a plan lists at most [`PARTS_MAX`] URLs.
const PART_MIN: u64 = 16 << 20;
const PARTS_MAX: u64 = 800;
/// A part is held in the mover's memory: claims needing larger parts are refused.
const PART_LIMIT: u64 = 256 << 20;
const MIB: u64 = 1 << 20;

/// A claim is not begun with less of the run's time left: a mover needs seconds to start, and the
/// kubelet ends a Pod at whole seconds of its deadline, a little before the run's.
const LEAST_TIME_LEFT: Duration = Duration::from_secs(5);
/// How long one mover Pod may run.
pub const TIMEOUT: Duration = Duration::from_secs(3600);

/// Whether volume data can be moved to and from this location: Pods reach it by presigned URLs,
/// so not a local directory.
pub fn check_location(store: &Store) -> crate::Result<()> {
    if store.signs_urls() {
        return Ok(());
    }
    let why = "volume data is moved by Pods in the cluster, which cannot reach a local directory: use an S3, GCS or Azure location";
    Err(crate::Error::invalid("--include-volumes", store.url(), why))
}

/// A new key for one volume's parts, in an encrypted location: the recipient its mover encrypts
/// to, and the identity sealed like the archive (the mover never sees the location's keys).
fn new_volume_key(seal: &crate::crypto::Seal) -> Result<(String, VolumeKey), String> {
    use age::secrecy::ExposeSecret;
    use base64::Engine;
    use std::io::Write;
    let identity = age::x25519::Identity::generate();
    let mut sealed = crate::crypto::Sealed::new(Vec::new(), Some(seal)).map_err(|e| e.to_string())?;
    sealed.write_all(identity.to_string().expose_secret().as_bytes()).map_err(|e| e.to_string())?;
    let bytes = sealed.finish().map_err(|e| e.to_string())?;
    let key =
        VolumeKey { encryption: seal.describe(), sealed: base64::engine::general_purpose::STANDARD.encode(bytes) };
    Ok((identity.to_public().to_string(), key))
}

/// The volume's own identity, opened with the keys the restore was given.
fn open_volume_key(store: &Store, backup: &str, key: &VolumeKey) -> Result<String, String> {
    use base64::Engine;
    use std::io::Read;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&key.sealed)
        .map_err(|e| format!("the volume's key is not valid base64: {e}"))?;
    let mut reader = crate::crypto::open(bytes.as_slice(), Some(&key.encryption), store.unseal(), backup)
        .map_err(|e| format!("cannot open the volume's key: {e}"))?;
    let mut text = String::new();
    reader.read_to_string(&mut text).map_err(|e| format!("cannot open the volume's key: {e}"))?;
    Ok(text)
}

/// Who creates a backup's mover Pods and runs its hooks.
#[derive(Clone, Default)]
pub enum MoverAccess {
    /// The client the backup reads with: the CLI's user, with their own RBAC.
    #[default]
    Reader,
    /// Another identity's client: the in-cluster controller acting as a Backup request's creator,
    /// or as the identity the admin named for schedules and continuous backups.
    As(Cluster),
    /// Nobody: each claim in scope is an error of the backup, with this reason.
    Refused(String),
}

/// What the movers of one backup or restore share.
pub struct Movers<'a> {
    pub cluster: &'a Cluster,
    pub store: &'a Store,
    /// The backup whose directory holds the parts.
    pub backup: &'a str,
    pub mover: MoverSettings,
    /// How long one mover Pod (or snapshot) may take, start to end.
    pub timeout: Duration,
    /// When the run's time is up ([`MoverSettings::time_limit`]), if it is limited.
    pub deadline: Option<Instant>,
    /// Files or snapshots (backups).
    pub method: VolumeMethod,
    pub observer: Arc<dyn Observer>,
}

impl Movers<'_> {
    /// How long the next mover Pod (or snapshot) may take: [`Movers::timeout`], or less when the
    /// run's deadline comes first.
    fn time_left(&self) -> Duration {
        let left = self.deadline.map(|d| d.saturating_duration_since(Instant::now()));
        left.map_or(self.timeout, |left| left.min(self.timeout))
    }
}

/// What backing up the claims gave.
#[derive(Default)]
pub struct Backed {
    pub volumes: Vec<VolumeData>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    /// Every part written (to remove if the backup is not committed).
    pub files: Vec<Path>,
    /// A hook with `on-error: Fail` failed (or a hook annotation is not valid): the backup fails.
    pub fatal: Option<String>,
}

/// Why a claim's data was not backed up.
enum ClaimError {
    /// This claim only: reported, the backup goes on (PartiallyFailed).
    Claim(String),
    /// The whole backup fails.
    Fatal(String),
}

impl From<String> for ClaimError {
    fn from(e: String) -> Self {
        ClaimError::Claim(e)
    }
}

/// Backs up the data of `claims` (namespace, name), one mover at a time.
pub async fn back_up(m: &Movers<'_>, run_id: &str, claims: &BTreeSet<(String, String)>) -> Backed {
    let _moving = crate::interrupt::moving();
    let mut out = Backed::default();
    for (ns, claim) in claims {
        if crate::interrupt::requested() {
            out.errors.push(format!(
                "the data of PersistentVolumeClaim {ns}/{claim} was not backed up: the run was interrupted before it was begun"
            ));
            continue;
        }
        if m.time_left() < LEAST_TIME_LEFT {
            let limit = m.mover.time_limit.unwrap_or_default();
            out.errors.push(format!(
                "the data of PersistentVolumeClaim {ns}/{claim} was not backed up: the backup's time limit ({limit:?}) was up before it could be begun"
            ));
            continue;
        }
        m.observer.event(Event::Waiting { what: format!("the data of PersistentVolumeClaim {ns}/{claim}") });
        let mut hook_errors = Vec::new();
        match back_up_claim(m, run_id, ns, claim, &mut out.files, &mut hook_errors).await {
            Ok(Some(v)) => out.volumes.push(v),
            Ok(None) => out.warnings.push(format!("PersistentVolumeClaim {ns}/{claim} is not bound: it has no data")),
            Err(ClaimError::Claim(e)) => {
                out.errors.push(format!("the data of PersistentVolumeClaim {ns}/{claim} was not backed up: {e}"))
            }
            Err(ClaimError::Fatal(e)) => {
                out.fatal = Some(format!("backing up the data of PersistentVolumeClaim {ns}/{claim}: {e}"));
                return out;
            }
        }
        out.errors.extend(hook_errors);
    }
    out
}

/// The Pods running with the claim mounted: where its hooks run, and the node it is attached to.
async fn users(m: &Movers<'_>, ns: &str, claim: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(m.cluster.client.clone(), ns);
    let Ok(list) = pods.list(&ListParams::default()).await else { return Vec::new() };
    list.items
        .into_iter()
        .filter(|p| {
            let mounts = p.spec.as_ref().and_then(|s| s.volumes.as_ref()).is_some_and(|vs| {
                vs.iter().any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim))
            });
            mounts && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect()
}

/// Runs the `when` hooks of `users`. A failure with `Continue` is added to `errors`; with `Fail`
/// (or an annotation that is not valid) it is returned.
async fn run_hooks(
    m: &Movers<'_>,
    ns: &str,
    users: &[Pod],
    when: hooks::When,
    runs: &mut Vec<hooks::HookRun>,
    errors: &mut Vec<String>,
) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(m.cluster.client.clone(), ns);
    for pod in users {
        let Some(hook) = hooks::from_pod(pod, when)? else { continue };
        m.observer.event(Event::Waiting { what: format!("the {when:?} hook of Pod {ns}/{}", hook.pod) });
        let run = hooks::run(&pods, &hook).await;
        if let Some(e) = &run.error {
            let what = format!(
                "{when:?} hook {:?} in Pod {ns}/{} (container {}) {e}{}",
                hook.command,
                hook.pod,
                hook.container,
                if run.output.is_empty() { String::new() } else { format!(": {}", run.output) }
            );
            match hook.on_error {
                hooks::OnError::Fail => {
                    runs.push(run);
                    return Err(format!("{what} (on-error: Fail)"));
                }
                hooks::OnError::Continue => errors.push(format!("{what} (on-error: Continue)")),
            }
        }
        runs.push(run);
    }
    Ok(())
}

/// One claim: plan, mover Pod, manifest checked against the Pod's report, parts checked in the store.
async fn back_up_claim(
    m: &Movers<'_>,
    run_id: &str,
    ns: &str,
    claim: &str,
    files: &mut Vec<Path>,
    errors: &mut Vec<String>,
) -> Result<Option<VolumeData>, ClaimError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(m.cluster.client.clone(), ns);
    let pvc = claims.get(claim).await.map_err(|e| format!("cannot read the claim: {}", kube_message(&e)))?;
    let status = pvc.status.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound") {
        return Ok(None);
    }
    let capacity = status.capacity.as_ref().and_then(|c| c.get("storage")).map(|q| q.0.clone());
    let storage_class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    // Everything that can fail is prepared before the hooks: a workload is held (frozen) for the
    // read alone.
    let method = match m.method {
        VolumeMethod::Fs => {
            let bytes = capacity.as_deref().map(quantity_bytes).transpose()?.unwrap_or(PART_MIN);
            Method::Files(plan_files(m, run_id, ns, claim, bytes).await?)
        }
        VolumeMethod::Snapshot => Method::Snapshot(snapshot::class_for(m.cluster, storage_class.as_deref()).await?.0),
    };
    let users = users(m, ns, claim).await;
    let node = users.iter().find_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()));
    let mut hook_runs = Vec::new();
    let mut snapshot_taken = None;
    if let Err(e) = run_hooks(m, ns, &users, hooks::When::Pre, &mut hook_runs, errors).await {
        // What the pre hooks did (a freeze) is undone all the same.
        let _ = run_hooks(m, ns, &users, hooks::When::Post, &mut hook_runs, &mut Vec::new()).await;
        return Err(ClaimError::Fatal(e));
    }
    let started = Instant::now();
    let taken = match &method {
        Method::Files(f) => run_pod(m, ns, claim, &f.plan, Role::Read { node, part_size: f.part_size }).await.map(Some),
        Method::Snapshot(class) => {
            snapshot::take(m.cluster, ns, claim, m.backup, class, m.time_left()).await.map(|s| {
                snapshot_taken = Some(s);
                None
            })
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    // After the read, whether it worked or not: the workload is let go.
    run_hooks(m, ns, &users, hooks::When::Post, &mut hook_runs, errors).await.map_err(ClaimError::Fatal)?;
    let taken = taken?;
    let mut v = VolumeData {
        namespace: ns.into(),
        claim: claim.into(),
        storage_class,
        volume_name: pvc.spec.as_ref().and_then(|s| s.volume_name.clone()),
        capacity,
        duration_ms,
        hooks: hook_runs,
        ..Default::default()
    };
    match (&method, taken) {
        (Method::Files(f), Some(finished)) => stored_files(m, f, &finished, files, &mut v).await?,
        _ => {
            v.format = snapshot::FORMAT.into();
            v.snapshot = snapshot_taken;
        }
    }
    Ok(Some(v))
}

/// How a claim is read.
enum Method {
    Files(FilesPlan),
    /// A CSI snapshot with this VolumeSnapshotClass.
    Snapshot(String),
}

/// A mover's plan and the keys of what it writes.
struct FilesPlan {
    plan: Plan,
    part_size: u64,
    stem: String,
    /// In an encrypted location: the recipient the parts are encrypted to, and its sealed key.
    key: Option<(String, VolumeKey)>,
}

impl FilesPlan {
    fn part_key(&self, i: usize) -> String {
        format!("{}-{i:05}.tar.zst", self.stem)
    }
    fn manifest_key(&self) -> String {
        format!("{}-manifest.json", self.stem)
    }
}

/// Presigned URLs for parts enough for a claim of `capacity` bytes, and the manifest.
async fn plan_files(m: &Movers<'_>, run_id: &str, ns: &str, claim: &str, capacity: u64) -> Result<FilesPlan, String> {
    let (part_size, count) = parts_for(capacity)?;
    let key = m.store.seal().map(new_volume_key).transpose()?;
    let mut f = FilesPlan {
        plan: Plan::Backup { part_size, parts: Vec::new(), manifest: String::new(), recipient: None },
        part_size,
        stem: format!("volume-{run_id}-{ns}.{claim}"),
        key,
    };
    let expires = m.timeout + Duration::from_secs(600);
    let mut urls = Vec::with_capacity(count);
    for i in 0..count {
        urls.push(sign(m, http::Method::PUT, &f.part_key(i), expires).await?);
    }
    let manifest_url = sign(m, http::Method::PUT, &f.manifest_key(), expires).await?;
    let recipient = f.key.as_ref().map(|(r, _)| r.clone());
    f.plan = Plan::Backup { part_size, parts: urls, manifest: manifest_url, recipient };
    Ok(f)
}

/// What the mover stored, checked: its manifest against its report, each part's size in the store.
async fn stored_files(
    m: &Movers<'_>,
    f: &FilesPlan,
    finished: &Finished,
    files: &mut Vec<Path>,
    v: &mut VolumeData,
) -> Result<(), String> {
    let manifest_path = data_path(m, &f.manifest_key());
    files.push(manifest_path.clone());
    let manifest = read_manifest(m, &manifest_path, finished).await?;
    for (i, p) in manifest.parts.iter().enumerate() {
        let path = data_path(m, &f.part_key(i));
        files.push(path.clone());
        crate::commit::check_uploaded(m.store, &path, p.size).await.map_err(|e| e.to_string())?;
        v.parts.push(StoredFile {
            key: f.part_key(i),
            size: p.size,
            sha256: p.sha256.clone(),
            format: mover::FORMAT.into(),
            encryption: f.key.as_ref().map(|(recipient, _)| crate::crypto::Encryption {
                algorithm: crate::crypto::ALGORITHM.into(),
                recipients: vec![recipient.clone()],
                passphrase: false,
            }),
        });
    }
    v.key = f.key.as_ref().map(|(_, k)| k.clone());
    v.format = mover::FORMAT.into();
    v.size = manifest.size;
    v.sha256 = manifest.sha256;
    v.tree = manifest.tree;
    Ok(())
}

fn data_path(m: &Movers<'_>, key: &str) -> Path {
    crate::committed::data_path::<Objects>(m.backup, key)
}

async fn sign(m: &Movers<'_>, method: http::Method, key: &str, expires: Duration) -> Result<String, String> {
    let url = m.store.signed_url(method, &data_path(m, key), expires).await.map_err(|e| e.to_string())?;
    Ok(url.to_string())
}

/// The manifest the mover uploaded, checked against the digest the Pod reported.
async fn read_manifest(m: &Movers<'_>, path: &Path, finished: &Finished) -> Result<Manifest, String> {
    let body = match m.store.get_optional_within(path, 16 * MIB).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err("the mover reported success but uploaded no manifest".into()),
        Err(e) => return Err(format!("reading the mover's manifest: {e}")),
    };
    let digest = crate::archive::sha256_hex(&body);
    if body.len() as u64 != finished.manifest_size || digest != finished.manifest_sha256 {
        return Err(format!(
            "the mover's manifest ({} bytes, SHA-256 {digest}) is not the one the mover reported ({} bytes, {})",
            body.len(),
            finished.manifest_size,
            finished.manifest_sha256
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(&body).map_err(|e| format!("the mover's manifest is not valid: {e}"))?;
    let sum: u64 = manifest.parts.iter().map(|p| p.size).sum();
    if sum != manifest.size || manifest.format != mover::FORMAT {
        return Err(format!("the mover's manifest does not add up: parts of {sum} bytes, stream of {}", manifest.size));
    }
    Ok(manifest)
}

/// Part size and count for a claim of `capacity` bytes: room for the whole capacity compressed
/// to no gain, plus tar's headers.
fn parts_for(capacity: u64) -> Result<(u64, usize), String> {
    let room = capacity + capacity / 20 + 4 * MIB;
    let part = room.div_ceil(PARTS_MAX).div_ceil(MIB) * MIB;
    let part = part.max(PART_MIN);
    if part > PART_LIMIT {
        return Err(format!(
            "a claim of {capacity} bytes needs parts of {} MiB; this version moves claims up to {} GiB",
            part / MIB,
            PART_LIMIT * PARTS_MAX / (1 << 30)
        ));
    }
    Ok((part, room.div_ceil(part) as usize + 1))
}

/// Bytes of a Kubernetes quantity (`1Gi`, `500M`, `1e9`, `1073741824`).
pub fn quantity_bytes(q: &str) -> Result<u64, String> {
    let bad = || format!("cannot read the capacity {q:?}");
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "m" => 1e-3,
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok((n * factor).ceil() as u64)
}

/// What a mover Pod does with its claim.
enum Role {
    /// Reads it, mounted read-only, on the node it is attached to.
    Read { node: Option<String>, part_size: u64 },
    /// Writes it, keeping owners and modes.
    Write { part_size: u64 },
}

/// Runs one mover Pod to its end and returns its report; the Pod and its plan Secret are deleted
/// whatever happens.
async fn run_pod(m: &Movers<'_>, ns: &str, claim: &str, plan: &Plan, role: Role) -> Result<Finished, String> {
    let name = format!("kubectl-backup-mover-{:08x}", rand::random::<u32>());
    let pods: Api<Pod> = Api::namespaced(m.cluster.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(m.cluster.client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod_spec(m, &name, claim, &role)).map_err(|e| e.to_string())?;
    let pp = PostParams::default();
    let created = pods
        .create(&pp, &pod)
        .await
        .map_err(|e| format!("cannot create the mover Pod in namespace {ns:?}: {}", kube_message(&e)))?;
    let result = async {
        let plan_json = serde_json::to_string(plan).map_err(|e| e.to_string())?;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {MOVER_LABEL: m.backup},
                // Deleted with its Pod, should this client stop before deleting it.
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name,
                                      "uid": created.metadata.uid.clone().unwrap_or_default()}],
            },
            "stringData": {"plan.json": plan_json},
        }))
        .map_err(|e| e.to_string())?;
        secrets
            .create(&pp, &secret)
            .await
            .map_err(|e| format!("cannot create the mover's plan Secret in namespace {ns:?}: {}", kube_message(&e)))?;
        wait_pod(m, &pods, &name, (ns, claim)).await
    }
    .await;
    // A second's grace: a mover still running (stopped, or past its deadline) has nothing to save,
    // and as its container's PID 1 it would wait out the default 30 s before being killed.
    let _ = pods.delete(&name, &DeleteParams { grace_period_seconds: Some(1), ..DeleteParams::background() }).await;
    let _ = secrets.delete(&name, &DeleteParams::default()).await;
    result.map_err(|e| format!("mover Pod {ns}/{name}: {e}"))
}

/// The mover Pod: root in the container for the file owners' sake, with only the capabilities
/// moving files needs, no service account token, no privilege escalation.
fn pod_spec(m: &Movers<'_>, name: &str, claim: &str, role: &Role) -> serde_json::Value {
    let (read_only, caps, node, part) = match role {
        Role::Read { node, part_size } => (true, vec!["DAC_READ_SEARCH"], node.clone(), *part_size),
        Role::Write { part_size } => (false, vec!["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"], None, *part_size),
    };
    // Two parts in flight (one being filled, one being sent) and the compressor's own memory.
    let memory = format!("{}Mi", (3 * part) / MIB + 128);
    let mut args: Vec<String> =
        ["mover", "--plan", "/etc/kubectl-backup-mover/plan.json", "--dir", "/volume"].map(String::from).into();
    if let Some(rate) = m.mover.bytes_per_second {
        args.push(format!("--bytes-per-second={rate}"));
    }
    let mut spec = json!({
        "restartPolicy": "Never",
        "activeDeadlineSeconds": m.time_left().as_secs().max(1),
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "mover",
            "image": m.mover.image,
            "imagePullPolicy": "IfNotPresent",
            "args": args,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"], "add": caps},
            },
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": memory}},
            "volumeMounts": [
                {"name": "data", "mountPath": "/volume", "readOnly": read_only},
                {"name": "plan", "mountPath": "/etc/kubectl-backup-mover", "readOnly": true},
            ],
        }],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}},
            {"name": "plan", "secret": {"secretName": name, "defaultMode": 0o400}},
        ],
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {MOVER_LABEL: m.backup, "app.kubernetes.io/name": "kubectl-backup-mover"},
        },
        "spec": spec,
    })
}

/// Waits for the Pod to end; its termination message is the mover's report. Image pull failures
/// end the wait at once. While it runs, its progress (the last line of its log) becomes
/// [`Event::VolumeBytes`] of `claim` (namespace, name); someone who may not read Pod logs sees the
/// claim's name only.
async fn wait_pod(m: &Movers<'_>, pods: &Api<Pod>, name: &str, claim: (&str, &str)) -> Result<Finished, String> {
    let limit = m.time_left();
    let deadline = Instant::now() + limit + Duration::from_secs(30);
    let (mut next_progress, mut logs_readable) = (Instant::now(), true);
    loop {
        let pod = pods.get(name).await.map_err(|e| format!("cannot read it: {}", kube_message(&e)))?;
        let status = pod.status.unwrap_or_default();
        let container = status.container_statuses.unwrap_or_default().into_iter().next();
        let state = container.and_then(|c| c.state).unwrap_or_default();
        if let Some(w) = state.waiting
            && matches!(w.reason.as_deref(), Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"))
        {
            return Err(format!("image {}: {}", m.mover.image, w.message.unwrap_or_default()));
        }
        if logs_readable && state.running.is_some() && Instant::now() >= next_progress {
            next_progress = Instant::now() + mover::PROGRESS_EVERY;
            let last = kube::api::LogParams { tail_lines: Some(1), ..Default::default() };
            match pods.logs(name, &last).await {
                Ok(line) => {
                    if let Ok(moved) = serde_json::from_str::<mover::Moved>(line.trim()) {
                        m.observer.event(Event::VolumeBytes {
                            namespace: claim.0.into(),
                            claim: claim.1.into(),
                            done: moved.bytes_done,
                            total: moved.bytes_total,
                        });
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 403 => logs_readable = false,
                Err(_) => {}
            }
        }
        match status.phase.as_deref() {
            Some("Succeeded") => {
                let message = state.terminated.and_then(|t| t.message).unwrap_or_default();
                return serde_json::from_str(&message).map_err(|e| format!("its report {message:?} is not valid: {e}"));
            }
            // Ended by the kubelet at its activeDeadlineSeconds.
            Some("Failed") if status.reason.as_deref() == Some("DeadlineExceeded") => {
                return Err(format!("did not finish within {limit:?}, its deadline"));
            }
            Some("Failed") => {
                let t = state.terminated.unwrap_or_default();
                let why = t.message.or(status.message).unwrap_or_else(|| t.reason.unwrap_or_default());
                return Err(format!("failed: {}", why.trim()));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            let why = status.conditions.unwrap_or_default().into_iter().filter_map(|c| c.message).collect::<Vec<_>>();
            return Err(format!("did not finish within {limit:?} ({})", why.join("; ")));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            // Deleted by the caller (run_pod), whose post hooks then run.
            _ = crate::interrupt::wait() => return Err("stopped: the run was interrupted".into()),
        }
    }
}

/// One claim's data to write back, and where.
pub struct ToRestore<'a> {
    pub data: &'a VolumeData,
    /// The namespace the claim was restored into.
    pub namespace: String,
}

/// Writes each claim's data from its parts (checked by the mover before use), one at a time.
/// Returns, per claim, what the mover wrote or why it failed.
pub async fn restore(m: &Movers<'_>, claims: &[ToRestore<'_>]) -> Vec<Result<tree::TreeStats, String>> {
    let _moving = crate::interrupt::moving();
    let mut out = Vec::new();
    for c in claims {
        let (ns, claim) = (&c.namespace, &c.data.claim);
        m.observer.event(Event::Waiting { what: format!("the data of PersistentVolumeClaim {ns}/{claim}") });
        out.push(restore_claim(m, c).await);
    }
    out
}

async fn restore_claim(m: &Movers<'_>, c: &ToRestore<'_>) -> Result<tree::TreeStats, String> {
    let expires = m.timeout + Duration::from_secs(600);
    let mut parts = Vec::with_capacity(c.data.parts.len());
    for p in &c.data.parts {
        let url = sign(m, http::Method::GET, &p.key, expires).await?;
        parts.push(PartSource { url, size: p.size, sha256: p.sha256.clone() });
    }
    // The largest part is held in memory, checked, then handed on: the same bound as a backup's.
    let part_size = c.data.parts.iter().map(|p| p.size).max().unwrap_or(0).max(PART_MIN);
    let role = Role::Write { part_size };
    let identity = c.data.key.as_ref().map(|k| open_volume_key(m.store, m.backup, k)).transpose()?;
    let finished = run_pod(m, &c.namespace, &c.data.claim, &Plan::Restore { parts, identity }, role).await?;
    finished.tree.ok_or_else(|| "the mover reported nothing written".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidths() {
        assert_eq!(parse_bandwidth("50Mi"), Ok(50 << 20));
        assert_eq!(parse_bandwidth("100M"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("0"), Err("\"0\" is no bandwidth: give bytes per second above 0, e.g. 50Mi".into()));
        assert_eq!(
            parse_bandwidth("fast"),
            Err("cannot read \"fast\" as bytes per second: give a quantity such as 50Mi or 100M".into())
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(quantity_bytes("500M"), Ok(500_000_000));
        assert_eq!(quantity_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(quantity_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(quantity_bytes("1.5Ki"), Ok(1536));
        assert!(quantity_bytes("1Qi").unwrap_err().contains("\"1Qi\""));
        assert!(quantity_bytes("-1Gi").is_err());
    }

    #[test]
    fn a_volume_key_opens_only_with_the_locations_identity() {
        use age::secrecy::ExposeSecret;
        let location = age::x25519::Identity::generate();
        let seal = crate::crypto::Seal::recipients(&[location.to_public().to_string()]).unwrap();
        let (recipient, key) = new_volume_key(&seal).unwrap();
        assert!(recipient.starts_with("age1") && !key.sealed.contains("AGE-SECRET-KEY"), "{key:?}");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_url(&format!("file://{}", dir.path().display()), &Default::default()).unwrap();
        let err = open_volume_key(&store, "b", &key).unwrap_err();
        assert!(err.contains("pass --identity FILE"), "{err}");
        let mut keys = crate::crypto::Unseal::default();
        keys.add_identity("test", location.to_string().expose_secret().to_string()).unwrap();
        let text = open_volume_key(&store.with_unseal(keys), "b", &key).unwrap();
        let volume: age::x25519::Identity = text.trim().parse().unwrap();
        assert_eq!(volume.to_public().to_string(), recipient);
    }

    #[test]
    fn parts_cover_the_capacity_and_stay_few() {
        for cap in [0, 1 << 20, 1 << 30, 10 << 30, 100 << 30] {
            let (size, count) = parts_for(cap).unwrap();
            assert!(size * count as u64 >= cap + cap / 20, "{cap}: {size} x {count}");
            assert!(count as u64 <= PARTS_MAX + 1, "{cap}: {count}");
            assert!(size >= PART_MIN && size % MIB == 0, "{cap}: {size}");
        }
        let err = parts_for(1 << 40).unwrap_err();
        assert!(err.contains("up to 200 GiB"), "{err}");
    }
}
