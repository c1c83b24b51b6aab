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
