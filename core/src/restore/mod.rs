//! A restore: verify the whole backup, plan, then create objects group by group.
//!
//! Nothing is written before every entry of the archive has been checked against the digests in
//! the metadata (size and SHA-256 of the archive, then each entry's path and SHA-256). The archive
//! is kept in a local temporary file and read once per priority group, so memory holds one index
//! entry per object, not the objects.

pub mod apply;
pub mod plan;
pub mod record;
pub mod report;
pub mod transform;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::Value;
use tokio::sync::mpsc;

use self::apply::WritePolicy;
use self::plan::{Decision, Indexed, Priority};
use self::report::Report;
use self::transform::{TransformOptions, transform};
use crate::archive::{Expected, read_verified};
use crate::collect::{self, Discovered};
use crate::crypto::Opener;
use crate::error::kube_message;
use crate::filter::Selection;
use crate::input::validate_name;
use crate::kube_client::Cluster;
use crate::model::{BackupMetadata, ItemAction, Restore, RestoreItem, RestoreSpec};
use crate::progress::{Event, Observer};
use crate::store::Store;
use crate::{Error, FIELD_MANAGER, RESTORED_FROM_LABEL, Result, catalog, committed};

/// The resource name restore reports give a claim's data under.
pub const VOLUME_DATA: &str = "volume-data";
/// How long to wait for a restored CRD to be Established and served.
const CRD_WAIT: Duration = Duration::from_secs(60);

/// Restores `spec.backup_name` into the cluster. `name` names the restore (e.g. `<backup>-<time>`).
pub async fn run(
    cluster: &Cluster,
    store: &Store,
    name: &str,
    spec: RestoreSpec,
    observer: Arc<dyn Observer>,
) -> Result<Restore> {
    validate_name("backup name", &spec.backup_name)?;
    for (from, to) in &spec.namespace_mapping {
        validate_name("--namespace-mapping source", from)?;
        validate_name("--namespace-mapping target", to)?;
    }
    let selection = Selection::new(&spec.filters)?;
    let start = Timestamp::now();
    let corrupt =
        |reason: String| Error::Corrupt { name: spec.backup_name.clone(), location: store.url().into(), reason };

    // 1. Verify everything before the first write.
    let (meta, source, index) = verify(store, &spec.backup_name).await?;
    observer.event(Event::Verified { items: index.len() as u64 });

    // 2. Plan against what the target cluster serves.
    let discovered = collect::discover(&cluster.client, &cluster.throttle).await?;
    let mut decisions = {
        let d = &discovered;
        let shorts =
            |plural: &str, group: &str| d.find(plural, group).map(|r| r.short_names.clone()).unwrap_or_default();
        plan::decide(&index, &selection, &shorts)
    };
    check_scopes(&index, &decisions, &discovered).map_err(corrupt)?;
    let (volumes, left_out) = volumes_to_restore(&meta, &spec, &index, &mut decisions);
    if volumes.iter().any(|v| v.snapshot.is_none()) && !spec.dry_run && !store.signs_urls() {
        return Err(Error::invalid(
            "location",
            store.url(),
            "the backup holds volume data, which mover Pods read through presigned URLs, and this location cannot give any: restore with --include-volumes=false for the objects only",
        ));
    }
    let opts = TransformOptions {
        backup_name: spec.backup_name.clone(),
        namespace_mapping: spec.namespace_mapping.clone(),
        preserve_node_ports: spec.preserve_node_ports,
        storage_class_mapping: spec.storage_class_mapping.clone(),
        fresh_claims: volumes.iter().map(|v| (v.namespace.clone(), v.claim.clone())).collect(),
        snapshot_sources: volumes
            .iter()
            .filter(|v| v.snapshot.is_some())
            .map(|v| {
                let name = crate::volume::snapshot::restored_name(&v.claim, &spec.backup_name);
                ((v.namespace.clone(), v.claim.clone()), name)
            })
            .collect(),
    };
    let mut report = Report::new(name, spec.clone(), start);
    let mut groups: BTreeMap<Priority, Vec<usize>> = BTreeMap::new();
    for (i, d) in decisions.iter().enumerate() {
        match d {
            Decision::Restore(p) => groups.entry(*p).or_default().push(i),
            Decision::Skip(reason) => report.add(skipped(&index[i], &opts, reason)),
            Decision::Filtered => {}
        }
    }
    if let Some(w) = left_out {
        report.warn(w);
    }
    for w in missing_storage_classes(cluster, &index, &decisions, &spec.storage_class_mapping).await {
        report.warn(w);
    }
    let from_snapshots: Vec<(String, &crate::volume::snapshot::SnapshotRef)> =
        volumes.iter().filter_map(|v| Some((format!("{}/{}", v.namespace, v.claim), v.snapshot.as_ref()?))).collect();
    for w in crate::volume::snapshot::missing_classes(cluster, &from_snapshots).await {
        report.warn(w);
    }
    let total = (groups.values().map(Vec::len).sum::<usize>() + volumes.len()) as u64;
    report.set_total(total + report.counted());
    observer.event(Event::RestorePlanned { total });
    if let Some(mapped) =
        spec.namespace_mapping.keys().find(|k| !index.iter().any(|i| i.namespace.as_deref() == Some(k.as_str())))
    {
        report.warn(format!("--namespace-mapping names {mapped:?}, which has no objects in the backup"));
    }

    // 3. Apply, group by group.
    let mut applying = Applying {
        cluster,
        discovered,
        source: Arc::new(source),
        index: Arc::new(index),
        opts,
        policy: WritePolicy { existing: spec.existing_resource_policy, dry_run: spec.dry_run },
        pending: Pending::default(),
        observer,
        done: 0,
        total,
        volumes: Volumes { store, data: volumes, mover: spec.mover.clone(), created_claims: BTreeSet::new() },
    };
    applying.all(groups, &decisions, &mut report).await?;
    Ok(report.finish())
}

