//! Discovery, filters and parallel paged LIST -> a stream of objects for the archive, one step
//! a module:
//! - [`discovery`]: what the server serves, the never-backed-up list (used by backup, restore and
//!   the webhook alike)
//! - [`plan`]: the filters applied to it: which resources and namespaces a backup reads
//! - [`list`]: one resource's paged LIST, cut into raw objects without decoding them
//! - [`protobuf`]: ConfigMaps' and Secrets' LIST pages read in protobuf, rebuilt as the server's JSON
//! - [`dependencies`]: the cluster-scoped objects backed-up objects need (CRDs, bound PVs)
//!
//! Memory stays flat: each LIST holds two pages (the one handed to the archive writer, in batches
//! through a bounded channel, and the next one being read) whatever the number of objects.

mod dependencies;
pub mod discovery;
mod list;
pub mod plan;
pub mod protobuf;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::{Request, TypeMeta};
use kube::{Client, ResourceExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::contents::Recorded;
use crate::error::kube_message;
use crate::filter::{ResourceNames, Selection, is_ephemeral_namespace, resource_key};
use crate::kube_client::Throttle;
use crate::progress::{Event, Observer};
use crate::{Error, Result};

use self::dependencies::collect_dependencies;
pub use self::discovery::*;
use self::list::list_resource;
pub use self::plan::*;
pub use self::protobuf::ListEncoding;

/// Objects per LIST page.
pub const PAGE_SIZE: u32 = 500;
/// Objects per page of a LIST of metadata only: each is a few hundred bytes, and every page costs
/// the API server a round trip to etcd that counts the rest of the range (10k ConfigMaps on the
/// harness: 0.29–0.31 s in pages of 500, 0.17–0.24 s in pages of 2000, 0.14–0.20 s in pages of
/// 5000, which cost a second backup of 20k objects 4–8 MiB more peak RSS; docs/benchmarks.md).
pub const METADATA_PAGE_SIZE: u32 = 2000;
/// The `Accept` of a LIST of metadata only (`PartialObjectMetadataList`, served since Kubernetes 1.15).
pub const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// The parameters of one page of a paged LIST: `limit` objects, the label selector, the continue
/// token of the page before.
fn page_params(limit: u32, selector: Option<&str>, token: Option<&str>) -> ListParams {
    let mut lp = ListParams::default().limit(limit);
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    if let Some(t) = token {
        lp = lp.continue_token(t);
    }
    lp
}
/// Per-namespace LISTs are used when at most this many namespaces are selected; above it, one
/// cluster-wide LIST per resource filtered locally is cheaper.
const PER_NAMESPACE_MAX: usize = 10;

/// Objects travel to the archive writer in batches: one channel operation, and at most one
/// wake-up of the other side, per batch instead of per object. Sent one by one, the writer's
/// every receive woke the listing task waiting for room; at 100k objects those wake-ups were
/// about a sixth of the client's CPU (docs/benchmarks.md).
pub type Batch = Vec<Item>;

/// A LIST sends what it has when its batch holds this many objects or bytes of bodies, and at
/// the end of each page. The channel to the writer holds [`BATCHES_QUEUED`] batches; each LIST
/// waiting for room holds one more. (Tried by hand at 100k objects: 2 queued batches of 32 kept
/// the writer as busy as 8, with about 1 MiB less peak RSS.)
const BATCH_ITEMS: usize = 32;
const BATCH_BYTES: usize = 128 << 10;
pub const BATCHES_QUEUED: usize = 2;

/// The objects of the batches received on `rx`, one at a time; blocks (for a writer thread).
pub fn blocking_items(mut rx: mpsc::Receiver<Batch>) -> impl Iterator<Item = Item> {
    std::iter::from_fn(move || rx.blocking_recv()).flatten()
}

/// One object ready for the archive.
#[derive(Debug)]
pub struct Item {
    /// `<plural>[.<group>]`
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    pub body: Body,
    /// Listed in key order by the API server's own storage ([`lists_in_key_order`]), after every
    /// other object of its LIST: no other item has its path, so the archive writer need not keep
    /// the path to find out (collect has checked). False for anything else, which the writer checks.
    pub in_key_order: bool,
}

/// An object's body, or why it was not read.
#[derive(Debug)]
pub enum Body {
    /// The object's JSON as the server sent it, with `apiVersion` and `kind`, and its
    /// `metadata.resourceVersion`.
    Read { json: Vec<u8>, version: Option<String> },
    /// Not read: the server reports the `resourceVersion` the previous backup of the same scope
    /// recorded for it, so its body is the one that backup stored (incremental backups only).
    Unchanged(Recorded),
}

impl Item {
    /// The body as read; an error for an object that was not read (only an incremental backup
    /// continuing another may reference one).
    pub fn json(&self) -> std::io::Result<&[u8]> {
        match &self.body {
            Body::Read { json, .. } => Ok(json),
            Body::Unchanged(_) => Err(std::io::Error::other(format!(
                "{}/{} was not read: only an incremental backup can reference an unchanged object",
                self.resource, self.name
            ))),
        }
    }
}

/// What the previous backup of a scope recorded, by entry path: the objects a LIST of metadata
/// only may leave unread ([`Body::Unchanged`]).
pub type Previous = HashMap<String, Recorded>;

/// What the in-cluster controller's watches saw change since a backup of the scope began: for
/// each resource type whose watch ran without a gap since then, each object created, changed or
/// deleted, with its body as the watch last delivered it. A backup continuing that backup does not
/// list those types, nor read their objects: it takes from it the objects that did not change, and
/// from the watch the ones that did.
///
/// Apart from that, `empty` names the types of which the watches held no object in `namespace`
/// when the backup began: a backup of that one namespace, continuing another or not, does not list
/// them either.
#[derive(Clone, Debug, Default)]
pub struct Watched {
    /// The namespace whose backup this is for: `empty` says nothing of any other.
    pub namespace: String,
    /// Resource keys (with the apiVersion watched at) of which `namespace` held no object, as a
    /// watch that had listed and not restarted since saw it when the backup began.
    pub empty: HashMap<String, String>,
    /// The backup the changes are counted from: a run continuing another lists as usual.
    pub since: String,
    /// Resource keys (`<plural>[.<group>]`) whose every change since then is in `changed`, and the
    /// apiVersion they were watched at (a type served at another one now is listed).
    pub covered: HashMap<String, String>,
    /// Resource key -> `namespace/name` -> the object's last change.
    pub changed: HashMap<String, HashMap<String, Change>>,
    /// The bytes of the bodies `changed` holds (kept by [`Watched::note`]).
    bytes: usize,
}

/// The last change a watch saw of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Created or changed: its JSON, with `apiVersion` and `kind`, and its `resourceVersion`.
    Applied {
        json: Vec<u8>,
        version: Option<String>,
    },
    Deleted,
}

