//! `raw-list [--concurrency N] [--every-type] [--namespace NS] [--decode | --metadata]`: the floor for `kubectl backup create` in
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
//!
//! Prints one summary line on stdout: `types=<n> pages=<n> items=<n> seconds=<s>`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::Request;
use kubectl_backup_core::collect::{METADATA_LIST, METADATA_PAGE_SIZE, Resource, discover, never_backed_up};
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
}

fn main() -> Result<()> {
    kubectl_backup_core::kube_client::install_crypto_provider();
    let mut concurrency = 16usize;
    let mut every_type = false;
    let mut decode = false;
    let mut metadata = false;
    let mut namespace: Option<String> = None;
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
            other => {
                bail!(
                    "unknown argument {other:?}; usage: raw-list [--concurrency N] [--every-type] [--namespace NS] [--decode | --metadata]"
                )
            }
        }
    }
    if decode && metadata {
        bail!("--decode and --metadata: a metadata LIST is not decoded into DynamicObjects; choose one");
    }
    let concurrency = concurrency.max(1);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(
        concurrency,
        every_type,
        decode,
        metadata,
        namespace,
    ))
}

async fn run(
    concurrency: usize,
    every_type: bool,
    decode: bool,
    metadata: bool,
    namespace: Option<String>,
) -> Result<()> {
    let start = Instant::now();
    let client = client(&KubeOptions::default()).await?;
    // Discovery is a few dozen requests; the limiter is set so high it never waits.
    let throttle = Throttle::new(100_000, 100_000, concurrency);
    let discovered = discover(&client, &throttle).await?;
    let types: Vec<Resource> = discovered
        .resources
        .into_iter()
        .filter(|r| r.supports("list") && (every_type || never_backed_up(&r.key).is_none()))
        .filter(|r| namespace.is_none() || r.namespaced)
        .collect();
    let n_types = types.len();
    let results: Vec<Result<(u64, u64)>> = futures::stream::iter(types.into_iter().map(|r| {
        let (client, namespace) = (client.clone(), namespace.as_deref());
        async move {
            list_type(&client, &r, namespace, decode, metadata).await.with_context(|| format!("listing {}", r.key))
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

/// All pages of one type, cluster-wide or in `namespace` (of metadata only with `metadata`).
/// Returns (pages, items).
async fn list_type(
    client: &kube::Client,
    r: &Resource,
    namespace: Option<&str>,
    decode: bool,
    metadata: bool,
) -> Result<(u64, u64)> {
    let request = Request::new(<DynamicObject as kube::Resource>::url_path(&r.ar, namespace));
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &r.ar),
        None => Api::all_with(client.clone(), &r.ar),
    };
    let (mut pages, mut items) = (0u64, 0u64);
    let mut token: Option<String> = None;
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
