//! Discovery, filters and parallel paged LIST -> a stream of objects for the archive.
//!
//! Memory stays flat: each page is serialized and handed to the archive writer through a bounded
//! channel before the next page is requested.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::{Request, TypeMeta};
use kube::{Client, ResourceExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::error::kube_message;
use crate::filter::{ResourceNames, Selection, is_ephemeral_namespace, resource_key};
use crate::kube_client::Throttle;
use crate::progress::{Event, Observer};
use crate::{Error, Result};

/// Objects per LIST page.
pub const PAGE_SIZE: u32 = 500;
/// Per-namespace LISTs are used when at most this many namespaces are selected; above it, one
/// cluster-wide LIST per resource filtered locally is cheaper.
const PER_NAMESPACE_MAX: usize = 10;

/// One listable resource type as the server serves it (preferred version).
#[derive(Clone, Debug)]
pub struct Resource {
    pub ar: ApiResource,
    pub namespaced: bool,
    /// `<plural>[.<group>]`
    pub key: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub verbs: Vec<String>,
}

impl Resource {
    pub fn names(&self) -> ResourceNames<'_> {
        ResourceNames {
            plural: &self.ar.plural,
            group: &self.ar.group,
            kind: &self.ar.kind,
            singular: &self.singular,
            short_names: &self.short_names,
        }
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// What the server serves, and the API groups it could not describe.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    pub resources: Vec<Resource>,
    /// API groups whose discovery failed (an aggregated API that is down, say).
    pub unavailable: Vec<UnavailableGroup>,
}

/// An API group the server lists but could not describe in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnavailableGroup {
    pub group: String,
    /// The preferred version that was asked for.
    pub version: String,
    /// The last answer, e.g. `503: service unavailable`, and for how long it was retried.
    pub reason: String,
}

impl UnavailableGroup {
    /// `<group>/<version>`, e.g. `metrics.k8s.io/v1beta1`.
    pub fn group_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

impl Discovered {
    pub fn find(&self, plural: &str, group: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.ar.plural == plural && r.ar.group == group)
    }

    pub fn find_key(&self, key: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.key == key)
    }

    /// The discovery failure of `group`, if it failed.
    pub fn unavailable_group(&self, group: &str) -> Option<&UnavailableGroup> {
        self.unavailable.iter().find(|u| u.group == group)
    }
}