/// The StorageClasses that restored claims and volumes name (after `--storage-class-mapping`)
/// which the target cluster lacks and the backup does not bring, each with the first object
/// naming it: a claim of a missing class stays Pending. Checked in a dry run too (the preflight).
async fn missing_storage_classes(
    cluster: &Cluster,
    index: &[Indexed],
    decisions: &[Decision],
    mapping: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    let mut brought = BTreeSet::new();
    for (i, d) in index.iter().zip(decisions) {
        if !matches!(d, Decision::Restore(_)) {
            continue;
        }
        match (i.resource.as_str(), &i.storage_class) {
            ("storageclasses.storage.k8s.io", _) => {
                brought.insert(i.name.clone());
            }
            ("persistentvolumeclaims" | "persistentvolumes", Some(class)) => {
                let class = mapping.get(class).unwrap_or(class).clone();
                let kind = if i.resource == "persistentvolumes" { "PersistentVolume" } else { "PersistentVolumeClaim" };
                let ns = i.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
                wanted.entry(class).or_insert_with(|| format!("{kind} {ns}{}", i.name));
            }
            _ => {}
        }
    }
    let api: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(cluster.client.clone());
    let mut warnings = Vec::new();
    for (class, user) in wanted.into_iter().filter(|(c, _)| !brought.contains(c)) {
        match cluster.throttle.call(|| api.get_opt(&class)).await {
            Ok(Some(_)) => {}
            Ok(None) => warnings.push(format!(
                "StorageClass {class:?} (of {user}) does not exist in the target cluster: its claims bind only to volumes made for that class; create it, or restore with --storage-class-mapping {class}:<a class the cluster has>"
            )),
            Err(e) => warnings.push(format!("cannot check StorageClass {class:?} (of {user}): {}", kube_message(&e))),
        }
    }
    warnings
}

