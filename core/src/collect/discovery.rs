//! What the server serves: every resource type at its group's preferred version, each group
//! bounded by `--discovery-timeout`, and the resources never backed up.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;

use super::*;

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

    /// The discovery failure of `group`, if it failed.
    pub fn unavailable_group(&self, group: &str) -> Option<&UnavailableGroup> {
        self.unavailable.iter().find(|u| u.group == group)
    }
}

/// Discovers every resource type at its group's preferred version. A group that fails is reported,
/// not fatal, after at most `throttle.discovery_timeout`; the core group failing is fatal (the
/// server is unusable).
pub async fn discover(client: &Client, throttle: &Throttle) -> Result<Discovered> {
    let versions = preferred_versions(client, throttle).await?;
    let results: Vec<_> = futures::stream::iter(
        versions.into_iter().map(|(group, version)| discover_version(client, throttle, group, version)),
    )
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
        out.resources.extend(resources_of(&group, &version, &gv, list));
    }
    drop_legacy_duplicates(&mut out.resources);
    out.resources.sort_by(|a, b| a.key.cmp(&b.key));
    out.unavailable.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

/// Discovery shared by the backups of one long-running process (the in-cluster controller, whose
/// continuous backups would otherwise each ask the server for every API group again): one
/// discovery is reused for as long as the process's watches of CustomResourceDefinitions and
/// APIServices, the objects that change what the server serves, see no change
/// ([`SharedDiscovery::changed`]), and for at most `max_age`. It is not reused while those watches
/// are not known to be running ([`SharedDiscovery::watching`]), nor when a group could not be
/// discovered. A discovery begun less than [`SharedDiscovery::SETTLE`] after a change is not kept
/// either: the server serves a new CRD's resources shortly after the CRD is Established, not at
/// once.
pub struct SharedDiscovery {
    cached: tokio::sync::Mutex<Option<(Arc<Discovered>, std::time::Instant, u64)>>,
    /// Bumped by every change the watches see: a discovery made before it is not reused.
    generation: AtomicU64,
    watching: std::sync::atomic::AtomicBool,
    last_change: std::sync::Mutex<Option<std::time::Instant>>,
    max_age: std::time::Duration,
}

impl SharedDiscovery {
    pub fn new(max_age: std::time::Duration) -> Self {
        SharedDiscovery {
            cached: Default::default(),
            generation: AtomicU64::new(0),
            watching: Default::default(),
            last_change: Default::default(),
            max_age,
        }
    }

    pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

    /// What the server serves may have changed: the next backup discovers it again.
    pub fn changed(&self) {
        *self.last_change.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every watch that reports changes is running (it has listed since it last failed):
    /// only then is a discovery reused. Either way counts as a change.
    pub fn watching(&self, running: bool) {
        self.watching.store(running, Ordering::SeqCst);
        self.changed();
    }

    /// The discovery to use now: the one held, if still good, else one made by `discover` (one
    /// at a time when it is to be kept: backups that ask meanwhile wait for it rather than each
    /// asking the server).
    pub async fn get<F>(&self, discover: F) -> Result<Arc<Discovered>>
    where
        F: std::future::Future<Output = Result<Discovered>>,
    {
        let mut cached = self.cached.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        let trusted = self.watching.load(Ordering::SeqCst);
        if let Some((d, at, made)) = cached.as_ref()
            && trusted
            && *made == generation
            && at.elapsed() < self.max_age
        {
            return Ok(d.clone());
        }
        let settled =
            (self.last_change.lock().unwrap_or_else(|p| p.into_inner())).is_none_or(|at| at.elapsed() >= Self::SETTLE);
        if !(trusted && settled) {
            // Not to be kept: the others need not wait for it.
            *cached = None;
            drop(cached);
            return discover.await.map(Arc::new);
        }
        let d = Arc::new(discover.await?);
        *cached = Some((d.clone(), std::time::Instant::now(), generation)).filter(|_| d.unavailable.is_empty());
        Ok(d)
    }
}

/// `(group, preferred version)` of the core API (group `""`) and of every API group.
async fn preferred_versions(client: &Client, throttle: &Throttle) -> Result<Vec<(String, String)>> {
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
    Ok(versions)
}

/// One group version's resource list, with its group, version and `<group>/<version>`.
async fn discover_version(
    client: &Client,
    throttle: &Throttle,
    group: String,
    version: String,
) -> (String, String, String, std::result::Result<APIResourceList, String>) {
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
}

/// The resource types of one group version's list, subresources left out.
fn resources_of<'a>(
    group: &'a str,
    version: &'a str,
    gv: &'a str,
    list: APIResourceList,
) -> impl Iterator<Item = Resource> + 'a {
    list.resources.into_iter().filter(|r| !r.name.contains('/')).map(move |r| Resource {
        key: resource_key(&r.name, group),
        ar: ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: gv.to_string(),
            kind: r.kind,
            plural: r.name,
        },
        namespaced: r.namespaced,
        singular: r.singular_name,
        short_names: r.short_names.unwrap_or_default(),
        verbs: r.verbs,
    })
}