/// Discovers every resource type at its group's preferred version. A group that fails is reported,
/// not fatal, after at most `throttle.discovery_timeout`; the core group failing is fatal (the
/// server is unusable).
pub async fn discover(client: &Client, throttle: &Throttle) -> Result<Discovered> {
    let core_versions = throttle
        .call(|| client.list_core_api_versions())
        .await
        .map_err(|e| Error::kube("discovering the core API", e))?;
    let core_version = core_versions.versions.first().cloned().unwrap_or_else(|| "v1".to_string());
    let groups =
        throttle.call(|| client.list_api_groups()).await.map_err(|e| Error::kube("discovering API groups", e))?;

    let mut versions: Vec<(String, String)> = vec![(String::new(), core_version)];
    for g in groups.groups {
        let version = g
            .preferred_version
            .as_ref()
            .map(|v| v.version.clone())
            .or_else(|| g.versions.first().map(|v| v.version.clone()));
        if let Some(v) = version {
            versions.push((g.name, v));
        }
    }

    let results: Vec<_> = futures::stream::iter(versions.into_iter().map(|(group, version)| async move {
        let gv = if group.is_empty() { version.clone() } else { format!("{group}/{version}") };
        let list = if group.is_empty() {
            throttle.call(|| client.list_core_api_resources(&version)).await.map_err(|e| kube_message(&e))
        } else if never_backed_up_group(&group).is_some() {
            // Asked once, never retried: nothing of it is backed up or restored, so a metrics
            // adapter that is down costs no time.
            client.list_api_group_resources(&gv).await.map_err(|e| kube_message(&e))
        } else {
            discover_group(client, throttle, &gv).await
        };
        (group, version, gv, list)
    }))
    .buffer_unordered(throttle.concurrency)
    .collect()
    .await;

    let mut out = Discovered::default();
    for (group, version, gv, list) in results {
        let list = match list {
            Ok(l) => l,
            Err(reason) => {
                if group.is_empty() {
                    return Err(Error::Other(format!("discovering the core API: {reason}")));
                }
                out.unavailable.push(UnavailableGroup { group, version, reason });
                continue;
            }
        };
        for r in list.resources {
            if r.name.contains('/') {
                continue; // subresource
            }
            let ar = ApiResource {
                group: group.clone(),
                version: version.clone(),
                api_version: gv.clone(),
                kind: r.kind.clone(),
                plural: r.name.clone(),
            };
            out.resources.push(Resource {
                key: resource_key(&r.name, &group),
                ar,
                namespaced: r.namespaced,
                singular: r.singular_name.clone(),
                short_names: r.short_names.clone().unwrap_or_default(),
                verbs: r.verbs.clone(),
            });
        }
    }
    // The same objects served under a legacy group (ingresses.extensions in 1.14..1.21) are listed once.
    let served: BTreeSet<(String, String)> = out
        .resources
        .iter()
        .filter(|r| r.ar.group != "extensions")
        .map(|r| (r.ar.plural.clone(), r.ar.kind.clone()))
        .collect();
    out.resources
        .retain(|r| !(r.ar.group == "extensions" && served.contains(&(r.ar.plural.clone(), r.ar.kind.clone()))));
    out.resources.sort_by(|a, b| a.key.cmp(&b.key));
    out.unavailable.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

/// One API group's resources, retried like every request but for at most
/// `throttle.discovery_timeout`: an aggregated API whose server is down answers 503 every time.
/// The error is the last answer and how long it was retried.
async fn discover_group(
    client: &Client,
    throttle: &Throttle,
    gv: &str,
) -> std::result::Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList, String> {
    let last: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let attempts = throttle.call(|| {
        let last = &last;
        async move {
            let result = client.list_api_group_resources(gv).await;
            if let Err(e) = &result {
                *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(kube_message(e));
            }
            result
        }
    });
    let limit = throttle.discovery_timeout;
    match tokio::time::timeout(limit, attempts).await {
        Ok(Ok(list)) => Ok(list),
        Ok(Err(e)) => Err(kube_message(&e)),
        Err(_) => {
            let secs = limit.as_secs_f64();
            Err(match last.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(m) => format!("{m}, still failing after {secs}s of retries (--discovery-timeout)"),
                None => format!("no answer within {secs}s (--discovery-timeout)"),
            })
        }
    }
}

/// API groups all of whose resources are never backed up: their discovery failing loses nothing.
/// Documented in `docs/backup-format.md`.
pub fn never_backed_up_group(group: &str) -> Option<&'static str> {
    match group {
        "metrics.k8s.io" | "custom.metrics.k8s.io" | "external.metrics.k8s.io" => Some("live measurements"),
        _ => None,
    }
}

/// API groups the API server itself serves: never CustomResourceDefinitions.
const BUILT_IN_GROUPS: &[&str] = &[
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "extensions",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "resource.k8s.io",
    "storagemigration.k8s.io",
];

/// Resources never backed up, and why. Documented in `docs/backup-format.md`.
pub fn never_backed_up(key: &str) -> Option<&'static str> {
    Some(match key {
        "events" | "events.events.k8s.io" => "events record the past, they are not state",
        "nodes" | "csinodes.storage.k8s.io" | "volumeattachments.storage.k8s.io" => "bound to this cluster's machines",
        "componentstatuses" => "computed by the API server",
        "certificatesigningrequests.certificates.k8s.io" => "one-time requests bound to the requester's key",
        "bindings" | "tokenreviews.authentication.k8s.io" => "not stored objects",
        _ => return key.split_once('.').and_then(|(_, group)| never_backed_up_group(group)),
    })
}

