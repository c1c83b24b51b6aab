//! `raw-list [--concurrency N] [--every-type] [--namespace NS | --per-namespace] [--decode | --metadata | --protobuf | --store URL]`: the floor for `kubectl backup create` in
//! `bench/backup.sh` — discovery, then a paged LIST (`limit=500`) of every resource type the backup
//! lists, cluster-wide, items discarded.
//!
//! It connects like the plugin (`KUBECONFIG`), discovers like the plugin (`collect::discover`) and by
//! default lists the same resource types `kubectl backup create -A` lists (listable, not in
//! `collect::never_backed_up`); `--every-type` lists every listable type. Pages are parsed only as far
//! as counting the items and reading the continue token: no client-side rate limit, no per-object
//! decoding, no serialization, no compression, no upload. `--concurrency` (default 16, the plugin's
//! default) LISTs run at once; `--concurrency 1` is the sequential floor. `--decode` decodes every
//! page into `DynamicObject`s the way the plugin does (`Api::list`), to split the plugin's cost into
//! decoding and the rest (serializing, archiving, uploading) when profiling. `--metadata` lists
//! metadata only (`PartialObjectMetadataList`, pages of `collect::METADATA_PAGE_SIZE`), as an
//! incremental backup continuing another does: the floor of that backup on the same server.
//! `--namespace NS` lists the namespaced types in NS only, as a backup of that namespace does.
//! `--per-namespace` lists the namespaces first, then lists a namespaced type's rest one namespace at
//! a time after its first page where `kubectl backup create --list-per-namespace auto` does
//! (`collect::namespaces_after_first_page`, the same rule): the floor of `create` listing that way.
//! `--protobuf` asks for ConfigMaps and Secrets in protobuf (`collect::protobuf::Kind`), as `create
//! --list-encoding auto` does, and counts their items without decoding them: that floor.
//! `--store URL` stores what it listed, as `create` does, by the least work that stores the same:
//! every JSON page as the server sent it is hashed (SHA-256, as `create` hashes each object: the
//! same bytes), compressed at the archive's zstd level and uploaded to URL as one object through
//! core's uploader (`ChunkSender`, `Store::upload`). No split into objects, no tar headers, no
//! contents file, no commit: the floor of the same work, below anything that stores objects one
//! by one (`bench/scale.sh`).
//!
//! Prints one summary line on stdout: `types=<n> pages=<n> items=<n> seconds=<s>`, and with
//! `--store` also `stored=<bytes> of=<bytes listed>`.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::Request;
use kubectl_backup_core::collect::protobuf::{Kind, PROTOBUF};
use kubectl_backup_core::collect::{
    METADATA_LIST, METADATA_PAGE_SIZE, NamespaceLists, Resource, discover, lists_in_key_order,
    namespaces_after_first_page, never_backed_up,
};
use kubectl_backup_core::kube_client::{KubeOptions, Throttle, client};
use kubectl_backup_core::store::{ChunkSender, Store, StoreOptions};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::mpsc;

const PAGE_SIZE: u32 = 500;

/// Only what paging needs; the items themselves are skipped by the parser.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    metadata: PageMeta,
    /// `null` in an empty metadata LIST.
    #[serde(default)]
    items: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize, Default)]
struct PageMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
    #[serde(default, rename = "remainingItemCount")]
    remaining: Option<i64>,
}

fn main() -> Result<()> {
    kubectl_backup_core::kube_client::install_crypto_provider();
    let mut concurrency = 16usize;
    let mut every_type = false;
    let mut decode = false;
    let mut metadata = false;
    let mut namespace: Option<String> = None;
    let mut per_namespace = false;
    let mut protobuf = false;
    let mut store: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--concurrency" => {
                concurrency = args.next().context("--concurrency needs a value")?.parse().context("--concurrency")?
            }
            "--every-type" => every_type = true,
            "--decode" => decode = true,
            "--metadata" => metadata = true,
            "--namespace" => namespace = Some(args.next().context("--namespace needs a value")?),
            "--per-namespace" => per_namespace = true,
            "--protobuf" => protobuf = true,
            "--store" => store = Some(args.next().context("--store needs a location URL")?),
            other => {
                bail!(
                    "unknown argument {other:?}; usage: raw-list [--concurrency N] [--every-type] [--namespace NS | --per-namespace] [--decode | --metadata | --protobuf | --store URL]"
                )
            }
        }
    }
    if decode && metadata {
        bail!("--decode and --metadata: a metadata LIST is not decoded into DynamicObjects; choose one");
    }
    if per_namespace && (decode || namespace.is_some()) {
        bail!("--per-namespace lists across namespaces without decoding: not with --decode or --namespace");
    }
    if protobuf && (decode || metadata) {
        bail!("--protobuf lists full objects without decoding them: not with --decode or --metadata");
    }
    if store.is_some() && (decode || metadata || protobuf) {
        bail!(
            "--store stores the JSON pages the server sends, as a backup stores JSON: not with --decode, --metadata or --protobuf"
        );
    }
    let concurrency = concurrency.max(1);
    let opts = Opts { concurrency, every_type, decode, metadata, namespace, per_namespace, protobuf, store };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(opts))
}

