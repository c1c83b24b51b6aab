//! One resource's paged LIST, each page cut into the raw objects the server sent (never decoded
//! and re-encoded), with `apiVersion`/`kind` added where the server leaves them out.

use super::*;

/// Lists one task's resource page by page and sends each object kept to the archive; with the
/// previous backup of the scope at hand, as metadata first ([`list_versions`]).
///
/// A cluster-wide LIST of a set of namespaces the server forbids, before anything was sent, is
/// made again one namespace at a time: a user whose RoleBindings let them list in each named
/// namespace (but not cluster-wide) backs up what their own RBAC lets them read.
pub(super) async fn list_resource(l: &Lister<'_>, task: &Task) -> Vec<TaskOutcome> {
    let outcome = list_task(l, task).await;
    match (&outcome.result, l.scope) {
        (Err(TaskError::Kube(kube::Error::Api(s))), Scope::Only(names))
            if s.code == 403 && task.filter && outcome.count == 0 =>
        {
            tracing::debug!(resource = %task.resource.key, "listing in all namespaces is forbidden; listing in each one named");
            let mut outcomes = Vec::with_capacity(names.len());
            for ns in names {
                let one = Task { resource: task.resource.clone(), namespace: Some(ns.clone()), filter: false };
                outcomes.push(list_task(l, &one).await);
            }
            outcomes
        }
        _ => vec![outcome],
    }
}

async fn list_task(l: &Lister<'_>, task: &Task) -> TaskOutcome {
    let r = &task.resource;
    // The key-order check lets the archive writer skip its duplicate-path set; the incremental
    // writer keeps that set whatever the order, so an incremental run does not stop a LIST on it.
    let sorted = lists_in_key_order(&r.ar.group) && l.previous.is_none();
    let mut listed = Listed { sorted, ..Default::default() };
    let (mut skipped, mut empty) = (false, false);
    let mut result = match (l.previous, l.watched, task.namespace.as_deref()) {
        (Some(previous), Some(watched), Some(ns)) if watched.covers(r) && !reads_spec(&r.key) => {
            skipped = true;
            read_watched(l, task, ns, previous, watched, &mut listed).await
        }
        (_, _, Some(ns)) if l.empty.is_some_and(|w| w.empty_in(r, ns)) && !reads_spec(&r.key) => {
            empty = true;
            Ok(())
        }
        (Some(previous), _, _) if !reads_spec(&r.key) => list_versions(l, task, previous, &mut listed).await,
        _ => list_bodies(l, task, None, &mut listed).await,
    };
    // What was read before a failure is archived, as it would have been one by one, and counted.
    if let Err(closed) = listed.flush(l).await {
        result = result.and(Err(closed));
    }
    TaskOutcome {
        key: r.key.clone(),
        namespace: task.namespace.clone(),
        count: listed.count,
        namespaces: listed.namespaces,
        skipped,
        empty,
        result,
    }
}

/// Resources whose objects collect reads beyond their metadata (a claim's volume, an APIService's
/// service): always listed whole.
fn reads_spec(key: &str) -> bool {
    matches!(key, "persistentvolumeclaims" | "apiservices.apiregistration.k8s.io")
}

/// The paged LIST of a task: bodies, every object or (`only`) the objects whose `namespace/name`
/// it holds.
async fn list_bodies(
    l: &Lister<'_>,
    task: &Task,
    only: Option<&HashSet<String>>,
    listed: &mut Listed,
) -> Result<(), TaskError> {
    let head = TypeHead::of(&task.resource.ar);
    let mut pager = Pager::new(l, task, false);
    listed.last_key = None;
    listed.relisted = false;
    listed.sent_first.clear();
    let mut next = pager.next().await;
    while let Some(page) = next {
        listed.relisted |= pager.relists > 0;
        let mut page = page.map_err(TaskError::Kube)?;
        listed.restart(page.restart.take());
        // The next page is read while this one goes to the archive ([`Pager`]); a failure to
        // send drops that read.
        let joined = futures::try_join!(async { Ok(pager.next().await) }, async {
            send_page(l, task, &head, &page, only, listed).await?;
            listed.flush(l).await
        });
        let (following, ()) = joined.inspect_err(|e| {
            if matches!(e, TaskError::Closed) {
                tracing::debug!(resource = %task.resource.key, "the archive side stopped: this LIST ends, its next page's read dropped");
            }
        })?;
        pager.recycle(page);
        next = following;
    }
    Ok(())
}