/// The same objects served under a legacy group (ingresses.extensions in 1.14..1.21) are listed once.
fn drop_legacy_duplicates(resources: &mut Vec<Resource>) {
    let served: BTreeSet<(String, String)> = resources
        .iter()
        .filter(|r| r.ar.group != "extensions")
        .map(|r| (r.ar.plural.clone(), r.ar.kind.clone()))
        .collect();
    resources.retain(|r| !(r.ar.group == "extensions" && served.contains(&(r.ar.plural.clone(), r.ar.kind.clone()))));
}

/// One API group's resources, retried like every request but for at most
/// `throttle.discovery_timeout`: an aggregated API whose server is down answers 503 every time.
/// The error is the last answer and how long it was retried.
async fn discover_group(
    client: &Client,
    throttle: &Throttle,
    gv: &str,
) -> std::result::Result<APIResourceList, String> {
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
        // Listed a moment ago, gone now (its CRD or APIService was deleted meanwhile): nothing
        // of it exists to back up. Not an unavailable group.
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
            tracing::debug!(group_version = gv, "API group removed during discovery; skipped");
            Ok(Default::default())
        }
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
pub(super) const BUILT_IN_GROUPS: &[&str] = &[
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

/// Whether the API server lists the resources of `group` from its own storage, in key order
/// (`<namespace>/<name>`, or the name of a cluster-scoped object): a paged LIST is an etcd range
/// read, and its continue token is the last key read, so the order holds across pages too. True
/// for the core group and the built-in groups; a custom resource's group may be served by an
/// aggregated API server, which may list in any order.
pub fn lists_in_key_order(group: &str) -> bool {
    group.is_empty() || BUILT_IN_GROUPS.contains(&group)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shared_discovery_is_reused_only_while_watched_and_unchanged() {
        let calls = AtomicU64::new(0);
        let discover = |unavailable: bool| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut d = Discovered::default();
            if unavailable {
                d.unavailable.push(UnavailableGroup { group: "g".into(), version: "v1".into(), reason: "down".into() });
            }
            async move { Ok(d) }
        };
        let reused = || async { unreachable!("the held discovery is reused") };
        let shared = SharedDiscovery::new(std::time::Duration::from_secs(600));
        // As if the last change were long ago (past SETTLE).
        let settle = |s: &SharedDiscovery| {
            *s.last_change.lock().unwrap() = std::time::Instant::now().checked_sub(SharedDiscovery::SETTLE * 2);
        };
        let count = || calls.load(Ordering::SeqCst);
        // Not watched yet: every backup discovers.
        shared.get(discover(false)).await.unwrap();
        shared.get(discover(false)).await.unwrap();
        assert_eq!(count(), 2);
        shared.watching(true);
        // Within SETTLE of a change (the watches starting count as one): discovered, not kept.
        shared.get(discover(false)).await.unwrap();
        shared.get(discover(false)).await.unwrap();
        assert_eq!(count(), 4);
        settle(&shared);
        shared.get(discover(false)).await.unwrap();
        assert!(shared.get(reused()).await.unwrap().unavailable.is_empty());
        assert_eq!(count(), 5);
        // A CRD or APIService changed: discovered again, then reused once settled.
        shared.changed();
        settle(&shared);
        shared.get(discover(false)).await.unwrap();
        shared.get(reused()).await.unwrap();
        assert_eq!(count(), 6);
        // The watches failed: not reused until they run again.
        shared.watching(false);
        settle(&shared);
        shared.get(discover(false)).await.unwrap();
        shared.get(discover(false)).await.unwrap();
        assert_eq!(count(), 8);
        // A discovery with a group missing is not kept.
        shared.watching(true);
        settle(&shared);
        shared.get(discover(true)).await.unwrap();
        shared.get(discover(false)).await.unwrap();
        shared.get(reused()).await.unwrap();
        assert_eq!(count(), 10);
        // Past its age: discovered again.
        let young = SharedDiscovery::new(std::time::Duration::ZERO);
        young.watching(true);
        settle(&young);
        young.get(discover(false)).await.unwrap();
        young.get(discover(false)).await.unwrap();
        assert_eq!(count(), 12);
    }
}
