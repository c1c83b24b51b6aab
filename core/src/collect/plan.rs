//! Which resources and namespaces a backup reads: discovery filtered by the selection.

use super::*;

/// Which namespaces' objects are included.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every namespace the plan found and kept (not excluded by filter, not ephemeral). A namespace
    /// created after the plan is not kept: the selection was never applied to it (it may be
    /// excluded, or ephemeral), and its Namespace object is not in the backup either.
    All { included: BTreeSet<String> },
    /// Only these.
    Only(BTreeSet<String>),
}

impl Scope {
    pub fn includes(&self, ns: &str) -> bool {
        match self {
            Scope::All { included } | Scope::Only(included) => included.contains(ns),
        }
    }

    /// The namespaces included.
    pub fn namespaces(&self) -> &BTreeSet<String> {
        match self {
            Scope::All { included } | Scope::Only(included) => included,
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
        !selection.all_cluster_resources() && selection.cluster_resources != crate::model::ClusterResources::Never;
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
    let ns_ar = ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&());
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
    for ns in list {
        let name = ns.name_any();
        if selection.includes_namespace(&name, is_ephemeral_namespace(ns.labels(), ns.annotations())) {
            included.insert(name);
            objects.push(ns);
        }
    }
    for p in &selection.include_namespaces {
        if !included.iter().any(|n| p.matches(n)) {
            warnings.push(format!("--include-namespaces {:?} matches no namespace", p.as_str()));
        }
    }
    let scope = if selection.all_namespaces() { Scope::All { included } } else { Scope::Only(included) };
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
        let lp = page_params(PAGE_SIZE, selector, token.as_deref());
        let page = throttle.call(|| api.list(&lp)).await?;
        out.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Whether a namespaced resource listed across namespaces goes on one namespace at a time once its
/// first page shows how large it is (`--list-per-namespace`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NamespaceLists {
    /// When the rest of the resource would cost etcd more in pages than in one LIST per namespace
    /// ([`namespaces_after_first_page`]).
    #[default]
    Auto,
    /// Whenever the first page is not the last (for tests and measurements).
    Always,
    /// Never: every page of one cluster-wide LIST.
    Never,
}

impl std::str::FromStr for NamespaceLists {
    type Err = String;
    /// auto, always or never (the spelling of `--list-per-namespace`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err(format!("expected auto, always or never, got {s:?}")),
        }
    }
}

/// What one more LIST request costs the API server and etcd, in keys of a range that etcd counts.
/// Every page of a paged LIST is an etcd range read from its first key to the end of the resource
/// that also counts the keys left, so the rest of a LIST of `n` objects in pages of `p` counts
/// about n²/2p keys; one LIST per namespace counts each namespace's keys once. Measured by
/// bench/list-cost.sh (docs/benchmarks.md): the 50k ConfigMaps of 200 namespaces cost etcd
/// 1.11–1.33 CPU-s in pages of 500 and 0.36–0.45 s one namespace at a time, about 0.3 µs per key
/// counted. A request's own cost (its round trip, the API server's handling) is put at 3000 keys,
/// about a millisecond: a namespace's LIST is worth making only when it saves that much counting.
const REQUEST_COST_IN_KEYS: u64 = 3000;

/// After the first page of a cluster-wide LIST of a namespaced resource that lists in key order
/// ([`lists_in_key_order`]): the namespaces of `namespaces` to list one at a time instead of the
/// rest of the pages, or `None` to go on paging.
///
/// `remaining` is the page's `remainingItemCount` (absent with a label selector: `Auto` then goes
/// on paging) and `page` its limit. Every namespace is listed again, the first page's too (its
/// objects are skipped by name, not by where the page ended: a backend that sorts keys by a
/// locale's collation, as kine on some databases may, must not lose any), in the order of their
/// keys (`<namespace>/`), which is not the order of the names: "a-b/" sorts before "a/". Listed in
/// that order, each namespace in key order, the objects keep coming in key order, which collect
/// checks.
pub fn namespaces_after_first_page<'n>(
    mode: NamespaceLists,
    page: u32,
    remaining: Option<i64>,
    namespaces: impl IntoIterator<Item = &'n str>,
) -> Option<Vec<String>> {
    let key = |ns: &str| format!("{ns}/");
    let mut all: Vec<String> = namespaces.into_iter().map(str::to_string).collect();
    all.sort_by_key(|ns| key(ns));
    all.dedup();
    let go = match mode {
        NamespaceLists::Never => false,
        NamespaceLists::Always => true,
        NamespaceLists::Auto => {
            let remaining = remaining.and_then(|r| u64::try_from(r).ok())?;
            let page = u64::from(page.max(1));
            let paging = remaining * remaining / (2 * page) + remaining.div_ceil(page) * REQUEST_COST_IN_KEYS;
            let per_namespace = all.len() as u64 * REQUEST_COST_IN_KEYS + remaining + page;
            per_namespace < paging
        }
    };
    go.then_some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(mode: NamespaceLists, page: u32, remaining: Option<i64>, ns: &[&str]) -> Option<Vec<String>> {
        namespaces_after_first_page(mode, page, remaining, ns.iter().copied())
    }

    #[test]
    fn the_namespaces_come_in_the_order_of_their_keys() {
        let ns = ["a", "a-b", "b", "0x", "ab", "a-a", "a"];
        // Keys: "0x/" < "a-a/" < "a-b/" < "a/" < "ab/" < "b/".
        let got = after(NamespaceLists::Always, 500, Some(10), &ns).unwrap();
        assert_eq!(got, ["0x", "a-a", "a-b", "a", "ab", "b"]);
    }

    #[test]
    fn auto_lists_per_namespace_only_where_paging_would_count_more_than_the_requests_cost() {
        let ns: Vec<String> = (0..200).map(|i| format!("ns-{i:03}")).collect();
        let ns: Vec<&str> = ns.iter().map(String::as_str).collect();
        // bench/scale.sh at 100k: 50k ConfigMaps in 200 namespaces.
        let big = after(NamespaceLists::Auto, 500, Some(49_700), &ns);
        assert_eq!(big.map(|n| n.len()), Some(200));
        // At 5k (2.5k ConfigMaps) and at 20k, paging costs less than 200 requests.
        assert_eq!(after(NamespaceLists::Auto, 500, Some(2_200), &ns), None);
        assert_eq!(after(NamespaceLists::Auto, 500, Some(9_700), &ns), None);
        // Fewer namespaces make it worth it sooner.
        assert!(after(NamespaceLists::Auto, 500, Some(9_700), &ns[..10]).is_some());
        // Without a count (a label selector), or asked not to: paging.
        assert_eq!(after(NamespaceLists::Auto, 500, None, &ns), None);
        assert_eq!(after(NamespaceLists::Never, 500, Some(49_700), &ns), None);
        // Larger pages count less.
        assert_eq!(after(NamespaceLists::Auto, 5000, Some(49_700), &ns), None);
    }
}