impl Change {
    /// The bytes of the body it holds.
    fn held_bytes(&self) -> usize {
        match self {
            Change::Applied { json, .. } => json.len(),
            Change::Deleted => 0,
        }
    }
}

impl Watched {
    /// Notes the last change of `namespace/name`, of type `resource`.
    pub fn note(&mut self, resource: &str, namespace: &str, name: &str, change: Change) {
        self.bytes += change.held_bytes();
        let changed = self.changed.entry(resource.to_string()).or_default();
        if let Some(replaced) = changed.insert(list::object_key(Some(namespace), name), change) {
            self.bytes -= replaced.held_bytes();
        }
    }

    /// The bytes of the bodies of the changes noted (each object's last change only).
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a LIST of `r` in one namespace can be left out for these changes.
    fn covers(&self, r: &Resource) -> bool {
        self.covered.get(&r.key) == Some(&r.ar.api_version)
    }

    /// Whether `r` held no object in `ns` as the watches saw it ([`Watched::empty`]).
    fn empty_in(&self, r: &Resource, ns: &str) -> bool {
        self.namespace == ns && self.empty.get(&r.key) == Some(&r.ar.api_version)
    }
}

/// Totals of a collection.
#[derive(Debug, Default)]
pub struct Report {
    pub counts: BTreeMap<String, u64>,
    pub namespaces: BTreeSet<String>,
    pub items: u64,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    /// LISTs attempted and how many failed; all failing means the backup failed.
    pub lists: u64,
    pub failed_lists: u64,
    /// LISTs left out for the changes a watch saw ([`Watched`]).
    pub lists_skipped: u64,
    /// LISTs left out because the watch of the type held no object in the namespace
    /// ([`Watched::empty`]).
    pub lists_empty: u64,
    /// `(namespace, name)` of the PersistentVolumeClaims backed up: whose data `--include-volumes` reads.
    pub claims: BTreeSet<(String, String)>,
}