/// An incremental backup continuing the previous one of its scope lists the task's objects as
/// metadata only (`as=PartialObjectMetadataList`): an object whose `resourceVersion` is the one
/// that backup recorded is sent unread ([`Body::Unchanged`]); the others are read afterwards, a
/// GET each, or the whole LIST again (keeping only them) when they are many or GET is refused.
/// A server that cannot list metadata only gets the plain LIST.
async fn list_versions(l: &Lister<'_>, task: &Task, previous: &Previous, listed: &mut Listed) -> Result<(), TaskError> {
    let r = &task.resource;
    let filter = task.filter.then_some(l.scope);
    let mut pager = Pager::new(l, task, true);
    let mut changed: Vec<(Option<String>, String)> = Vec::new();
    let mut objects = 0usize;
    let mut next = pager.next().await;
    while let Some(page) = next {
        let mut page = match page {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 406 && objects == 0 => {
                tracing::debug!(resource = %r.key, "the server cannot list metadata only");
                return list_bodies(l, task, None, listed).await;
            }
            Err(e) => return Err(TaskError::Kube(e)),
        };
        listed.relisted |= pager.relists > 0;
        listed.restart(page.restart.take());
        // The next page is read while this one is looked at ([`Pager`]); a failure to look at it
        // drops that read.
        let (following, ()) = futures::try_join!(async { Ok(pager.next().await) }, async {
            for (_, obj) in page.objects() {
                let obj = obj.map_err(|e| TaskError::Kube(kube::Error::SerdeError(e)))?;
                let Some((ns, name)) = listed.next_kept(&obj, filter)? else { continue };
                if never_backed_up_object(&r.key, &obj) {
                    continue;
                }
                objects += 1;
                let path = crate::archive::entry_path(&r.key, ns.as_deref(), &name);
                match previous.get(&path) {
                    Some(recorded) if recorded.unchanged_at(obj.metadata.resource_version.as_deref()) => {
                        let item = Item {
                            resource: r.key.clone(),
                            namespace: ns,
                            name,
                            body: Body::Unchanged(recorded.clone()),
                            in_key_order: listed.sorted,
                        };
                        listed.send(l, item).await?;
                    }
                    _ => changed.push((ns, name)),
                }
            }
            listed.flush(l).await
        })?;
        pager.recycle(page);
        next = following;
    }
    read_changed(l, task, &changed, objects, listed).await
}

/// A type the in-cluster controller's watch covered since the previous backup began
/// ([`Watched`]), in the task's namespace `ns`: the objects that backup recorded, sent unread
/// unless the watch saw them change, then those the watch saw created or changed, as it delivered
/// them. Nothing is listed; only a recorded body the location no longer holds is read again.
async fn read_watched(
    l: &Lister<'_>,
    task: &Task,
    ns: &str,
    previous: &Previous,
    watched: &Watched,
    listed: &mut Listed,
) -> Result<(), TaskError> {
    let r = &task.resource;
    let none = HashMap::new();
    let seen = watched.changed.get(&r.key).unwrap_or(&none);
    let dir = crate::archive::entry_dir(&r.key, ns);
    let mut unreadable: Vec<(Option<String>, String)> = Vec::new();
    let mut objects = 0usize;
    let item = |name: &str, body| Item {
        resource: r.key.clone(),
        namespace: Some(ns.to_string()),
        name: name.to_string(),
        body,
        in_key_order: false,
    };
    for (path, recorded) in previous {
        let Some(name) = path.strip_prefix(&dir).and_then(|rest| rest.strip_suffix(".json")) else { continue };
        if seen.contains_key(&object_key(Some(ns), name)) {
            continue; // as the watch saw it, below
        }
        objects += 1;
        match recorded.reusable {
            true => listed.send(l, item(name, Body::Unchanged(recorded.clone()))).await?,
            false => unreadable.push((Some(ns.to_string()), name.to_string())),
        }
    }
    let prefix = format!("{ns}/");
    for (key, change) in seen {
        let (Some(name), Change::Applied { json, version }) = (key.strip_prefix(&prefix), change) else { continue };
        objects += 1;
        listed.send(l, item(name, Body::Read { json: json.clone(), version: version.clone() })).await?;
    }
    read_changed(l, task, &unreadable, objects, listed).await
}