/// The volume data this restore writes: that of each claim the restore creates (unless
/// `--include-volumes=false`). The PersistentVolumes those claims were bound to are left out: the
/// claims are bound or provisioned anew and the data written into them. With
/// `--include-volumes=false`, nothing, and a warning naming the claims whose data stays behind.
fn volumes_to_restore(
    meta: &BackupMetadata,
    spec: &RestoreSpec,
    index: &[Indexed],
    decisions: &mut [Decision],
) -> (Vec<crate::model::VolumeData>, Option<String>) {
    let restored = |v: &crate::model::VolumeData| {
        index.iter().zip(decisions.iter()).any(|(i, d)| {
            i.resource == "persistentvolumeclaims"
                && i.namespace.as_deref() == Some(v.namespace.as_str())
                && i.name == v.claim
                && matches!(d, Decision::Restore(_))
        })
    };
    let volumes: Vec<_> = meta.backup.status.volumes.iter().filter(|v| restored(v)).cloned().collect();
    if spec.skip_volume_data {
        return (Vec::new(), left_out_warning(&volumes, &spec.backup_name));
    }
    for (i, d) in index.iter().zip(decisions.iter_mut()) {
        if i.resource == "persistentvolumes"
            && volumes.iter().any(|v| v.volume_name.as_deref() == Some(i.name.as_str()))
        {
            *d = Decision::Skip("its claim's data is restored into a new volume".into());
        }
    }
    (volumes, None)
}

/// What a restore of the objects only says about the volume data it leaves in the backup.
fn left_out_warning(volumes: &[crate::model::VolumeData], backup: &str) -> Option<String> {
    if volumes.is_empty() {
        return None;
    }
    let claims: Vec<String> = volumes.iter().map(|v| format!("{}/{}", v.namespace, v.claim)).collect();
    Some(format!(
        "the backup holds the data of PersistentVolumeClaim(s) {}, which this restore leaves out (objects only); `kubectl backup restore {backup} --namespace-mapping OLD:NEW` restores the data into new claims, with your own rights (or delete these claims and their workloads first)",
        claims.join(", ")
    ))
}

/// Downloads the backup's data, checks its size and SHA-256 and every entry's path, digest and
/// identity, and indexes it. Nothing is written before this has passed.
async fn verify(store: &Store, backup: &str) -> Result<(BackupMetadata, Source, Vec<Indexed>)> {
    let meta = catalog::metadata(store, backup).await?;
    let corrupt = |reason: String| Error::Corrupt { name: backup.to_string(), location: store.url().into(), reason };
    let source = Source::fetch(store, &meta).await?;
    let (source, index) = tokio::task::spawn_blocking(move || {
        let mut index = Vec::new();
        let verified = source.read_verified(|e| {
            let v: Value =
                serde_json::from_slice(&e.json).map_err(|err| format!("entry {:?} is not JSON: {err}", e.raw_path))?;
            crate::archive::check_identity(&e.path, &e.raw_path, &v)?;
            let mut item =
                Indexed::from_json(&e.raw_path, &e.path.resource, e.path.namespace.as_deref(), &e.path.name, &v);
            item.sha256 = e.sha256;
            index.push(item);
            Ok(())
        });
        verified.map(|_| (source, index))
    })
    .await
    .map_err(|e| Error::Other(format!("verifying the backup: {e}")))?
    .map_err(corrupt)?;
    Ok((meta, source, index))
}

/// A backup's verified data on local disk, read once to verify and once per priority group.
enum Source {
    /// A plain backup: its archive (the stored bytes, decrypted as read) and its contents (a
    /// file, or format 1's digests).
    Archive { file: std::fs::File, opener: Opener, contents: Contents },
    /// An incremental backup: its packs and where its contents are in them.
    Packs { local: crate::packs::Local, contents: crate::model::ContentsRef },
}

enum Contents {
    File { file: std::fs::File, opener: Opener, entries: u64 },
    Digests(BTreeMap<String, String>),
}

impl Source {
    async fn fetch(store: &Store, meta: &BackupMetadata) -> Result<Source> {
        let name = meta.backup.metadata.name.as_str();
        if meta.backup.status.incremental.is_some() && meta.backup.status.archive.is_none() {
            let contents = meta.contents.clone().unwrap_or_default();
            return Ok(Source::Packs { local: crate::packs::Local::fetch(store, meta).await?, contents });
        }
        let file = catalog::fetch(store, meta).await?;
        let encryption = meta.backup.status.archive.as_ref().and_then(|a| a.encryption.clone());
        let opener = Opener::new(encryption, store.unseal().clone(), name);
        let contents = match meta.contents.as_ref().and_then(|c| c.file.as_ref().map(|f| (f, c.entries))) {
            Some((f, entries)) => {
                let data = crate::committed::data_file(Some(f)).map_err(|r| committed::corrupt(store, name, r))?;
                let path = committed::data_path::<catalog::Objects>(name, &f.key);
                let file = committed::fetch(store, name, &path, data).await?;
                let opener = Opener::new(f.encryption.clone(), store.unseal().clone(), name);
                Contents::File { file, opener, entries }
            }
            None => Contents::Digests(meta.objects.clone()),
        };
        Ok(Source::Archive { file, opener, contents })
    }