/// One object ready for the archive.
#[derive(Debug)]
pub struct Item {
    /// `<plural>[.<group>]`
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The object's JSON as the server sent it, with `apiVersion` and `kind`.
    pub json: Vec<u8>,
}

/// Which namespaces' objects are included.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every namespace except these (excluded by filter, or ephemeral).
    All { skipped: BTreeSet<String> },
    /// Only these.
    Only(BTreeSet<String>),
}

impl Scope {
    pub fn includes(&self, ns: &str) -> bool {
        match self {
            Scope::All { skipped } => !skipped.contains(ns),
            Scope::Only(set) => set.contains(ns),
        }
    }
}

/// The resolved plan of a collection.
#[derive(Debug)]
pub struct Plan {
    pub scope: Scope,
    /// Namespaced resource types to list.
    pub namespaced: Vec<Resource>,
    /// Cluster-scoped resource types listed wholesale.
    pub cluster: Vec<Resource>,
    /// Namespace objects of the included namespaces.
    pub namespace_objects: Vec<DynamicObject>,
    pub namespaces_resource: Option<Resource>,
    /// Cluster-scoped objects the included namespaces need (CRDs, bound PVs) are added after listing.
    pub dependencies_only: bool,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// Resolves filters against the server: which namespaces, which resource types.
pub async fn plan(
    client: &Client,
    throttle: &Throttle,
    discovered: &Discovered,
    selection: &Selection,
) -> Result<Plan> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for u in &discovered.unavailable {
        if let Some(why) = never_backed_up_group(&u.group) {
            // Nothing of this group would be backed up anyway (a metrics adapter that is down).
            tracing::debug!(group = %u.group_version(), reason = %u.reason, "API group unavailable; its resources are never backed up ({why})");
            continue;
        }
        errors.push(format!(
            "API group {} is unavailable, its resources are not included: {}",
            u.group_version(),
            u.reason
        ));
    }

    // Every include pattern must name something the server serves: a typo must not yield an empty backup.
    for p in &selection.include_resources {
        if !discovered.resources.iter().any(|r| p.matches(&r.names())) {
            return Err(Error::invalid(
                "--include-resources",
                p.as_str(),
                "matches no resource type the server serves (see `kubectl api-resources`)",
            ));
        }
    }
    for p in &selection.exclude_resources {
        if !discovered.resources.iter().any(|r| p.matches(&r.names())) {
            warnings.push(format!("--exclude-resources {:?} matches no resource type the server serves", p.as_str()));
        }
    }

    let namespaces_resource = discovered.find("namespaces", "").cloned();
    let (scope, namespace_objects) =
        resolve_namespaces(client, throttle, selection, &mut errors, &mut warnings).await?;
    let include_ns_objects =
        namespaces_resource.as_ref().is_some_and(|r| !selection.excludes_resource_explicitly(&r.names()));

    let mut namespaced = Vec::new();
    let mut cluster = Vec::new();
    for r in &discovered.resources {
        if !r.supports("list") || never_backed_up(&r.key).is_some() || r.key == "namespaces" {
            continue;
        }
        if !selection.includes_resource(&r.names()) {
            continue;
        }
        if r.namespaced {
            namespaced.push(r.clone());
        } else if selection.all_cluster_resources() {
            cluster.push(r.clone());
        }
    }
    let dependencies_only =
        !selection.all_cluster_resources() && selection.cluster_resources != crate::model::ClusterResources::False;
    Ok(Plan {
        scope,
        namespaced,
        cluster,
        namespace_objects: if include_ns_objects { namespace_objects } else { Vec::new() },
        namespaces_resource,
        dependencies_only,
        warnings,
        errors,
    })
}