struct Opts {
    concurrency: usize,
    every_type: bool,
    decode: bool,
    metadata: bool,
    namespace: Option<String>,
    per_namespace: bool,
    protobuf: bool,
    store: Option<String>,
}

async fn run(opts: Opts) -> Result<()> {
    let Opts { concurrency, every_type, decode, metadata, namespace, per_namespace, protobuf, store } = opts;
    let start = Instant::now();
    let storing = match &store {
        Some(url) => Some(Storing::start(url)?),
        None => None,
    };
    let pages_out = storing.as_ref().map(|s| &s.pages);
    let client = client(&KubeOptions::default()).await?;
    // Discovery is a few dozen requests; the limiter is set so high it never waits.
    let throttle = Throttle::new(100_000, 100_000, concurrency);
    let discovered = discover(&client, &throttle).await?;
    let namespaces: Option<Vec<String>> = match per_namespace {
        true => {
            let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            Some(api.list(&ListParams::default()).await?.items.into_iter().filter_map(|n| n.metadata.name).collect())
        }
        false => None,
    };
    let types: Vec<Resource> = discovered
        .resources
        .into_iter()
        .filter(|r| r.supports("list") && (every_type || never_backed_up(&r.key).is_none()))
        .filter(|r| namespace.is_none() || r.namespaced)
        .collect();
    let n_types = types.len();
    let results: Vec<Result<(u64, u64)>> = futures::stream::iter(types.into_iter().map(|r| {
        let (client, namespace, namespaces) = (client.clone(), namespace.as_deref(), namespaces.as_deref());
        async move {
            let how = How {
                decode,
                metadata,
                protobuf: protobuf && Kind::of(&r.ar.group, &r.ar.version, &r.ar.plural).is_some(),
                store: pages_out,
            };
            list_type(&client, &r, namespace, namespaces, how).await.with_context(|| format!("listing {}", r.key))
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    let (mut pages, mut items) = (0u64, 0u64);
    for r in results {
        let (p, i) = r?;
        pages += p;
        items += i;
    }
    let stored = match storing {
        Some(s) => {
            let (listed, stored) = s.finish().await?;
            format!(" stored={stored} of={listed}")
        }
        None => String::new(),
    };
    println!("types={n_types} pages={pages} items={items} seconds={:.3}{stored}", start.elapsed().as_secs_f64());
    Ok(())
}

/// `--store`: the pages listed, hashed, compressed and uploaded as they come.
struct Storing {
    pages: mpsc::Sender<Bytes>,
    compressor: tokio::task::JoinHandle<std::io::Result<u64>>,
    upload: tokio::task::JoinHandle<kubectl_backup_core::Result<u64>>,
}

impl Storing {
    fn start(url: &str) -> Result<Storing> {
        let store = Store::open_url(url, &StoreOptions::default()).with_context(|| format!("opening {url}"))?;
        let (pages, mut received) = mpsc::channel::<Bytes>(64);
        let (chunks, to_upload) = mpsc::channel::<Bytes>(4);
        let compressor = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            use kubectl_backup_core::archive::{Digesting, ZSTD_LEVEL, sha256_hex};
            let out = Digesting::new(ChunkSender::new(chunks, kubectl_backup_core::backup::CHUNK));
            let mut zstd = zstd::Encoder::new(out, ZSTD_LEVEL)?;
            zstd.include_checksum(true)?;
            let (mut listed, mut digests) = (0u64, Vec::new());
            while let Some(page) = received.blocking_recv() {
                digests.push(sha256_hex(&page));
                listed += page.len() as u64;
                zstd.write_all(&page)?;
            }
            let (mut sender, _, _) = zstd.finish()?.finish();
            sender.flush()?;
            std::hint::black_box(digests);
            Ok(listed)
        });
        let path = object_store::path::Path::from(format!("raw-list/{}.zst", jiff::Timestamp::now().as_nanosecond()));
        let upload = tokio::spawn(async move { store.upload(&path, to_upload, |_| {}).await });
        Ok(Storing { pages, compressor, upload })
    }

    /// Waits for the last page to be compressed and uploaded: (bytes listed, bytes stored).
    async fn finish(self) -> Result<(u64, u64)> {
        drop(self.pages);
        let listed = self.compressor.await?.context("compressing the pages")?;
        let stored = self.upload.await?.context("uploading the pages")?;
        Ok((listed, stored))
    }
}

/// All pages of one type, cluster-wide or in `namespace` (of metadata only with `metadata`); with
/// `per_namespace` (every namespace), the rest after the first page one namespace at a time where
/// the plugin would. Returns (pages, items).
async fn list_type(
    client: &kube::Client,
    r: &Resource,
    namespace: Option<&str>,
    per_namespace: Option<&[String]>,
    how: How<'_>,
) -> Result<(u64, u64)> {
    let How { metadata, .. } = how;
    let limit = if metadata { METADATA_PAGE_SIZE } else { PAGE_SIZE };
    let Some(all) = per_namespace.filter(|_| r.namespaced && namespace.is_none() && lists_in_key_order(&r.ar.group))
    else {
        return continue_pages(client, r, namespace, how, None).await;
    };
    let request = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, None));
    let first = page(client, &request, &ListParams::default().limit(limit), how).await?;
    let (mut pages, mut n) = (1u64, first.items);
    let Some(token) = first.continue_.filter(|t| !t.is_empty()) else { return Ok((pages, n)) };
    let all = all.iter().map(String::as_str);
    let Some(namespaces) = namespaces_after_first_page(NamespaceLists::Auto, limit, first.remaining, all) else {
        let (p, i) = continue_pages(client, r, None, how, Some(token)).await?;
        return Ok((pages + p, n + i));
    };
    // The first page's items are counted again, as the plugin reads them again.
    for ns in &namespaces {
        let (p, i) = continue_pages(client, r, Some(ns), how, None).await?;
        pages += p;
        n += i;
    }
    Ok((pages, n))
}