    /// Every object, verified against the contents (blocking).
    fn read_verified(
        &self,
        f: impl FnMut(crate::archive::Entry) -> std::result::Result<(), String>,
    ) -> std::result::Result<u64, String> {
        match self {
            Source::Archive { file, opener, contents } => {
                let mut file = file;
                std::io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
                let plain = opener.open(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
                match contents {
                    Contents::Digests(digests) => read_verified(plain, Expected::map(digests), f),
                    Contents::File { file, opener, entries } => {
                        let mut file = file;
                        std::io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
                        let lines = opener.open(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
                        let lines = crate::contents::Reader::new(lines)?;
                        read_verified(plain, Expected::in_order(lines, *entries), f)
                    }
                }
            }
            Source::Packs { local, contents } => crate::packs::read_verified(local, contents, f),
        }
    }

    /// Calls `f(key, bytes)` for each stored object whose key (entry path in an archive, SHA-256
    /// in packs) `wanted` holds; stops when `f` returns false (blocking).
    fn scan(&self, wanted: &dyn Fn(&str) -> bool, f: &mut crate::packs::Visit<'_>) -> std::result::Result<(), String> {
        match self {
            Source::Archive { file, opener, contents } => {
                let mut file = file;
                std::io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
                let plain = opener.open(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
                let entries = match contents {
                    Contents::Digests(d) => d.len() as u64,
                    Contents::File { entries, .. } => *entries,
                };
                let mut archive = crate::archive::open(plain, entries as usize)?;
                for entry in archive.entries().map_err(|e| e.to_string())? {
                    let mut entry = entry.map_err(|e| e.to_string())?;
                    let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    if !wanted(&path) {
                        continue;
                    }
                    let bytes = crate::archive::read_body(&mut entry)
                        .map_err(|e| format!("archive truncated or corrupt in {path:?}: {e}"))?;
                    if !f(&path, bytes)? {
                        break;
                    }
                }
                Ok(())
            }
            Source::Packs { local, .. } => local.scan(wanted, f),
        }
    }

    /// The key [`Source::scan`] finds an object under.
    fn key<'a>(&self, item: &'a Indexed) -> &'a str {
        match self {
            Source::Archive { .. } => &item.path,
            Source::Packs { .. } => &item.sha256,
        }
    }
}

/// An entry filed under a namespace must be of a namespaced resource, and the reverse: else a
/// restore "of namespace X only" could create a cluster-wide object. Checked for every API the
/// cluster serves now; the APIs of CRDs restored later are checked again when written.
fn check_scopes(index: &[Indexed], decisions: &[Decision], discovered: &Discovered) -> Result<(), String> {
    for (item, d) in index.iter().zip(decisions) {
        if !matches!(d, Decision::Restore(_)) {
            continue;
        }
        let (plural, group) = item.plural_group();
        if let Some(r) = discovered.find(plural, group) {
            apply::check_scope(item, r.namespaced, &r.ar.kind)?;
        }
    }
    Ok(())
}

/// What applying the planned objects shares, group after group.
struct Applying<'a> {
    cluster: &'a Cluster,
    /// What the cluster serves; discovered again after CRDs are restored.
    discovered: Discovered,
    /// The verified data, read once per group.
    source: Arc<Source>,
    index: Arc<Vec<Indexed>>,
    opts: TransformOptions,
    policy: WritePolicy,
    pending: Pending,
    observer: Arc<dyn Observer>,
    done: u64,
    total: u64,
    volumes: Volumes<'a>,
}