async fn resolve_namespaces(
    client: &Client,
    throttle: &Throttle,
    selection: &Selection,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(Scope, Vec<DynamicObject>)> {
    let ns_ar = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Namespace".into(),
        plural: "namespaces".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ns_ar);

    if let Some(names) = selection.literal_namespaces() {
        // Named namespaces need no cluster-wide permission: GET each one.
        let mut objects = Vec::new();
        let mut set = BTreeSet::new();
        for name in names {
            match throttle.call(|| api.get(&name)).await {
                Ok(obj) => {
                    set.insert(name);
                    objects.push(obj);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    errors.push(format!("namespace {name:?} not found"));
                }
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    warnings.push(format!(
                        "cannot read Namespace {name:?} (forbidden), its objects are backed up without it"
                    ));
                    set.insert(name);
                }
                Err(e) => return Err(Error::kube(format!("reading namespace {name:?}"), e)),
            }
        }
        return Ok((Scope::Only(set), objects));
    }

    let list = list_all(throttle, &api, None).await.map_err(|e| {
        let hint = if error_is_forbidden(&e) {
            " (to back up only namespaces you can access, name them: -n NAMESPACE)"
        } else {
            ""
        };
        Error::Other(format!("cannot list namespaces: {}{hint}", kube_message(&e)))
    })?;
    let mut objects = Vec::new();
    let mut included = BTreeSet::new();
    let mut skipped = BTreeSet::new();
    for ns in list {
        let name = ns.name_any();
        if selection.includes_namespace(&name, is_ephemeral_namespace(ns.labels(), ns.annotations())) {
            included.insert(name);
            objects.push(ns);
        } else {
            skipped.insert(name);
        }
    }
    for p in &selection.include_namespaces {
        if !included.iter().any(|n| p.matches(n)) {
            warnings.push(format!("--include-namespaces {:?} matches no namespace", p.as_str()));
        }
    }
    let scope = if selection.all_namespaces() { Scope::All { skipped } } else { Scope::Only(included) };
    Ok((scope, objects))
}

fn error_is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// A full paged LIST held in memory; only for small sets (namespaces, CRDs).
async fn list_all(
    throttle: &Throttle,
    api: &Api<DynamicObject>,
    selector: Option<&str>,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE_SIZE);
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = throttle.call(|| api.list(&lp)).await?;
        out.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
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
}

/// What a listing task found that the dependency pass needs.
#[derive(Default)]
struct Found {
    /// `(plural, group)` of non-core resources that had objects (CRD candidates).
    custom: BTreeSet<(String, String)>,
    /// `spec.volumeName` of PVCs.
    volumes: BTreeSet<String>,
}

/// Lists everything the plan names and sends each object to `tx`. Stops early if `tx` is closed.
pub async fn collect(
    client: &Client,
    throttle: &Throttle,
    plan: &Plan,
    selector: Option<&str>,
    tx: mpsc::Sender<Item>,
    observer: &dyn Observer,
) -> Report {
    let mut report = Report { warnings: plan.warnings.clone(), errors: plan.errors.clone(), ..Default::default() };
    let items = Arc::new(AtomicU64::new(0));

    // Namespace objects first: restore needs them, and they are already in hand.
    for ns in &plan.namespace_objects {
        let name = ns.name_any();
        if let Some(r) = &plan.namespaces_resource {
            if send(&tx, r, ns.clone()).await.is_err() {
                return report;
            }
            *report.counts.entry(r.key.clone()).or_default() += 1;
            report.items += 1;
        }
        report.namespaces.insert(name);
    }

    let mut tasks: Vec<(Resource, Option<String>, bool)> = Vec::new();
    for r in &plan.namespaced {
        match &plan.scope {
            Scope::Only(set) if set.len() <= PER_NAMESPACE_MAX => {
                tasks.extend(set.iter().map(|ns| (r.clone(), Some(ns.clone()), false)));
            }
            _ => tasks.push((r.clone(), None, true)),
        }
    }
    for r in &plan.cluster {
        tasks.push((r.clone(), None, false));
    }
    observer.event(Event::Planned { resources: tasks.len() });

    let found = Arc::new(std::sync::Mutex::new(Found::default()));
    let outcomes: Vec<TaskOutcome> = futures::stream::iter(tasks.into_iter().map(|(r, ns, filter)| {
        let tx = tx.clone();
        let found = found.clone();
        let items = items.clone();
        async move {
            let outcome = list_resource(
                client,
                throttle,
                &r,
                ns.as_deref(),
                filter.then_some(&plan.scope),
                selector,
                &tx,
                &found,
            )
            .await;
            if let Ok((n, _)) = &outcome.result {
                items.fetch_add(*n, Ordering::Relaxed);
                observer.event(Event::Listed { resource: r.key.clone(), namespace: ns.clone(), items: *n });
            }
            outcome
        }
    }))
    .buffer_unordered(throttle.concurrency)
    .collect()
    .await;

    for o in outcomes {
        report.lists += 1;
        match o.result {
            Ok((n, per_ns)) => {
                if n > 0 {
                    *report.counts.entry(o.key.clone()).or_default() += n;
                }
                report.items += n;
                report.namespaces.extend(per_ns);
            }
            Err(TaskError::Closed) => return report,
            Err(TaskError::Kube(e)) => {
                let where_ = o.namespace.map(|n| format!(" in namespace {n:?}")).unwrap_or_default();
                match &e {
                    kube::Error::Api(s) if s.code == 404 => {
                        report.warnings.push(format!("{}{where_} disappeared during the backup", o.key));
                    }
                    _ => {
                        report.failed_lists += 1;
                        report.errors.push(format!("cannot list {}{where_}: {}", o.key, kube_message(&e)));
                    }
                }
            }
        }
    }

    if plan.dependencies_only {
        let found = std::mem::take(&mut *found.lock().unwrap_or_else(|p| p.into_inner()));
        collect_dependencies(client, throttle, found, &tx, &mut report).await;
    }
    report
}

