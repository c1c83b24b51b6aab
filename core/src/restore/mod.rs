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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use crate::archive::read_verified;
use crate::collect::{self, Discovered};
use crate::crypto::Opener;
use crate::error::kube_message;
use crate::filter::Selection;
use crate::input::validate_name;
use crate::kube_client::Cluster;
use crate::model::{BackupMetadata, ItemAction, Restore, RestoreItem, RestoreSpec};
use crate::progress::{Event, Observer};
use crate::store::Store;
use crate::{Error, FIELD_MANAGER, RESTORED_FROM_LABEL, Result, catalog};

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
    let (meta, archive, index) = verify(store, &spec.backup_name).await?;
    observer.event(Event::Verified { items: index.len() as u64 });

    // 2. Plan against what the target cluster serves.
    let discovered = collect::discover(&cluster.client, &cluster.throttle).await?;
    let decisions = {
        let d = &discovered;
        let shorts =
            |plural: &str, group: &str| d.find(plural, group).map(|r| r.short_names.clone()).unwrap_or_default();
        plan::decide(&index, &selection, &shorts)
    };
    check_scopes(&index, &decisions, &discovered).map_err(corrupt)?;
    let opts = TransformOptions {
        backup_name: spec.backup_name.clone(),
        namespace_mapping: spec.namespace_mapping.clone(),
        preserve_node_ports: spec.preserve_node_ports,
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
    let total = groups.values().map(Vec::len).sum::<usize>() as u64;
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
        archive: Arc::new(archive),
        index: Arc::new(index),
        digests: &meta.objects,
        opts,
        policy: WritePolicy { existing: spec.existing_resource_policy, dry_run: spec.dry_run },
        pending: Pending::default(),
        observer,
        done: 0,
        total,
    };
    applying.all(groups, &decisions, &mut report).await?;
    Ok(report.finish())
}

/// Downloads the archive, checks its size and SHA-256 and every entry's path, digest and identity,
/// and indexes it. Nothing is written before this has passed.
async fn verify(store: &Store, backup: &str) -> Result<(BackupMetadata, Archive, Vec<Indexed>)> {
    let meta = catalog::metadata(store, backup).await?;
    let corrupt = |reason: String| Error::Corrupt { name: backup.to_string(), location: store.url().into(), reason };
    let file = catalog::fetch(store, &meta).await?;
    let encryption = meta.backup.status.archive.as_ref().and_then(|a| a.encryption.clone());
    let opener = Opener::new(encryption, store.unseal().clone(), backup);
    let objects = meta.objects.clone();
    let (archive, index) = tokio::task::spawn_blocking(move || -> Result<std::result::Result<_, String>> {
        let mut index = Vec::with_capacity(objects.len());
        let plain = opener.open(std::io::BufReader::new(&file))?;
        let verified = read_verified(plain, &objects, |e| {
            let v: Value =
                serde_json::from_slice(&e.json).map_err(|err| format!("entry {:?} is not JSON: {err}", e.raw_path))?;
            crate::archive::check_identity(&e.path, &e.raw_path, &v)?;
            index.push(Indexed::from_json(
                &e.raw_path,
                &e.path.resource,
                e.path.namespace.as_deref(),
                &e.path.name,
                &v,
            ));
            Ok(())
        });
        Ok(verified.map(|_| (Archive { file, opener }, index)))
    })
    .await
    .map_err(|e| Error::Other(format!("verifying the archive: {e}")))??
    .map_err(corrupt)?;
    Ok((meta, archive, index))
}

/// The verified archive on local disk, and how to read its plaintext.
struct Archive {
    file: std::fs::File,
    opener: Opener,
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
    /// The verified archive, read once per group.
    archive: Arc<Archive>,
    index: Arc<Vec<Indexed>>,
    digests: &'a BTreeMap<String, String>,
    opts: TransformOptions,
    policy: WritePolicy,
    pending: Pending,
    observer: Arc<dyn Observer>,
    done: u64,
    total: u64,
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
        for (priority, members) in groups {
            if priority > Priority::Namespaces && !namespaces_ready {
                let missing =
                    ensure_namespaces(self.cluster, &self.index, decisions, &self.opts, dry_run, report).await;
                self.pending.namespaces.extend(missing);
                namespaces_ready = true;
            }
            let results = self.group(&members).await?;
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
        Ok(())
    }

    /// Reads the group's entries from the archive (verifying digests again) on a blocking thread
    /// and writes them with bounded concurrency. Returns `(index, result)` per object.
    async fn group(&mut self, members: &[usize]) -> Result<Vec<(usize, RestoreItem)>> {
        let index = &self.index;
        let wanted: HashMap<String, (usize, String)> = members
            .iter()
            .filter_map(|&i| self.digests.get(&index[i].path).map(|d| (index[i].path.clone(), (i, d.clone()))))
            .collect();
        let (tx, rx) = mpsc::channel::<(usize, Value)>(64);
        let source = self.archive.clone();
        let digests_len = self.digests.len();
        let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut f = &source.file;
            std::io::Seek::rewind(&mut f).map_err(|e| e.to_string())?;
            let plain = source.opener.open(std::io::BufReader::new(f)).map_err(|e| e.to_string())?;
            let mut archive = crate::archive::open(plain, digests_len)?;
            for entry in archive.entries().map_err(|e| e.to_string())? {
                let mut entry = entry.map_err(|e| e.to_string())?;
                let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some((i, digest)) = wanted.get(&path) else { continue };
                let i = *i;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| e.to_string())?;
                if &crate::archive::sha256_hex(&bytes) != digest {
                    return Err(format!("entry {path:?} changed on local disk since it was verified"));
                }
                let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                if tx.blocking_send((i, v)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let (cluster, discovered, opts, policy, pending) =
            (self.cluster, &self.discovered, &self.opts, &self.policy, &self.pending);
        let (observer, total, done) = (&self.observer, self.total, &mut self.done);
        let results: Vec<(usize, RestoreItem)> = tokio_stream_of(rx)
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
    let mut pending = BTreeSet::new();
    for ns in targets {
        match cluster.throttle.call(|| api.get_opt(&ns)).await {
            Ok(Some(_)) => {}
            Ok(None) if dry_run => {
                pending.insert(ns);
            }
            Ok(None) => {
                let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {RESTORED_FROM_LABEL: opts.backup_name}}
                }))
                .expect("a valid namespace object");
                let pp = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
                match cluster.throttle.call(|| api.create(&pp, &obj)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => report.warn(format!("cannot create namespace {ns:?}: {}", kube_message(&e))),
                }
            }
            Err(e) => report.warn(format!("cannot read namespace {ns:?}: {}", kube_message(&e))),
        }
    }
    pending
}

fn tokio_stream_of<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
