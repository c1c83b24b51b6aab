//! One resource's paged LIST, each page cut into the raw objects the server sent (never decoded
//! and re-encoded), with `apiVersion`/`kind` added where the server leaves them out.

use super::*;

/// Lists one task's resource page by page and sends each object kept to the archive.
pub(super) async fn list_resource(l: &Lister<'_>, task: &Task) -> TaskOutcome {
    let (r, namespace) = (&task.resource, task.namespace.as_deref());
    let filter = task.filter.then_some(l.scope);
    let scope = if r.namespaced { namespace } else { None };
    let request = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, scope));
    let outcome = |result| TaskOutcome { key: r.key.clone(), namespace: namespace.map(str::to_string), result };
    let head = TypeHead::of(&r.ar);
    let mut listed = Listed::default();
    let mut token: Option<String> = None;
    let mut relists = 0;
    loop {
        let page = match fetch_page(l, &request, token.as_deref()).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 410 && token.is_some() && relists < 3 => {
                relists += 1;
                tracing::info!(resource = %r.key, "continue token expired (410 Gone); listing again from the start");
                token = None;
                continue;
            }
            Err(e) => return outcome(Err(TaskError::Kube(e))),
        };
        if let Err(e) = send_page(l, r, &head, filter, &page, &mut listed).await {
            return outcome(Err(e));
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return outcome(Ok((listed.count, listed.namespaces)));
        }
    }
}

/// What one resource's LIST has sent so far.
#[derive(Default)]
struct Listed {
    count: u64,
    namespaces: BTreeSet<String>,
    /// Items come in etcd key order; after a 410 (continue token expired) we relist and skip
    /// everything up to the last key already written, so nothing is archived twice.
    last_key: Option<String>,
}

/// One page of `request`'s LIST (after the page `token` continues).
async fn fetch_page(l: &Lister<'_>, request: &Request, token: Option<&str>) -> kube::Result<RawPage> {
    let lp = page_params(l.selector, token);
    let body = l
        .throttle
        .call(|| {
            let req = request.list(&lp).map_err(kube::Error::BuildRequest);
            async move { l.client.request_text(req?).await }
        })
        .await;
    // Pages are taken apart only as far as filtering needs; each item's JSON goes to the
    // archive as the server sent it (no object tree is built and serialized again).
    body.and_then(|b| RawPage::parse(b).map_err(kube::Error::SerdeError))
}

/// Sends the page's objects not sent before, in the namespaces kept and not excluded by
/// [`never_backed_up_object`]; notes what the dependency pass needs.
async fn send_page(
    l: &Lister<'_>,
    r: &Resource,
    head: &TypeHead,
    filter: Option<&Scope>,
    page: &RawPage,
    listed: &mut Listed,
) -> Result<(), TaskError> {
    let mut had_objects = false;
    let mut volumes = Vec::new();
    let mut claims = Vec::new();
    for raw in page.items() {
        let obj: RawItem<'_> = serde_json::from_str(raw).map_err(|e| TaskError::Kube(kube::Error::SerdeError(e)))?;
        let ns = obj.metadata.namespace.as_deref().map(str::to_string);
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        let key = match &ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        if listed.last_key.as_ref().is_some_and(|last| key.as_str() <= last.as_str()) {
            continue;
        }
        listed.last_key = Some(key);
        if let (Some(scope), Some(ns)) = (filter, &ns)
            && !scope.includes(ns)
        {
            continue;
        }
        if never_backed_up_object(&r.key, &obj) {
            continue;
        }
        if r.key == "persistentvolumeclaims" {
            if let Some(v) = obj.spec().volume_name {
                volumes.push(v.to_string());
            }
            claims.push((ns.clone().unwrap_or_default(), name.to_string()));
        }
        had_objects = true;
        let item = Item {
            resource: r.key.clone(),
            namespace: ns.clone(),
            name: name.to_string(),
            json: with_type_meta(raw, &obj, head),
        };
        if let Some(ns) = ns {
            listed.namespaces.insert(ns);
        }
        if l.tx.send(item).await.is_err() {
            return Err(TaskError::Closed);
        }
        listed.count += 1;
    }
    if had_objects || !volumes.is_empty() {
        let mut f = l.found.lock().unwrap_or_else(|p| p.into_inner());
        if had_objects && !r.ar.group.is_empty() {
            f.custom.insert((r.ar.plural.clone(), r.ar.group.clone()));
        }
        f.volumes.extend(volumes);
        f.claims.extend(claims);
    }
    Ok(())
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

/// `{"apiVersion":…,"kind":…` of a resource's objects, without the closing brace: made once per
/// LIST, not once per object.
struct TypeHead(String);

impl TypeHead {
    fn of(ar: &ApiResource) -> Self {
        let mut head = serde_json::json!({"apiVersion": ar.api_version, "kind": ar.kind}).to_string();
        head.pop(); // the closing brace
        TypeHead(head)
    }
}

/// The item's JSON with `apiVersion` and `kind` first: typed LISTs leave them out of their items.
fn with_type_meta(raw: &str, obj: &RawItem<'_>, head: &TypeHead) -> Vec<u8> {
    if obj.api_version.is_some() && obj.kind.is_some() {
        return raw.as_bytes().to_vec();
    }
    let rest = raw.trim_start().strip_prefix('{').unwrap_or(raw).trim_start();
    let mut out = Vec::with_capacity(head.0.len() + raw.len() + 1);
    out.extend_from_slice(head.0.as_bytes());
    if !rest.starts_with('}') {
        out.push(b',');
    }
    out.extend_from_slice(rest.as_bytes());
    out
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
        let json = with_type_meta(raw, &item, &TypeHead::of(&ar("v1", "ConfigMap")));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["data"]["k"], "v");
        // Custom resources' items carry their type already: left exactly as sent.
        let cr = r#"{"apiVersion":"example.org/v1","kind":"Widget","metadata":{"name":"w"},"spec":"odd"}"#;
        let item: RawItem<'_> = serde_json::from_str(cr).unwrap();
        assert_eq!(with_type_meta(cr, &item, &TypeHead::of(&ar("example.org/v1", "Widget"))), cr.as_bytes());
        // An object with no fields at all still becomes valid JSON.
        let item: RawItem<'_> = serde_json::from_str("{}").unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&with_type_meta("{}", &item, &TypeHead::of(&ar("v1", "X")))).unwrap();
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