struct TaskOutcome {
    key: String,
    namespace: Option<String>,
    result: Result<(u64, BTreeSet<String>), TaskError>,
}

enum TaskError {
    Kube(kube::Error),
    /// The archive side stopped; no point listing more.
    Closed,
}

#[allow(clippy::too_many_arguments)]
async fn list_resource(
    client: &Client,
    throttle: &Throttle,
    r: &Resource,
    namespace: Option<&str>,
    filter: Option<&Scope>,
    selector: Option<&str>,
    tx: &mpsc::Sender<Item>,
    found: &std::sync::Mutex<Found>,
) -> TaskOutcome {
    let scope = if r.namespaced { namespace } else { None };
    let request = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, scope));
    let outcome = |result| TaskOutcome { key: r.key.clone(), namespace: namespace.map(str::to_string), result };
    let mut count = 0u64;
    let mut namespaces = BTreeSet::new();
    let mut token: Option<String> = None;
    // Items come in etcd key order; after a 410 (continue token expired) we relist and skip
    // everything up to the last key already written, so nothing is archived twice.
    let mut last_key: Option<String> = None;
    let mut relists = 0;
    loop {
        let mut lp = ListParams::default().limit(PAGE_SIZE);
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let body = throttle
            .call(|| {
                let req = request.list(&lp).map_err(kube::Error::BuildRequest);
                async move { client.request_text(req?).await }
            })
            .await;
        // Pages are taken apart only as far as filtering needs; each item's JSON goes to the
        // archive as the server sent it (no object tree is built and serialized again).
        let page = match body.and_then(|b| RawPage::parse(b).map_err(kube::Error::SerdeError)) {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 410 && token.is_some() && relists < 3 => {
                relists += 1;
                tracing::info!(resource = %r.key, "continue token expired (410 Gone); listing again from the start");
                token = None;
                continue;
            }
            Err(e) => return outcome(Err(TaskError::Kube(e))),
        };
        let mut had_objects = false;
        let mut volumes = Vec::new();
        for raw in page.items() {
            let obj: RawItem<'_> = match serde_json::from_str(raw) {
                Ok(o) => o,
                Err(e) => return outcome(Err(TaskError::Kube(kube::Error::SerdeError(e)))),
            };
            let ns = obj.metadata.namespace.as_deref().map(str::to_string);
            let name = obj.metadata.name.as_deref().unwrap_or_default();
            let key = match &ns {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
            if last_key.as_ref().is_some_and(|last| key.as_str() <= last.as_str()) {
                continue;
            }
            last_key = Some(key);
            if let (Some(scope), Some(ns)) = (filter, &ns)
                && !scope.includes(ns)
            {
                continue;
            }
            if never_backed_up_object(&r.key, &obj) {
                continue;
            }
            if r.key == "persistentvolumeclaims"
                && let Some(v) = obj.spec().volume_name
            {
                volumes.push(v.to_string());
            }
            had_objects = true;
            let item = Item {
                resource: r.key.clone(),
                namespace: ns.clone(),
                name: name.to_string(),
                json: with_type_meta(raw, &obj, &r.ar),
            };
            if let Some(ns) = ns {
                namespaces.insert(ns);
            }
            if tx.send(item).await.is_err() {
                return outcome(Err(TaskError::Closed));
            }
            count += 1;
        }
        if had_objects || !volumes.is_empty() {
            let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
            if had_objects && !r.ar.group.is_empty() {
                f.custom.insert((r.ar.plural.clone(), r.ar.group.clone()));
            }
            f.volumes.extend(volumes);
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return outcome(Ok((count, namespaces)));
        }
    }
}