/// What a listing task found that the dependency pass needs.
#[derive(Default)]
struct Found {
    /// `(plural, group)` of non-core resources that had objects (CRD candidates).
    custom: BTreeSet<(String, String)>,
    /// `spec.volumeName` of PVCs.
    volumes: BTreeSet<String>,
    /// `(namespace, name)` of PVCs.
    claims: BTreeSet<(String, String)>,
}

/// Lists everything the plan names and sends each object to `tx`. Stops early if `tx` is closed.
/// With `previous`, most resources are listed as metadata only and their unchanged objects sent
/// unread ([`list`]); with `watched` too, the types it covers are not listed at all in a
/// namespace's backup ([`Watched`]). With `empty`, the types it names as holding nothing in its
/// namespace are not listed there ([`Watched::empty`]), with or without `previous`.
#[allow(clippy::too_many_arguments)]
pub async fn collect(
    client: &Client,
    throttle: &Throttle,
    plan: &Plan,
    selector: Option<&str>,
    previous: Option<&Previous>,
    watched: Option<&Watched>,
    empty: Option<&Watched>,
    tx: mpsc::Sender<Batch>,
    observer: &dyn Observer,
) -> Report {
    let mut report = Report { warnings: plan.warnings.clone(), errors: plan.errors.clone(), ..Default::default() };
    let items = Arc::new(AtomicU64::new(0));

    // Namespace objects first: restore needs them, and they are already in hand.
    if send_namespaces(plan, &tx, &mut report).await.is_break() {
        return report;
    }
    let tasks = list_tasks(plan);
    observer.event(Event::Planned { resources: tasks.len() });

    let found = std::sync::Mutex::new(Found::default());
    // Changes seen by a watch stand in for a LIST only where nothing else would filter it.
    let watched = watched.filter(|_| previous.is_some() && selector.is_none());
    let lister =
        Lister { client, throttle, selector, scope: &plan.scope, previous, watched, empty, tx: &tx, found: &found };
    let outcomes: Vec<Vec<TaskOutcome>> = futures::stream::iter(tasks.into_iter().map(|task| {
        let (lister, items) = (&lister, items.clone());
        async move {
            let outcomes = list_resource(lister, &task).await;
            for o in outcomes.iter().filter(|o| o.result.is_ok()) {
                items.fetch_add(o.count, Ordering::Relaxed);
                let (resource, namespace) = (o.key.clone(), o.namespace.clone());
                observer.event(Event::Listed { resource, namespace, items: o.count });
            }
            outcomes
        }
    }))
    .buffer_unordered(throttle.concurrency)
    .collect()
    .await;

    for o in outcomes.into_iter().flatten() {
        if record(&mut report, o).is_break() {
            return report;
        }
    }

    let found = std::mem::take(&mut *found.lock().unwrap_or_else(|p| p.into_inner()));
    report.claims = found.claims.clone();
    if plan.dependencies_only {
        collect_dependencies(client, throttle, found, &tx, &mut report).await;
    }
    report
}

/// What every LIST of one collection shares: the client, the label selector, the namespaces to
/// keep, where objects go and what the dependency pass needs.
struct Lister<'a> {
    client: &'a Client,
    throttle: &'a Throttle,
    selector: Option<&'a str>,
    scope: &'a Scope,
    previous: Option<&'a Previous>,
    watched: Option<&'a Watched>,
    empty: Option<&'a Watched>,
    tx: &'a mpsc::Sender<Batch>,
    found: &'a std::sync::Mutex<Found>,
}

/// One LIST: a resource in one namespace or in all; `filter`: keep only the plan's namespaces.
struct Task {
    resource: Resource,
    namespace: Option<String>,
    filter: bool,
}

