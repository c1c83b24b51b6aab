//! `raw-create [--concurrency N] PATH...`: the floor for `kubectl backup restore` in
//! `bench/restore.sh` — POSTs prepared objects as they are, Namespaces first.
//!
//! PATH is a JSON file or a directory of them (read recursively, `*.json` in name order); a file holds
//! one or more JSON documents, each an object or a `List` of them (what `kubectl create -f` takes,
//! e.g. the objects `bench/restore.sh` renders from the backup's archive). It connects like the plugin
//! (`KUBECONFIG`) and discovers like it (`collect::discover`) to map each object's `apiVersion` and
//! `kind` to its resource, then creates every Namespace, then every other object, each phase with
//! `--concurrency` requests in flight (default 16, the default of `kubectl backup restore`'s
//! `--concurrency`, plugin/src/args.rs) and the restore's field manager. No client-side rate limit, no
//! retries, no archive, no SHA-256 checks, no existing-object handling: any refused create is an error.
//! Answers are parsed only as far as JSON.
//!
//! Prints one summary line on stdout: `namespaces=<n> objects=<n> created=<n> seconds=<s>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::Request;
use kubectl_backup_core::FIELD_MANAGER;
use kubectl_backup_core::collect::discover;
use kubectl_backup_core::kube_client::{KubeOptions, Throttle, client};
use serde::de::IgnoredAny;
use serde_json::Value;

fn main() -> Result<()> {
    kubectl_backup_core::kube_client::install_crypto_provider();
    let mut concurrency = 16usize;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--concurrency" => {
                concurrency = args.next().context("--concurrency needs a value")?.parse().context("--concurrency")?
            }
            flag if flag.starts_with('-') => {
                bail!("unknown argument {flag:?}; usage: raw-create [--concurrency N] PATH...")
            }
            path => paths.push(PathBuf::from(path)),
        }
    }
    if paths.is_empty() {
        bail!("usage: raw-create [--concurrency N] PATH...");
    }
    let concurrency = concurrency.max(1);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(concurrency, &paths))
}

/// Every JSON file under `path` (or `path` itself), in name order.
fn files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "json") {
                files(&e, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// The objects of one file: every document, `List`s flattened.
fn objects(path: &Path, out: &mut Vec<Value>) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    for doc in serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>() {
        let mut doc: Value = doc.with_context(|| format!("parsing {}", path.display()))?;
        let is_list = doc["kind"].as_str().is_some_and(|k| k.ends_with("List"));
        match doc.get_mut("items") {
            Some(Value::Array(items)) if is_list => out.append(items),
            _ => out.push(doc),
        }
    }
    Ok(())
}

/// One create: the URL and the body to POST.
struct Post {
    what: String,
    request: hyper::Request<Vec<u8>>,
}

async fn run(concurrency: usize, paths: &[PathBuf]) -> Result<()> {
    let start = Instant::now();
    let mut list = Vec::new();
    for p in paths {
        files(p, &mut list)?;
    }
    let mut objs = Vec::new();
    for f in &list {
        objects(f, &mut objs)?;
    }

    let client = client(&KubeOptions::default()).await?;
    let throttle = Throttle::new(100_000, 100_000, concurrency);
    let discovered = discover(&client, &throttle).await?;
    // (group, kind) -> (plural, namespaced)
    let kinds: HashMap<(String, String), (String, bool)> = discovered
        .resources
        .iter()
        .filter(|r| r.supports("create"))
        .map(|r| ((r.ar.group.clone(), r.ar.kind.clone()), (r.ar.plural.clone(), r.namespaced)))
        .collect();
    let pp = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
    let (mut namespaces, mut others) = (Vec::new(), Vec::new());
    for obj in objs {
        let api_version = obj["apiVersion"].as_str().context("an object without apiVersion")?.to_string();
        let kind = obj["kind"].as_str().context("an object without kind")?.to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
        let Some((plural, namespaced)) = kinds.get(&(group.to_string(), kind.clone())) else {
            bail!("the server has no resource for {kind} in {api_version:?}");
        };
        let ar = ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: api_version.clone(),
            kind: kind.clone(),
            plural: plural.clone(),
        };
        let ns = obj["metadata"]["namespace"].as_str().filter(|_| *namespaced);
        if *namespaced && ns.is_none() {
            bail!("{kind} {name:?} has no namespace");
        }
        let url = <DynamicObject as kube::Resource>::url_path(&ar, ns);
        let body = serde_json::to_vec(&obj)?;
        let what = format!("{kind} {}{name}", ns.map(|n| format!("{n}/")).unwrap_or_default());
        let post = Post { what, request: Request::new(url).create(&pp, body)? };
        if kind == "Namespace" && group.is_empty() { namespaces.push(post) } else { others.push(post) }
    }

    let (n_namespaces, n_objects) = (namespaces.len(), namespaces.len() + others.len());
    let mut created = 0usize;
    for phase in [namespaces, others] {
        let results: Vec<Result<()>> = futures::stream::iter(phase.into_iter().map(|p| {
            let client = client.clone();
            async move {
                client.request::<IgnoredAny>(p.request).await.with_context(|| format!("creating {}", p.what))?;
                Ok(())
            }
        }))
        .buffer_unordered(concurrency)
        .collect()
        .await;
        for r in results {
            r?;
            created += 1;
        }
    }
    println!(
        "namespaces={n_namespaces} objects={n_objects} created={created} seconds={:.3}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