/// Reads `changed` (each once, none sent yet) of a task with `objects` objects in all: a GET each,
/// or the task's LIST keeping only them when they are many or a GET fails. One that is gone is left
/// out (deleted). A custom resource with objects has its CRD backed up too.
async fn read_changed(
    l: &Lister<'_>,
    task: &Task,
    changed: &[(Option<String>, String)],
    objects: usize,
    listed: &mut Listed,
) -> Result<(), TaskError> {
    let r = &task.resource;
    if objects > 0 && !r.ar.group.is_empty() {
        let mut f = l.found.lock().unwrap_or_else(|p| p.into_inner());
        f.custom.insert((r.ar.plural.clone(), r.ar.group.clone()));
    }
    if changed.is_empty() {
        return Ok(());
    }
    if changed.len() > GET_MAX && changed.len() * 8 > objects {
        return list_bodies(l, task, Some(&keys(changed)), listed).await;
    }
    let head = TypeHead::of(&r.ar);
    // GET_IN_FLIGHT at a time, in order (a plain loop: a stream of closures borrowing `changed`
    // would not be `Send` for every lifetime, which the controllers' tasks need).
    let mut waiting = changed.iter();
    let mut reads = futures::stream::FuturesOrdered::new();
    let mut done = 0; // results come in the order of `changed`
    loop {
        while reads.len() < GETS_IN_FLIGHT {
            let Some((ns, name)) = waiting.next() else { break };
            reads.push_back(read_one(l, r, ns.as_deref(), name));
        }
        let Some(read) = reads.next().await else { break };
        match read {
            Ok(None) => {} // deleted since the LIST, or as the watch saw
            Ok(Some(body)) => {
                let raw = head.as_listed(&body);
                let obj: RawItem<'_> =
                    serde_json::from_str(&raw).map_err(|e| TaskError::Kube(kube::Error::SerdeError(e)))?;
                // Unique too: each of `changed` is there once.
                let at = (
                    obj.metadata.namespace.as_deref().map(str::to_string),
                    obj.metadata.name.as_deref().unwrap_or_default().to_string(),
                );
                let item = read_item(r, &head, &raw, &obj, at, listed.sorted);
                listed.send(l, item).await?;
            }
            Err(e) => {
                // Those read already are sent: the LIST keeps only the rest (none twice).
                tracing::debug!(resource = %r.key, error = %e, "reading the changed objects one by one failed; listing them");
                drop(reads);
                return list_bodies(l, task, Some(&keys(&changed[done..])), listed).await;
            }
        }
        done += 1;
    }
    Ok(())
}

/// Changed objects read one GET each up to this many (or an eighth of the task's objects); above,
/// one LIST of the task costs the server less.
const GET_MAX: usize = 16;
const GETS_IN_FLIGHT: usize = 8;

fn keys(objects: &[(Option<String>, String)]) -> HashSet<String> {
    objects.iter().map(|(ns, name)| object_key(ns.as_deref(), name)).collect()
}

pub(super) fn object_key(namespace: Option<&str>, name: &str) -> String {
    let mut key = String::new();
    write_object_key(&mut key, namespace, name);
    key
}

/// [`object_key`] into `key` (cleared first), so a buffer can serve every object of a LIST.
fn write_object_key(key: &mut String, namespace: Option<&str>, name: &str) {
    key.clear();
    if let Some(ns) = namespace {
        key.push_str(ns);
        key.push('/');
    }
    key.push_str(name);
}

