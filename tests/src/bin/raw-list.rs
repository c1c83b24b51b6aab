//! `raw-list [--concurrency N] [--every-type] [--namespace NS | --per-namespace] [--decode | --metadata]`: the floor for `kubectl backup create` in
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
//!
//! Prints one summary line on stdout: `types=<n> pages=<n> items=<n> seconds=<s>`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::Request;
use kubectl_backup_core::collect::{
    METADATA_LIST, METADATA_PAGE_SIZE, NamespaceLists, Resource, discover, lists_in_key_order,
    namespaces_after_first_page, never_backed_up,
};
use kubectl_backup_core::kube_client::{KubeOptions, Throttle, client};
use serde::Deserialize;
use serde::de::IgnoredAny;

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
            other => {
                bail!(
                    "unknown argument {other:?}; usage: raw-list [--concurrency N] [--every-type] [--namespace NS | --per-namespace] [--decode | --metadata]"
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
    let concurrency = concurrency.max(1);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(
        concurrency,
        every_type,
        decode,
        metadata,
        namespace,
        per_namespace,
    ))
}

async fn run(
    concurrency: usize,
    every_type: bool,
    decode: bool,
    metadata: bool,
    namespace: Option<String>,
    per_namespace: bool,
) -> Result<()> {
    let start = Instant::now();
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
            list_type(&client, &r, namespace, namespaces, decode, metadata)
                .await
                .with_context(|| format!("listing {}", r.key))
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
    println!("types={n_types} pages={pages} items={items} seconds={:.3}", start.elapsed().as_secs_f64());
    Ok(())
}

/// All pages of one type, cluster-wide or in `namespace` (of metadata only with `metadata`); with
/// `per_namespace` (every namespace), the rest after the first page one namespace at a time where
/// the plugin would. Returns (pages, items).
async fn list_type(
    client: &kube::Client,
    r: &Resource,
    namespace: Option<&str>,
    per_namespace: Option<&[String]>,
    decode: bool,
    metadata: bool,
) -> Result<(u64, u64)> {
    let limit = if metadata { METADATA_PAGE_SIZE } else { PAGE_SIZE };
    let Some(all) = per_namespace.filter(|_| r.namespaced && namespace.is_none() && lists_in_key_order(&r.ar.group))
    else {
        return continue_pages(client, r, namespace, decode, metadata, None).await;
    };
    let mut req = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, None))
        .list(&ListParams::default().limit(limit))?;
    if metadata {
        req.headers_mut().insert("accept", METADATA_LIST.try_into()?);
    }
    let first: Page = client.request(req).await?;
    let (mut pages, mut n) = (1u64, first.items.map_or(0, |i| i.len()) as u64);
    let Some(token) = first.metadata.continue_.filter(|t| !t.is_empty()) else { return Ok((pages, n)) };
    let all = all.iter().map(String::as_str);
    let Some(namespaces) = namespaces_after_first_page(NamespaceLists::Auto, limit, first.metadata.remaining, all)
    else {
        let (p, i) = continue_pages(client, r, None, decode, metadata, Some(token)).await?;
        return Ok((pages + p, n + i));
    };
    // The first page's items are counted again, as the plugin reads them again.
    for ns in &namespaces {
        let (p, i) = continue_pages(client, r, Some(ns), decode, metadata, None).await?;
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
    decode: bool,
    metadata: bool,
    mut token: Option<String>,
) -> Result<(u64, u64)> {
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
            (page.items.len(), page.metadata.continue_)
        } else {
            let mut req = request.list(&lp)?;
            if metadata {
                req.headers_mut().insert("accept", METADATA_LIST.try_into()?);
            }
            let page: Page = client.request(req).await?;
            (page.items.map_or(0, |i| i.len()), page.metadata.continue_)
        };
        pages += 1;
        items += n as u64;
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok((pages, items));
        }
    }
}