/// A LIST response body with its items left unparsed.
struct RawPage {
    body: String,
    items: Vec<std::ops::Range<usize>>,
    metadata: kube::core::ListMeta,
}

impl RawPage {
    fn parse(body: String) -> serde_json::Result<Self> {
        #[derive(serde::Deserialize)]
        struct Borrowed<'a> {
            #[serde(default)]
            metadata: kube::core::ListMeta,
            #[serde(borrow, default)]
            items: Option<Vec<&'a RawValue>>,
        }
        let parsed: Borrowed<'_> = serde_json::from_str(&body)?;
        // Each item as a range of the body, so the body can move into the page.
        let base = body.as_ptr() as usize;
        let items = parsed
            .items
            .unwrap_or_default()
            .iter()
            .map(|raw| {
                let start = raw.get().as_ptr() as usize - base;
                start..start + raw.get().len()
            })
            .collect();
        Ok(RawPage { metadata: parsed.metadata, items, body })
    }

    /// Each item's JSON text (the parser cut the ranges: each is one valid JSON value).
    fn items(&self) -> impl Iterator<Item = &str> + '_ {
        self.items.iter().map(|r| &self.body[r.clone()])
    }
}

/// What collect reads of an object; everything else is skipped by the parser.
#[derive(serde::Deserialize)]
struct RawItem<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: RawMeta<'a>,
    /// Left unparsed: only a few resources' specs are read, and a custom resource's may be anything.
    #[serde(borrow, default)]
    spec: Option<&'a RawValue>,
}

#[derive(serde::Deserialize, Default)]
struct RawMeta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
}

/// The parts of a PersistentVolumeClaim's or an APIService's spec that collect reads.
#[derive(serde::Deserialize, Default)]
struct RawSpec<'a> {
    #[serde(rename = "volumeName", borrow, default)]
    volume_name: Option<Cow<'a, str>>,
    /// Present (non-null) on APIServices served by an aggregated server.
    #[serde(default)]
    service: Option<serde::de::IgnoredAny>,
}

impl<'a> RawItem<'a> {
    fn spec(&self) -> RawSpec<'a> {
        self.spec.and_then(|s| serde_json::from_str(s.get()).ok()).unwrap_or_default()
    }
}

/// Individual objects never backed up (documented in `docs/backup-format.md`).
fn never_backed_up_object(key: &str, obj: &RawItem<'_>) -> bool {
    match key {
        // Node heartbeats.
        "leases.coordination.k8s.io" => obj.metadata.namespace.as_deref() == Some("kube-node-lease"),
        // Built-in API groups registered by the API server itself ("Local" services).
        "apiservices.apiregistration.k8s.io" => obj.spec().service.is_none(),
        _ => false,
    }
}