/// One object's body, `None` if it is gone.
async fn read_one(l: &Lister<'_>, r: &Resource, namespace: Option<&str>, name: &str) -> kube::Result<Option<String>> {
    let request = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, namespace));
    let body = l
        .throttle
        .call(|| {
            let req = request.get(name, &kube::api::GetParams::default()).map_err(kube::Error::BuildRequest);
            async move { l.client.request_text(req?).await }
        })
        .await;
    match body {
        Ok(b) => Ok(Some(b)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A task's pages, one at a time, listed again from the start (up to 3 times) when the continue
/// token expires (410 Gone): [`Listed::next_kept`] then skips what was sent already.
///
/// A cluster-wide LIST of a large namespaced resource goes on one namespace at a time after its
/// first page when that costs etcd less than the rest of the pages
/// ([`namespaces_after_first_page`]): every namespace in key order, the objects of the first page
/// skipped by name ([`RawPage::restart`]), wherever the backend's order put them.
///
/// A task reads its next page while it hands on the one before: the server is not left waiting
/// for the client between the pages of a LIST (as it is not for a client that only counts
/// items), at the cost of a second page buffer per task. Each page is read into the body of the
/// page before the one at hand ([`Pager::recycle`]): two buffers per task, grown to its largest
/// page, instead of a new one (and kube's two copies) per page. Pages are the client's largest
/// allocations after the upload's chunks; freed one by one, glibc kept them resident
/// (docs/benchmarks.md).
struct Pager<'l, 'a> {
    l: &'l Lister<'a>,
    task: &'l Task,
    request: Request,
    metadata: bool,
    token: Option<String>,
    relists: u32,
    /// Whether the first page has been looked at (for going on one namespace at a time).
    first_seen: bool,
    /// The namespaces still to list one at a time, the next first.
    namespaces: std::collections::VecDeque<String>,
    /// The keys of the first page, for the first page listed one namespace at a time to carry.
    first_keys: Option<HashSet<String>>,
    done: bool,
    spare: Vec<u8>,
    /// The kind of a resource listed in protobuf, and the buffer its pages are read into.
    protobuf: Option<protobuf::Kind>,
    wire: Vec<u8>,
}

impl<'l, 'a> Pager<'l, 'a> {
    fn new(l: &'l Lister<'a>, task: &'l Task, metadata: bool) -> Self {
        let r = &task.resource;
        let scope = if r.namespaced { task.namespace.as_deref() } else { None };
        let request = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, scope));
        let protobuf = match l.throttle.list_encoding {
            ListEncoding::Auto => protobuf::Kind::of(&r.ar.group, &r.ar.version, &r.ar.plural),
            ListEncoding::Json => None,
        };
        Pager {
            l,
            task,
            request,
            metadata,
            token: None,
            relists: 0,
            first_seen: false,
            namespaces: Default::default(),
            first_keys: None,
            done: false,
            spare: Vec::new(),
            protobuf,
            wire: Vec::new(),
        }
    }

    /// Hands a page's body back to be read into again.
    fn recycle(&mut self, page: RawPage) {
        self.spare = page.body.into_bytes();
    }

    async fn next(&mut self) -> Option<kube::Result<RawPage>> {
        if self.done {
            return None;
        }
        loop {
            let spare = std::mem::take(&mut self.spare);
            let (token, metadata) = (self.token.as_deref(), self.metadata);
            match fetch_page(self.l, &self.request, token, metadata, self.protobuf, spare, &mut self.wire).await {
                Ok(mut page) => {
                    self.token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
                    if self.first_seen {
                        page.restart = self.first_keys.take();
                    } else {
                        self.first_seen = true;
                        self.go_per_namespace(&page);
                    }
                    if self.token.is_none() {
                        match self.namespaces.pop_front() {
                            Some(ns) => {
                                let r = &self.task.resource.ar;
                                self.request = Request::new(<DynamicObject as kube::Resource>::url_path(r, Some(&ns)))
                            }
                            None => self.done = true,
                        }
                    }
                    return Some(Ok(page));
                }
                Err(kube::Error::Api(s)) if s.code == 410 && self.token.is_some() && self.relists < 3 => {
                    self.relists += 1;
                    tracing::info!(resource = %self.task.resource.key, "continue token expired (410 Gone); listing again from the start");
                    self.token = None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// After the first page of a cluster-wide LIST that is not the last: whether to list the rest
    /// one namespace at a time, and which namespaces.
    fn go_per_namespace(&mut self, page: &RawPage) {
        let r = &self.task.resource;
        if self.token.is_none() || !r.namespaced || self.task.namespace.is_some() || !lists_in_key_order(&r.ar.group) {
            return;
        }
        let limit = if self.metadata { METADATA_PAGE_SIZE } else { PAGE_SIZE };
        let remaining = page.metadata.remaining_item_count;
        let all = self.l.scope.namespaces().iter().map(String::as_str);
        let mode = self.l.throttle.namespace_lists;
        let Some(namespaces) = namespaces_after_first_page(mode, limit, remaining, all) else { return };
        let mut keys = HashSet::with_capacity(page.items.len());
        for (_, obj) in page.objects() {
            // One the first page cannot be read in stays paged: it fails there, as it would have.
            let Ok(obj) = obj else { return };
            keys.insert(object_key(
                obj.metadata.namespace.as_deref(),
                obj.metadata.name.as_deref().unwrap_or_default(),
            ));
        }
        tracing::debug!(resource = %r.key, remaining, namespaces = namespaces.len(), "listing the rest one namespace at a time");
        self.token = None;
        self.namespaces = namespaces.into();
        self.first_keys = Some(keys);
    }
}

/// What one resource's LIST has sent so far.
#[derive(Default)]
struct Listed {
    count: u64,
    /// Objects not sent yet, and the bytes of their bodies ([`Batch`]).
    batch: Batch,
    batch_bytes: usize,
    namespaces: BTreeSet<String>,
    /// The greatest key looked at in this pass. An etcd-backed resource lists in key order, so
    /// after a 410 (continue token expired) the LIST starts again and skips every key up to this
    /// one, looked at already: nothing is archived twice.
    last_key: Option<String>,
    /// Whether the pager listed again after a 410: only then are keys skipped. A resource an
    /// aggregated API server serves need not come sorted, and none of its objects may be lost
    /// for being out of etcd's order.
    relisted: bool,
    /// The resource [`lists_in_key_order`]: each key kept must come after `last_key`, which
    /// proves that no object is sent twice ([`Item::in_key_order`]); one that does not stops the
    /// LIST ([`TaskError::OutOfOrder`]).
    sorted: bool,
    /// The keys of the cluster-wide first page of a LIST gone on one namespace at a time: sent
    /// already, skipped when their namespace is listed ([`Listed::restart`]).
    sent_first: HashSet<String>,
    /// The key of the object looked at now: a buffer swapped with `last_key`, not one allocation
    /// an object.
    key: String,
}

impl Listed {
    /// The object's namespace and name if it is one to look at: not seen before in this pass (see
    /// `last_key`) and in a namespace kept by `filter`. An error if the resource is `sorted` and
    /// the object comes out of key order (before a relist).
    fn next_kept(
        &mut self,
        obj: &RawItem<'_>,
        filter: Option<&Scope>,
    ) -> Result<Option<(Option<String>, String)>, TaskError> {
        let ns = obj.metadata.namespace.as_deref();
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        write_object_key(&mut self.key, ns, name);
        let sent_already = !self.sent_first.is_empty() && self.sent_first.contains(&self.key);
        match &mut self.last_key {
            Some(last) if self.key.as_str() <= last.as_str() => {
                if self.relisted {
                    return Ok(None);
                }
                if self.sorted {
                    return Err(TaskError::OutOfOrder { key: self.key.clone(), last: last.clone() });
                }
            }
            Some(last) => std::mem::swap(last, &mut self.key),
            None => self.last_key = Some(self.key.clone()),
        }
        if sent_already {
            return Ok(None);
        }
        if let (Some(scope), Some(ns)) = (filter, ns)
            && !scope.includes(ns)
        {
            return Ok(None);
        }
        Ok(Some((ns.map(str::to_string), name.to_string())))
    }

    /// From a page that starts the LIST over one namespace at a time ([`RawPage::restart`]): keys
    /// come in order from the first again, and those of `sent` are skipped.
    fn restart(&mut self, sent: Option<HashSet<String>>) {
        if let Some(sent) = sent {
            self.last_key = None;
            self.sent_first = sent;
        }
    }

    /// Counts one object and adds it to the batch for the archive, sending the batch when it is
    /// full ([`Listed::flush`] sends the rest).
    async fn send(&mut self, l: &Lister<'_>, item: Item) -> Result<(), TaskError> {
        if let Some(ns) = &item.namespace
            && !self.namespaces.contains(ns)
        {
            self.namespaces.insert(ns.clone());
        }
        self.batch_bytes += match &item.body {
            Body::Read { json, .. } => json.len(),
            Body::Unchanged(_) => 0,
        };
        self.batch.push(item);
        self.count += 1;
        if self.batch.len() >= BATCH_ITEMS || self.batch_bytes >= BATCH_BYTES {
            self.flush(l).await?;
        }
        Ok(())
    }

    /// Sends the objects batched so far.
    async fn flush(&mut self, l: &Lister<'_>) -> Result<(), TaskError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        l.tx.send(std::mem::take(&mut self.batch)).await.map_err(|_| TaskError::Closed)
    }
}

/// One page of `request`'s LIST (after the page `token` continues); of metadata only with
/// `metadata`. The body is read into `buf` (cleared first; a failed attempt's retry starts anew).
/// A resource with an exact JSON rebuild (`protobuf`, [`super::protobuf`]) is read in protobuf,
/// into `wire`, and its page read again in JSON if it cannot be rebuilt exactly.
async fn fetch_page(
    l: &Lister<'_>,
    request: &Request,
    token: Option<&str>,
    metadata: bool,
    protobuf: Option<protobuf::Kind>,
    buf: Vec<u8>,
    wire: &mut Vec<u8>,
) -> kube::Result<RawPage> {
    let lp = page_params(if metadata { METADATA_PAGE_SIZE } else { PAGE_SIZE }, l.selector, token);
    if let Some(kind) = protobuf.filter(|_| !metadata) {
        let bytes = l
            .throttle
            .call(|| {
                let req = request.list(&lp).map_err(kube::Error::BuildRequest).map(|mut req| {
                    req.headers_mut().insert(http::header::ACCEPT, http::HeaderValue::from_static(protobuf::PROTOBUF));
                    req
                });
                let buf = std::mem::take(wire);
                async move { read_protobuf(l, req?, buf).await }
            })
            .await?;
        if !protobuf::is_protobuf(&bytes) {
            // A server (or a proxy before it) that answered in JSON all the same.
            let body = String::from_utf8(bytes).map_err(kube::Error::FromUtf8)?;
            return RawPage::parse(body).map_err(kube::Error::SerdeError);
        }
        let mut buf = buf;
        buf.clear();
        let (page, bytes) = protobuf::rebuild(kind, bytes, String::from_utf8(buf).unwrap_or_default());
        *wire = bytes;
        match page {
            protobuf::Rebuilt::Page { body, items, metas, metadata } => {
                tracing::debug!(url = %request.url_path, items = items.len(), "a page read in protobuf");
                return Ok(RawPage { body, items, metas, metadata, restart: None });
            }
            protobuf::Rebuilt::Unsure(why) => {
                tracing::debug!(url = %request.url_path, why, "a protobuf page read again as JSON");
                return Box::pin(fetch_page(l, request, token, metadata, None, Vec::new(), wire)).await;
            }
        }
    }
    let mut buf = Some(buf);
    let body = l
        .throttle
        .call(|| {
            let req = request.list(&lp).map_err(kube::Error::BuildRequest).map(|mut req| {
                if metadata {
                    req.headers_mut().insert(http::header::ACCEPT, http::HeaderValue::from_static(METADATA_LIST));
                }
                req
            });
            let mut buf = buf.take().unwrap_or_default();
            async move {
                let body = l.client.request_stream(req?).await?;
                read_body(body, &mut buf).await?;
                String::from_utf8(buf).map_err(kube::Error::FromUtf8)
            }
        })
        .await;
    // Pages are taken apart only as far as filtering needs; each item's JSON goes to the
    // archive as the server sent it (no object tree is built and serialized again).
    body.and_then(|b| RawPage::parse(b).map_err(kube::Error::SerdeError))
}

/// Copies a response body's chunks into `buf` (cleared first) as they come: `read_to_end` would
/// zero the buffer's spare capacity first on every read (3% of `create`'s CPU at 100k).
async fn read_body(body: impl futures::AsyncBufRead, buf: &mut Vec<u8>) -> kube::Result<()> {
    use futures::AsyncBufReadExt;
    let mut body = std::pin::pin!(body);
    buf.clear();
    loop {
        let chunk = body.fill_buf().await.map_err(kube::Error::ReadEvents)?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        body.consume_unpin(n);
    }
}

/// A LIST asked for in protobuf: its body, or its error as kube reports one (the server answers
/// errors in protobuf too, which kube's own error handling cannot read).
async fn read_protobuf(l: &Lister<'_>, req: http::Request<Vec<u8>>, mut buf: Vec<u8>) -> kube::Result<Vec<u8>> {
    use futures::TryStreamExt;
    use http_body_util::BodyExt;
    let res = l.client.send(req.map(kube::client::Body::from)).await?;
    let code = res.status();
    let body = res.into_body().into_data_stream().map_err(std::io::Error::other).into_async_read();
    read_body(body, &mut buf).await?;
    if code.is_success() {
        return Ok(buf);
    }
    let status =
        protobuf::status(&buf).or_else(|| serde_json::from_slice::<kube::core::Status>(&buf).ok()).unwrap_or_else(
            || kube::core::Status::failure(String::from_utf8_lossy(&buf).trim(), "Failed to parse error data"),
        );
    Err(kube::Error::Api(status.with_code(code.as_u16()).boxed()))
}

/// Sends the page's objects not sent before (and with `only`, only those it names), in the
/// namespaces kept and not excluded by [`never_backed_up_object`]; notes what the dependency pass
/// needs.
async fn send_page(
    l: &Lister<'_>,
    task: &Task,
    head: &TypeHead,
    page: &RawPage,
    only: Option<&HashSet<String>>,
    listed: &mut Listed,
) -> Result<(), TaskError> {
    let r = &task.resource;
    let filter = task.filter.then_some(l.scope);
    let mut had_objects = false;
    let mut volumes = Vec::new();
    let mut claims = Vec::new();
    for (raw, obj) in page.objects() {
        let obj = obj.map_err(|e| TaskError::Kube(kube::Error::SerdeError(e)))?;
        let Some((ns, name)) = listed.next_kept(&obj, filter)? else { continue };
        if only.is_some_and(|o| !o.contains(&object_key(ns.as_deref(), &name))) || never_backed_up_object(&r.key, &obj)
        {
            continue;
        }
        if r.key == "persistentvolumeclaims" {
            if let Some(v) = obj.spec().volume_name {
                volumes.push(v.to_string());
            }
            claims.push((ns.clone().unwrap_or_default(), name.clone()));
        }
        had_objects = true;
        let item = read_item(r, head, raw, &obj, (ns, name), listed.sorted);
        listed.send(l, item).await?;
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

/// An object read in full, for the archive, with its namespace and name.
fn read_item(
    r: &Resource,
    head: &TypeHead,
    raw: &str,
    obj: &RawItem<'_>,
    (namespace, name): (Option<String>, String),
    in_key_order: bool,
) -> Item {
    Item {
        resource: r.key.clone(),
        namespace,
        name,
        body: Body::Read {
            json: with_type_meta(raw, obj, head),
            version: obj.metadata.resource_version.as_deref().map(str::to_string),
        },
        in_key_order,
    }
}

/// A LIST response body with its items left unparsed.
struct RawPage {
    body: String,
    items: Vec<std::ops::Range<usize>>,
    /// For a page rebuilt from protobuf: where each item's metadata is in `body`.
    metas: Vec<protobuf::ItemMeta>,
    metadata: kube::core::ListMeta,
    /// On the first page of a LIST gone on one namespace at a time ([`Pager`]): the keys the
    /// cluster-wide first page held, sent already. From this page on the LIST starts over in key
    /// order and skips them ([`Listed::restart`]).
    restart: Option<HashSet<String>>,
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
        Ok(RawPage { metadata: parsed.metadata, items, metas: Vec::new(), body, restart: None })
    }

    /// Each item's JSON text (the parser cut the ranges: each is one valid JSON value).
    fn items(&self) -> impl Iterator<Item = &str> + '_ {
        self.items.iter().map(|r| &self.body[r.clone()])
    }

    /// Each item's JSON text and what collect reads of it: from `metas` for a page rebuilt from
    /// protobuf, which knows it already, else parsed.
    fn objects(&self) -> impl Iterator<Item = (&str, serde_json::Result<RawItem<'_>>)> + '_ {
        self.items().enumerate().map(|(i, raw)| match self.metas.get(i) {
            Some(m) => {
                let text = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| Cow::Borrowed(&self.body[r]));
                let metadata = RawMeta {
                    name: text(&m.name),
                    namespace: text(&m.namespace),
                    resource_version: text(&m.resource_version),
                };
                (raw, Ok(RawItem { api_version: None, kind: None, metadata, spec: None }))
            }
            None => (raw, serde_json::from_str(raw)),
        })
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
    #[serde(rename = "resourceVersion", borrow, default)]
    resource_version: Option<Cow<'a, str>>,
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
/// LIST, not once per object. Also what a typed GET response starts with, kind first.
struct TypeHead {
    head: String,
    got: String,
}

impl TypeHead {
    fn of(ar: &ApiResource) -> Self {
        let mut head = serde_json::json!({"apiVersion": ar.api_version, "kind": ar.kind}).to_string();
        head.pop(); // the closing brace
        let (kind, api_version) = (serde_json::json!(ar.kind), serde_json::json!(ar.api_version));
        TypeHead { head, got: format!("{{\"kind\":{kind},\"apiVersion\":{api_version},") }
    }

    /// A GET response's object as the same object's LIST item is sent: a built-in type's GET
    /// starts with `kind` and `apiVersion`, which its LIST items leave out. So an object read
    /// either way is stored as the same bytes (and a body stored once is found again by its
    /// SHA-256). Anything else is left as it is.
    fn as_listed<'b>(&self, body: &'b str) -> Cow<'b, str> {
        let body = body.trim_end(); // the response's newline
        match body.strip_prefix(self.got.as_str()) {
            Some(rest) => Cow::Owned(format!("{{{rest}")),
            None => Cow::Borrowed(body),
        }
    }
}

/// The item's JSON with `apiVersion` and `kind` first: typed LISTs leave them out of their items.
fn with_type_meta(raw: &str, obj: &RawItem<'_>, head: &TypeHead) -> Vec<u8> {
    if obj.api_version.is_some() && obj.kind.is_some() {
        return raw.as_bytes().to_vec();
    }
    let rest = raw.trim_start().strip_prefix('{').unwrap_or(raw).trim_start();
    let mut out = Vec::with_capacity(head.head.len() + raw.len() + 1);
    out.extend_from_slice(head.head.as_bytes());
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
    fn items_out_of_key_order_are_all_kept_and_only_a_relist_skips_what_was_looked_at() {
        let item = |ns: &str, name: &str| format!(r#"{{"metadata":{{"namespace":"{ns}","name":"{name}"}}}}"#);
        let mut listed = Listed::default();
        let kept = |listed: &mut Listed, ns: &str, name: &str| {
            let raw = item(ns, name);
            let obj: RawItem<'_> = serde_json::from_str(&raw).unwrap();
            listed.next_kept(&obj, None).ok().expect("not sorted: never out of order").map(|(_, n)| n)
        };
        // An aggregated API server's order: every object is kept.
        let first: Vec<_> = [("b", "2"), ("a", "9"), ("b", "1"), ("c", "1")]
            .iter()
            .filter_map(|(ns, name)| kept(&mut listed, ns, name))
            .collect();
        assert_eq!(first, ["2", "9", "1", "1"]);
        assert_eq!(listed.last_key.as_deref(), Some("c/1"));
        // After a 410 the LIST starts again: what is up to the greatest key looked at is skipped.
        listed.relisted = true;
        let again: Vec<_> = [("a", "9"), ("b", "2"), ("c", "1"), ("c", "2"), ("d", "0")]
            .iter()
            .filter_map(|(ns, name)| kept(&mut listed, ns, name))
            .collect();
        assert_eq!(again, ["2", "0"]);
    }

    #[test]
    fn a_backup_of_all_namespaces_keeps_only_those_its_plan_found() {
        // The plan found a and b (c was excluded or ephemeral); n was created after the plan.
        let scope = Scope::All { included: ["a", "b"].map(String::from).into() };
        let mut listed = Listed::default();
        let kept: Vec<_> = ["a", "b", "c", "n"]
            .iter()
            .filter_map(|ns| {
                let raw = format!(r#"{{"metadata":{{"namespace":"{ns}","name":"x"}}}}"#);
                let obj: RawItem<'_> = serde_json::from_str(&raw).unwrap();
                listed
                    .next_kept(&obj, Some(&scope))
                    .ok()
                    .expect("not sorted: never out of order")
                    .and_then(|(ns, _)| ns)
            })
            .collect();
        assert_eq!(kept, ["a", "b"]);
    }

    #[test]
    fn a_resource_listed_in_key_order_must_stay_in_it_until_a_relist() {
        assert!(lists_in_key_order("") && lists_in_key_order("apps") && !lists_in_key_order("example.org"));
        let mut listed = Listed { sorted: true, ..Default::default() };
        let next = |listed: &mut Listed, ns: &str, name: &str| {
            let raw = format!(r#"{{"metadata":{{"namespace":"{ns}","name":"{name}"}}}}"#);
            let obj: RawItem<'_> = serde_json::from_str(&raw).unwrap();
            match listed.next_kept(&obj, None) {
                Ok(kept) => Ok(kept.map(|(_, n)| n)),
                Err(TaskError::OutOfOrder { key, last }) => Err((key, last)),
                Err(_) => panic!("not an order error"),
            }
        };
        assert_eq!(next(&mut listed, "a", "1"), Ok(Some("1".into())));
        assert_eq!(next(&mut listed, "a", "2"), Ok(Some("2".into())));
        assert_eq!(next(&mut listed, "b", "0"), Ok(Some("0".into())));
        // The same key again, or one before it, is refused: it could be an object sent already.
        assert_eq!(next(&mut listed, "b", "0"), Err(("b/0".into(), "b/0".into())));
        assert_eq!(next(&mut listed, "a", "3"), Err(("a/3".into(), "b/0".into())));
        // After a 410 the LIST starts again, and what was looked at already is skipped instead.
        listed.relisted = true;
        assert_eq!(next(&mut listed, "a", "1"), Ok(None));
        assert_eq!(next(&mut listed, "c", "1"), Ok(Some("1".into())));
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
    fn a_typed_get_response_is_stored_as_its_list_item_would_be() {
        let head = TypeHead::of(&ar("v1", "ConfigMap"));
        let listed = r#"{"metadata":{"name":"a","namespace":"n"},"data":{"k":"v"}}"#;
        let got = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","namespace":"n"},"data":{"k":"v"}}"#;
        let stored = |raw: &str| {
            let item: RawItem<'_> = serde_json::from_str(raw).unwrap();
            with_type_meta(raw, &item, &head)
        };
        assert_eq!(stored(&head.as_listed(got)), stored(listed));
        assert_eq!(stored(&head.as_listed(&format!("{got}\n"))), stored(listed));
        // A custom resource (its type first, as listed) and an unexpected shape stay as sent.
        let cr = r#"{"apiVersion":"example.org/v1","kind":"Widget","metadata":{"name":"w"}}"#;
        assert_eq!(TypeHead::of(&ar("example.org/v1", "Widget")).as_listed(cr), cr);
        let other = r#"{"kind":"Secret","apiVersion":"v1","metadata":{}}"#;
        assert_eq!(head.as_listed(other), other);
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