/// The pages of one type's LIST, cluster-wide or in `namespace`, from the one `token` continues
/// (from the first without it). Returns (pages, items).
async fn continue_pages(
    client: &kube::Client,
    r: &Resource,
    namespace: Option<&str>,
    how: How<'_>,
    mut token: Option<String>,
) -> Result<(u64, u64)> {
    let How { decode, metadata, .. } = how;
    let request = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, namespace));
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &r.ar),
        None => Api::all_with(client.clone(), &r.ar),
    };
    let (mut pages, mut items) = (0u64, 0u64);
    loop {
        let mut lp = ListParams::default().limit(if metadata { METADATA_PAGE_SIZE } else { PAGE_SIZE });
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let (n, next) = if decode {
            let page = api.list(&lp).await?;
            (page.items.len() as u64, page.metadata.continue_)
        } else {
            let p = page(client, &request, &lp, how).await?;
            (p.items, p.continue_)
        };
        pages += 1;
        items += n;
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok((pages, items));
        }
    }
}

/// How each type is listed.
#[derive(Clone, Copy)]
struct How<'a> {
    decode: bool,
    metadata: bool,
    /// In protobuf (a ConfigMap or Secret with `--protobuf`).
    protobuf: bool,
    /// Where each JSON page goes to be stored (`--store`).
    store: Option<&'a mpsc::Sender<Bytes>>,
}

/// One page as counted: its items, continue token and remaining item count.
struct Counted {
    items: u64,
    continue_: Option<String>,
    remaining: Option<i64>,
}

/// One page of `request`'s LIST with `lp`, in JSON (of metadata only with `metadata`) or in
/// protobuf, counted without decoding its items.
async fn page(client: &kube::Client, request: &Request, lp: &ListParams, how: How<'_>) -> Result<Counted> {
    let mut req = request.list(lp)?;
    if how.metadata {
        req.headers_mut().insert("accept", METADATA_LIST.try_into()?);
    }
    if !how.protobuf && how.store.is_none() {
        let page: Page = client.request(req).await?;
        return Ok(page.counted());
    }
    use http_body_util::BodyExt;
    if how.protobuf {
        req.headers_mut().insert("accept", PROTOBUF.try_into()?);
    }
    let res = client.send(req.map(kube::client::Body::from)).await?;
    let status = res.status();
    let wire = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status} for a LIST");
    }
    if how.protobuf {
        return count_protobuf(&wire).context("reading a protobuf LIST page");
    }
    let counted = serde_json::from_slice::<Page>(&wire).context("reading a LIST page")?.counted();
    if let Some(pages) = how.store {
        pages.send(wire).await.context("the compressor stopped")?;
    }
    Ok(counted)
}

impl Page {
    fn counted(self) -> Counted {
        let items = self.items.map_or(0, |i| i.len()) as u64;
        Counted { items, continue_: self.metadata.continue_, remaining: self.metadata.remaining }
    }
}

/// A protobuf LIST page's items, counted, and its list metadata: `runtime.Unknown`'s `raw` is the
/// list, whose field 1 is its `ListMeta` and each field 2 an item.
fn count_protobuf(wire: &[u8]) -> Option<Counted> {
    use kubectl_backup_core::collect::protobuf::{delimited, unwrap};
    use prost::Message;
    #[derive(Clone, PartialEq, Message)]
    struct ListMeta {
        #[prost(string, optional, tag = "3")]
        continue_: Option<String>,
        #[prost(int64, optional, tag = "4")]
        remaining_item_count: Option<i64>,
    }
    let mut counted = Counted { items: 0, continue_: None, remaining: None };
    for (tag, bytes) in delimited(unwrap(wire)?)? {
        match tag {
            1 => {
                let meta = ListMeta::decode(bytes).ok()?;
                (counted.continue_, counted.remaining) = (meta.continue_, meta.remaining_item_count);
            }
            2 => counted.items += 1,
            _ => {}
        }
    }
    Some(counted)
}