/// The volume data a restore writes once the claims exist, before the workloads that use them.
struct Volumes<'a> {
    store: &'a Store,
    data: Vec<crate::model::VolumeData>,
    mover: crate::volume::MoverSettings,
    /// Claims (target namespace, name) this restore created: only those get the data.
    created_claims: BTreeSet<(String, String)>,
}

impl Applying<'_> {
    /// Every group in priority order: namespaces made sure of before the first namespaced group,
    /// CRDs waited on (and the cluster discovered again) before what uses them.
    async fn all(
        &mut self,
        groups: BTreeMap<Priority, Vec<usize>>,
        decisions: &[Decision],
        report: &mut Report,
    ) -> Result<()> {
        let dry_run = self.policy.dry_run;
        let mut namespaces_ready = false;
        let (mut volumes_written, mut snapshots_made) = (false, false);
        // Asked to stop: no further object or group is begun (a mover writing a claim is stopped
        // first); the objects being written when it came are written.
        let interrupted = || {
            crate::interrupt::requested()
                .then(|| crate::interrupt::stopped("the restore stopped; what it created so far stays"))
        };
        for (priority, members) in groups {
            if let Some(e) = interrupted() {
                return Err(e);
            }
            if priority >= Priority::Workloads && !volumes_written {
                self.write_volumes(report).await;
                volumes_written = true;
                if let Some(e) = interrupted() {
                    return Err(e);
                }
            }
            if priority > Priority::Namespaces && !namespaces_ready {
                let missing =
                    ensure_namespaces(self.cluster, &self.index, decisions, &self.opts, dry_run, report).await;
                self.pending.namespaces.extend(missing);
                namespaces_ready = true;
            }
            if priority >= Priority::Volumes && !snapshots_made {
                self.recreate_snapshots(report).await;
                snapshots_made = true;
            }
            let results = self.group(&members).await?;
            if let Some(e) = interrupted() {
                return Err(e);
            }
            let mut crds = Vec::new();
            for (i, r) in results {
                if priority == Priority::CustomResourceDefinitions
                    && matches!(
                        r.action,
                        ItemAction::Created | ItemAction::SkippedExists | ItemAction::Unchanged | ItemAction::Updated
                    )
                {
                    crds.push(self.index[i].name.clone());
                }
                if dry_run && r.action == ItemAction::WouldCreate {
                    match priority {
                        Priority::Namespaces => self.pending.namespaces.insert(r.name.clone()),
                        Priority::CustomResourceDefinitions => self.pending.crds.insert(r.name.clone()),
                        _ => false,
                    };
                }
                if r.resource == "persistentvolumeclaims" && r.action == ItemAction::Created {
                    self.volumes.created_claims.insert((r.namespace.clone().unwrap_or_default(), r.name.clone()));
                }
                report.add(r);
            }
            if priority == Priority::CustomResourceDefinitions && !crds.is_empty() && !dry_run {
                self.observer.event(Event::Waiting {
                    what: format!("{} CustomResourceDefinition(s) to be established", crds.len()),
                });
                for w in crate::crd::wait_established(self.cluster, &crds, CRD_WAIT).await {
                    report.warn(w);
                }
                self.discovered = collect::discover(&self.cluster.client, &self.cluster.throttle).await?;
            }
        }
        if !volumes_written {
            self.write_volumes(report).await;
        }
        Ok(())
    }

    /// Re-creates the CSI snapshots of the claims restored from one (before the claims, whose
    /// `dataSource` names them); each is a `volume-data` item of the report.
    async fn recreate_snapshots(&mut self, report: &mut Report) {
        for data in &self.volumes.data {
            let Some(s) = &data.snapshot else { continue };
            let ns = self.opts.map_namespace(&data.namespace).to_string();
            let name = crate::volume::snapshot::restored_name(&data.claim, &self.opts.backup_name);
            let (action, reason) = if self.policy.dry_run {
                (ItemAction::WouldCreate, format!("VolumeSnapshot {name} of snapshot {} ({})", s.handle, s.driver))
            } else {
                match crate::volume::snapshot::recreate(self.cluster, &ns, &data.claim, &self.opts.backup_name, s).await
                {
                    Ok(()) => {
                        (ItemAction::Created, format!("VolumeSnapshot {name} of snapshot {} ({})", s.handle, s.driver))
                    }
                    Err(e) => (ItemAction::Failed, e),
                }
            };
            report.add(RestoreItem {
                resource: VOLUME_DATA.into(),
                namespace: Some(ns),
                name: data.claim.clone(),
                action,
                reason: Some(reason),
                diff: None,
            });
        }
    }

    /// Writes the data of the claims this restore created, one mover Pod each; reports each as a
    /// `volume-data` item (a failed one makes the restore PartiallyFailed).
    async fn write_volumes(&mut self, report: &mut Report) {
        let v = &self.volumes;
        let mut todo = Vec::new();
        for data in v.data.iter().filter(|d| d.snapshot.is_none()) {
            let ns = self.opts.map_namespace(&data.namespace).to_string();
            let item = |action, reason: String| RestoreItem {
                resource: VOLUME_DATA.into(),
                namespace: Some(ns.clone()),
                name: data.claim.clone(),
                action,
                reason: Some(reason),
                diff: None,
            };
            if self.policy.dry_run {
                let what = format!("{} files, {} bytes stored", data.tree.files, data.size);
                report.add(item(ItemAction::WouldCreate, what));
            } else if !v.created_claims.contains(&(ns.clone(), data.claim.clone())) {
                let why = "the claim was not created by this restore (it exists, or failed): its data is left as it is";
                report.add(item(ItemAction::SkippedExists, why.into()));
            } else {
                todo.push(crate::volume::ToRestore { data, namespace: ns });
            }
        }
        if todo.is_empty() {
            return;
        }
        let movers = crate::volume::Movers {
            cluster: self.cluster,
            store: v.store,
            backup: &self.opts.backup_name,
            mover: v.mover.clone(),
            timeout: crate::volume::TIMEOUT,
            deadline: None,
            method: crate::model::VolumeMethod::Fs,
            observer: self.observer.clone(),
        };
        let results = crate::volume::restore(&movers, &todo).await;
        for (t, r) in todo.iter().zip(results) {
            let (action, reason) = match r {
                Ok(tree) => (ItemAction::Created, format!("{} files, {} bytes written", tree.files, tree.bytes)),
                Err(e) => (ItemAction::Failed, e),
            };
            report.add(RestoreItem {
                resource: VOLUME_DATA.into(),
                namespace: Some(t.namespace.clone()),
                name: t.data.claim.clone(),
                action,
                reason: Some(reason),
                diff: None,
            });
            self.done += 1;
            self.observer.event(Event::Restored { done: self.done, total: self.total });
        }
    }

    /// Reads the group's entries from the archive (verifying digests again) on a blocking thread
    /// and writes them with bounded concurrency. Returns `(index, result)` per object.
    async fn group(&mut self, members: &[usize]) -> Result<Vec<(usize, RestoreItem)>> {
        let index = &self.index;
        let source = self.source.clone();
        let mut wanted: HashMap<String, Vec<usize>> = HashMap::new();
        for &i in members {
            wanted.entry(source.key(&index[i]).to_string()).or_default().push(i);
        }
        let (tx, rx) = mpsc::channel::<(usize, Value)>(64);
        let all = index.clone();
        let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
            // A body stored twice (in two packs) is read twice: its objects are sent once.
            let mut sent: HashSet<String> = HashSet::new();
            source.scan(&|key| wanted.contains_key(key), &mut |key, bytes| {
                if !sent.insert(key.to_string()) {
                    return Ok(true);
                }
                let digest = crate::archive::sha256_hex(&bytes);
                for &i in &wanted[key] {
                    if all[i].sha256 != digest {
                        return Err(format!("entry {:?} changed on local disk since it was verified", all[i].path));
                    }
                    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    if tx.blocking_send((i, v)).is_err() {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
        });
        let (cluster, discovered, opts, policy, pending) =
            (self.cluster, &self.discovered, &self.opts, &self.policy, &self.pending);
        let (observer, total, done) = (&self.observer, self.total, &mut self.done);
        let results: Vec<(usize, RestoreItem)> = tokio_stream_of(rx)
            .take_until(crate::interrupt::wait())
            .map(|(i, v)| {
                let item = &index[i];
                let target_ns = item.namespace.as_deref().map(|n| opts.map_namespace(n).to_string());
                let desired = transform(&item.resource, v, opts);
                let (plural, group) = item.plural_group();
                let namespace_pending = target_ns.as_ref().is_some_and(|ns| pending.namespaces.contains(ns))
                    || pending.crds.contains(&format!("{plural}.{group}"));
                async move {
                    let r = apply::write(
                        cluster,
                        discovered,
                        item,
                        target_ns.as_deref(),
                        desired,
                        policy,
                        namespace_pending,
                    )
                    .await;
                    (i, r)
                }
            })
            .buffer_unordered(cluster.throttle.concurrency)
            .inspect(|_| {
                *done += 1;
                observer.event(Event::Restored { done: *done, total });
            })
            .collect()
            .await;
        reader
            .await
            .map_err(|e| Error::Other(format!("reading the archive: {e}")))?
            .map_err(|e| Error::Other(format!("reading the verified archive again failed: {e}")))?;
        Ok(results)
    }
}
/// In a dry run, what the restore would create first and so cannot exist yet: objects in these
/// namespaces, or of these CRDs, cannot be validated by the server.
#[derive(Default)]
struct Pending {
    namespaces: BTreeSet<String>,
    /// `<plural>.<group>` names of CRDs.
    crds: BTreeSet<String>,
}

/// The report entry of an object skipped by policy.
fn skipped(item: &Indexed, opts: &TransformOptions, reason: &str) -> RestoreItem {
    RestoreItem {
        resource: item.resource.clone(),
        namespace: item.namespace.as_deref().map(|n| opts.map_namespace(n).to_string()),
        name: item.name.clone(),
        action: ItemAction::SkippedPolicy,
        reason: Some(reason.to_string()),
        diff: None,
    }
}

/// Makes sure every target namespace of the restored objects exists (a mapped namespace, or one
/// whose Namespace object was not in the backup). Returns the namespaces that do not exist yet
/// (only in a dry run, where nothing is created).
async fn ensure_namespaces(
    cluster: &Cluster,
    index: &[Indexed],
    decisions: &[Decision],
    opts: &TransformOptions,
    dry_run: bool,
    report: &mut Report,
) -> BTreeSet<String> {
    let targets: BTreeSet<String> = index
        .iter()
        .zip(decisions)
        .filter(|(_, d)| matches!(d, Decision::Restore(_)))
        .filter_map(|(i, _)| i.namespace.as_deref().map(|n| opts.map_namespace(n).to_string()))
        .collect();
    let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&());
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &ar);
    // One GET (and, when missing, one POST) per namespace, with the restore's concurrency.
    let mut outcomes: Vec<(String, std::result::Result<bool, String>)> = futures::stream::iter(targets)
        .map(|ns| {
            let api = &api;
            async move {
                let outcome = match cluster.throttle.call(|| api.get_opt(&ns)).await {
                    Ok(Some(_)) => Ok(true),
                    Ok(None) if dry_run => Ok(false),
                    Ok(None) => {
                        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                            "apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": ns, "labels": {RESTORED_FROM_LABEL: opts.backup_name}}
                        }))
                        .expect("a valid namespace object");
                        let pp = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
                        match cluster.throttle.call(|| api.create(&pp, &obj)).await {
                            Ok(_) => Ok(true),
                            Err(kube::Error::Api(s)) if s.code == 409 => Ok(true),
                            Err(e) => Err(format!("cannot create namespace {ns:?}: {}", kube_message(&e))),
                        }
                    }
                    Err(e) => Err(format!("cannot read namespace {ns:?}: {}", kube_message(&e))),
                };
                (ns, outcome)
            }
        })
        .buffer_unordered(cluster.throttle.concurrency)
        .collect()
        .await;
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut pending = BTreeSet::new();
    for (ns, outcome) in outcomes {
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                pending.insert(ns);
            }
            Err(warning) => report.warn(warning),
        }
    }
    pending
}

fn tokio_stream_of<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