/// Sends the plan's Namespace objects and counts their namespaces. Breaks if `tx` is closed.
async fn send_namespaces(plan: &Plan, tx: &mpsc::Sender<Batch>, report: &mut Report) -> ControlFlow<()> {
    for ns in &plan.namespace_objects {
        let name = ns.name_any();
        if let Some(r) = &plan.namespaces_resource {
            if send(tx, r, ns.clone()).await.is_err() {
                return ControlFlow::Break(());
            }
            *report.counts.entry(r.key.clone()).or_default() += 1;
            report.items += 1;
        }
        report.namespaces.insert(name);
    }
    ControlFlow::Continue(())
}

/// The LISTs of a plan: per namespace when it names only a few, else one cluster-wide LIST per
/// namespaced resource filtered locally; one per cluster-scoped resource.
fn list_tasks(plan: &Plan) -> Vec<Task> {
    let task = |r: &Resource, namespace: Option<String>, filter| Task { resource: r.clone(), namespace, filter };
    let mut tasks: Vec<Task> = Vec::new();
    for r in &plan.namespaced {
        match &plan.scope {
            Scope::Only(set) if set.len() <= PER_NAMESPACE_MAX => {
                tasks.extend(set.iter().map(|ns| task(r, Some(ns.clone()), false)));
            }
            _ => tasks.push(task(r, None, true)),
        }
    }
    for r in &plan.cluster {
        tasks.push(task(r, None, false));
    }
    tasks
}

/// Adds one LIST's outcome to the report: the objects it sent (all archived, a failed LIST's too),
/// and its failure as a warning (the resource disappeared) or an error. Breaks if the archive side
/// stopped.
fn record(report: &mut Report, o: TaskOutcome) -> ControlFlow<()> {
    report.lists += 1;
    report.lists_skipped += u64::from(o.skipped);
    report.lists_empty += u64::from(o.empty);
    if o.count > 0 {
        *report.counts.entry(o.key.clone()).or_default() += o.count;
    }
    report.items += o.count;
    report.namespaces.extend(o.namespaces);
    let where_ = || o.namespace.as_ref().map(|n| format!(" in namespace {n:?}")).unwrap_or_default();
    let failed = |report: &mut Report, why: String| {
        report.failed_lists += 1;
        report.errors.push(format!("cannot list {}{}: {why}", o.key, where_()));
    };
    match o.result {
        Ok(()) => {}
        Err(TaskError::Closed) => return ControlFlow::Break(()),
        Err(TaskError::Kube(kube::Error::Api(s))) if s.code == 404 => {
            report.warnings.push(format!("{}{} disappeared during the backup", o.key, where_()));
        }
        Err(TaskError::Kube(e)) => failed(report, kube_message(&e)),
        Err(TaskError::OutOfOrder { key, last }) => failed(
            report,
            format!(
                "the API server listed {key:?} after {last:?}, out of the key order it lists its own resources in; the objects listed before it are in the backup, the rest are not"
            ),
        ),
    }
    ControlFlow::Continue(())
}

struct TaskOutcome {
    key: String,
    namespace: Option<String>,
    /// Objects sent to the archive, and their namespaces: whatever the result.
    count: u64,
    namespaces: BTreeSet<String>,
    /// Not listed: read as a watch's changes say ([`Watched`]).
    skipped: bool,
    /// Not listed: the watch held no object of it in the namespace ([`Watched::empty`]).
    empty: bool,
    result: Result<(), TaskError>,
}

enum TaskError {
    Kube(kube::Error),
    /// A resource [`lists_in_key_order`] listed `key` after `last`: the server broke the order
    /// that proves no object came twice, so the LIST stops there.
    OutOfOrder {
        key: String,
        last: String,
    },
    /// The archive side stopped; no point listing more.
    Closed,
}

/// Serializes one object for the archive, with its `apiVersion` and `kind` (LIST items lack them).
async fn send(tx: &mpsc::Sender<Batch>, r: &Resource, mut obj: DynamicObject) -> Result<(), ()> {
    obj.types = Some(TypeMeta { api_version: r.ar.api_version.clone(), kind: r.ar.kind.clone() });
    let json = serde_json::to_vec(&obj).map_err(|_| ())?;
    let body = Body::Read { json, version: obj.metadata.resource_version.clone() };
    let item = Item {
        resource: r.key.clone(),
        namespace: obj.metadata.namespace.clone(),
        name: obj.name_any(),
        body,
        in_key_order: false,
    };
    tx.send(vec![item]).await.map_err(|_| ())
}