/// The item's JSON with `apiVersion` and `kind` first: typed LISTs leave them out of their items.
fn with_type_meta(raw: &str, obj: &RawItem<'_>, ar: &ApiResource) -> Vec<u8> {
    if obj.api_version.is_some() && obj.kind.is_some() {
        return raw.as_bytes().to_vec();
    }
    let head = serde_json::json!({"apiVersion": ar.api_version, "kind": ar.kind}).to_string();
    let rest = raw.trim_start().strip_prefix('{').unwrap_or(raw).trim_start();
    let mut out = Vec::with_capacity(head.len() + raw.len() + 1);
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]); // without the closing brace
    if !rest.starts_with('}') {
        out.push(b',');
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// Serializes one object for the archive, with its `apiVersion` and `kind` (LIST items lack them).
async fn send(tx: &mpsc::Sender<Item>, r: &Resource, mut obj: DynamicObject) -> Result<(), ()> {
    obj.types = Some(TypeMeta { api_version: r.ar.api_version.clone(), kind: r.ar.kind.clone() });
    let json = serde_json::to_vec(&obj).map_err(|_| ())?;
    let item = Item { resource: r.key.clone(), namespace: obj.metadata.namespace.clone(), name: obj.name_any(), json };
    tx.send(item).await.map_err(|_| ())
}

/// For a namespace-scoped backup: the CRDs of its custom resources and the PVs bound to its PVCs.
async fn collect_dependencies(
    client: &Client,
    throttle: &Throttle,
    found: Found,
    tx: &mpsc::Sender<Item>,
    report: &mut Report,
) {
    let crd_ar = ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    };
    let pv_ar = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "PersistentVolume".into(),
        plural: "persistentvolumes".into(),
    };
    let crd_res = Resource {
        key: resource_key(&crd_ar.plural, &crd_ar.group),
        ar: crd_ar.clone(),
        namespaced: false,
        singular: String::new(),
        short_names: vec![],
        verbs: vec![],
    };
    let pv_res = Resource {
        key: "persistentvolumes".into(),
        ar: pv_ar.clone(),
        namespaced: false,
        singular: String::new(),
        short_names: vec![],
        verbs: vec![],
    };

    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    let mut seen: HashMap<String, ()> = HashMap::new();
    for (plural, group) in found.custom {
        if BUILT_IN_GROUPS.contains(&group.as_str()) {
            continue;
        }
        let name = format!("{plural}.{group}");
        if seen.insert(name.clone(), ()).is_some() {
            continue;
        }
        match throttle.call(|| crds.get(&name)).await {
            Ok(crd) => {
                if send(tx, &crd_res, crd).await.is_err() {
                    return;
                }
                *report.counts.entry(crd_res.key.clone()).or_default() += 1;
                report.items += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {} // an aggregated API, not a CRD
            Err(kube::Error::Api(s)) if s.code == 403 => report.warnings.push(format!(
                "cannot read CustomResourceDefinition {name:?} (forbidden): its custom resources are backed up without it, so restore them where it is installed"
            )),
            Err(e) => {
                report.errors.push(format!("cannot read CustomResourceDefinition {name:?}: {}", kube_message(&e)))
            }
        }
    }
    let pvs: Api<DynamicObject> = Api::all_with(client.clone(), &pv_ar);
    for name in found.volumes {
        match throttle.call(|| pvs.get(&name)).await {
            Ok(pv) => {
                if send(tx, &pv_res, pv).await.is_err() {
                    return;
                }
                *report.counts.entry(pv_res.key.clone()).or_default() += 1;
                report.items += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                report.warnings.push(format!("PersistentVolume {name:?} bound to a backed-up claim no longer exists"))
            }
            Err(e) => report.errors.push(format!("cannot read PersistentVolume {name:?}: {}", kube_message(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar(api_version: &str, kind: &str) -> ApiResource {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
        }
    }

    #[test]
    fn metrics_groups_are_never_backed_up_whatever_their_resources() {
        for key in ["pods.metrics.k8s.io", "nodes.metrics.k8s.io", "anything.custom.metrics.k8s.io"] {
            assert_eq!(never_backed_up(key), Some("live measurements"), "{key}");
        }
        assert_eq!(never_backed_up_group("external.metrics.k8s.io"), Some("live measurements"));
        assert_eq!(never_backed_up_group("stuff.example.org"), None);
        assert_eq!(never_backed_up("gizmos.stuff.example.org"), None);
        assert_eq!(never_backed_up("configmaps"), None);
        assert!(never_backed_up("events").is_some());
    }

    #[test]
    fn pages_are_cut_into_items_as_sent() {
        let body = r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"abc"},
            "items":[{"metadata":{"name":"a","namespace":"n"},"data":{"k":"v \"q\""}}, {"metadata":{"name":"b"}}]}"#;
        let page = RawPage::parse(body.to_string()).unwrap();
        assert_eq!(page.metadata.continue_.as_deref(), Some("abc"));
        let items: Vec<&str> = page.items().collect();
        assert_eq!(
            items,
            [r#"{"metadata":{"name":"a","namespace":"n"},"data":{"k":"v \"q\""}}"#, r#"{"metadata":{"name":"b"}}"#]
        );
        let empty = RawPage::parse(r#"{"metadata":{},"items":null}"#.into()).unwrap();
        assert_eq!(empty.items().count(), 0);
        assert!(RawPage::parse("{\"items\":[".into()).is_err());
    }

    #[test]
    fn typed_items_get_their_type_and_stay_valid_json() {
        let raw = r#"{"metadata":{"name":"a","namespace":"n"},"data":{"k":"v"}}"#;
        let item: RawItem<'_> = serde_json::from_str(raw).unwrap();
        let json = with_type_meta(raw, &item, &ar("v1", "ConfigMap"));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["data"]["k"], "v");
        // Custom resources' items carry their type already: left exactly as sent.
        let cr = r#"{"apiVersion":"example.org/v1","kind":"Widget","metadata":{"name":"w"},"spec":"odd"}"#;
        let item: RawItem<'_> = serde_json::from_str(cr).unwrap();
        assert_eq!(with_type_meta(cr, &item, &ar("example.org/v1", "Widget")), cr.as_bytes());
        // An object with no fields at all still becomes valid JSON.
        let item: RawItem<'_> = serde_json::from_str("{}").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&with_type_meta("{}", &item, &ar("v1", "X"))).unwrap();
        assert_eq!(v, serde_json::json!({"apiVersion": "v1", "kind": "X"}));
    }

    #[test]
    fn objects_never_backed_up_are_recognised_without_decoding_them() {
        let parse = |s: &'static str| serde_json::from_str::<RawItem<'static>>(s).unwrap();
        let lease = parse(r#"{"metadata":{"name":"node1","namespace":"kube-node-lease"}}"#);
        assert!(never_backed_up_object("leases.coordination.k8s.io", &lease));
        let lease = parse(r#"{"metadata":{"name":"lock","namespace":"app"}}"#);
        assert!(!never_backed_up_object("leases.coordination.k8s.io", &lease));
        let local = parse(r#"{"metadata":{"name":"v1.apps"},"spec":{"service":null,"group":"apps"}}"#);
        assert!(never_backed_up_object("apiservices.apiregistration.k8s.io", &local));
        let aggregated = parse(r#"{"metadata":{"name":"v1beta1.metrics.k8s.io"},"spec":{"service":{"name":"m"}}}"#);
        assert!(!never_backed_up_object("apiservices.apiregistration.k8s.io", &aggregated));
        let pvc = parse(r#"{"metadata":{"name":"data"},"spec":{"volumeName":"pv-1"}}"#);
        assert_eq!(pvc.spec().volume_name.as_deref(), Some("pv-1"));
        // A custom resource whose spec is not an object is still collected.
        let odd = parse(r#"{"metadata":{"name":"x"},"spec":[1,2]}"#);
        assert_eq!(odd.spec().volume_name, None);
    }
}
