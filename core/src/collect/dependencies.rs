//! The cluster-scoped objects the backed-up ones need: the CRDs of custom resources and the PVs
//! of bound claims (`--include-cluster-resources auto`).

use super::*;

/// For a namespace-scoped backup: the CRDs of its custom resources and the PVs bound to its PVCs.
pub(super) async fn collect_dependencies(
    client: &Client,
    throttle: &Throttle,
    found: Found,
    tx: &mpsc::Sender<Batch>,
    report: &mut Report,
) {
    let crd_ar = ApiResource::erase::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >(&());
    let pv_ar = ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolume>(&());
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
