//! `bench-load --prefix P --namespaces N (--from A --to B | --total-from A --total-to B) [--bytes S]
//! [--concurrency C] [--patch ROUND --every K]`: loads (or changes) benchmark objects in the cluster of
//! `KUBECONFIG` (bench tooling; loading is not measured).
//!
//! Creates namespaces `P-00` .. `P-<N-1>` and in each of them, for every `i` in `A..B`, a ConfigMap
//! `cm-<i>` (an application config of about S bytes) and an Opaque Secret `secret-<i>` (about S/4
//! bytes of random data). Objects that already exist are left alone, so loading in stages (0..50,
//! then 50..100, ...) grows the same set. Prints `created=<n> existed=<n>` on stdout.
//!
//! `--total-from A --total-to B` counts objects (ConfigMaps + Secrets, even numbers) over the whole
//! set instead of per namespace: pair `j` (ConfigMap and Secret `<j / N>`) goes to namespace `j % N`,
//! so any even total spreads evenly (5,000 over 200 namespaces: 13 pairs in the first 100, 12 in the
//! others). With totals that are multiples of 2N it is the same set as `--from A/2N --to B/2N`.
//!
//! `--patch ROUND --every K` changes existing objects instead: of the pairs in the range, those with
//! `j % K == ROUND % K` get `data.revision = ROUND` in both the ConfigMap and the Secret (a JSON merge
//! patch), so `--every 100` changes 1% of the objects and successive rounds change different ones.
//! Prints `patched=<n>`.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kubectl_backup_core::kube_client::{KubeOptions, Throttle, client};
use rand::RngExt;

struct Args {
    prefix: String,
    namespaces: usize,
    from: usize,
    to: usize,
    /// `--total-from`/`--total-to`, in objects.
    total: Option<(usize, usize)>,
    bytes: usize,
    concurrency: usize,
    /// `--patch ROUND --every K`.
    patch: Option<u64>,
    every: usize,
}

const USAGE: &str = "usage: bench-load --prefix P --namespaces N (--from A --to B | --total-from A --total-to B) \
    [--bytes S] [--concurrency C] [--patch ROUND --every K]";

fn parse() -> Result<Args> {
    let mut a = Args {
        prefix: "bench".into(),
        namespaces: 50,
        from: 0,
        to: 0,
        total: None,
        bytes: 1024,
        concurrency: 32,
        patch: None,
        every: 100,
    };
    let (mut total_from, mut total_to) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--prefix" => a.prefix = value()?,
            "--namespaces" => a.namespaces = value()?.parse()?,
            "--from" => a.from = value()?.parse()?,
            "--to" => a.to = value()?.parse()?,
            "--bytes" => a.bytes = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--total-from" => total_from = Some(value()?.parse::<usize>()?),
            "--total-to" => total_to = Some(value()?.parse::<usize>()?),
            "--patch" => a.patch = Some(value()?.parse()?),
            "--every" => a.every = value()?.parse()?,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    match (total_from, total_to) {
        (None, None) => {}
        (Some(f), Some(t)) if f % 2 == 0 && t % 2 == 0 => a.total = Some((f, t)),
        (Some(_), Some(_)) => bail!("--total-from and --total-to count ConfigMaps + Secrets: even numbers"),
        _ => bail!("--total-from and --total-to go together; {USAGE}"),
    }
    if a.namespaces == 0 || a.every == 0 || a.concurrency == 0 {
        bail!("--namespaces, --every and --concurrency must be at least 1");
    }
    Ok(a)
}

impl Args {
    /// The pairs in the range as `(j, namespace index, i)`, `j = i * N + namespace index`.
    fn pairs(&self) -> Vec<(usize, usize, usize)> {
        let n = self.namespaces;
        match self.total {
            Some((from, to)) => (from / 2..to / 2).map(|j| (j, j % n, j / n)).collect(),
            None => (0..n).flat_map(|ns| (self.from..self.to).map(move |i| (i * n + ns, ns, i))).collect(),
        }
    }
}

fn main() -> Result<()> {
    kubectl_backup_core::kube_client::install_crypto_provider();
    let args = parse()?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

/// Runs a create; AlreadyExists counts as done. Returns whether it created the object.
async fn create<K>(throttle: &Throttle, api: &Api<K>, obj: &K) -> Result<bool>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PostParams::default();
    match throttle.call(|| api.create(&pp, obj)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn meta(name: String, namespace: Option<&str>, prefix: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: namespace.map(str::to_string),
        labels: Some([("bench".to_string(), prefix.to_string())].into()),
        ..Default::default()
    }
}

/// An application config of about `bytes` bytes: YAML-ish lines, different per object.
fn config_text(ns: &str, i: usize, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 64);
    let mut line = 0;
    while s.len() < bytes {
        s.push_str(&format!("setting_{line:03}: \"{ns}/{i}/value-{}\"\n", (i * 7919 + line * 104_729) % 1_000_003));
        line += 1;
    }
    s
}

async fn run(a: Args) -> Result<()> {
    let client = client(&KubeOptions::default()).await?;
    let throttle = Throttle::new(100_000, 100_000, a.concurrency);
    let names: Vec<String> = (0..a.namespaces).map(|n| format!("{}-{n:02}", a.prefix)).collect();
    if let Some(round) = a.patch {
        return patch(&client, &throttle, &a, &names, round).await;
    }
    let created = AtomicU64::new(0);
    let existed = AtomicU64::new(0);
    let count = |made: bool| {
        let counter = if made { &created } else { &existed };
        counter.fetch_add(1, Ordering::Relaxed);
    };

    // The namespaces first (all of them, concurrently), then every object as its own request, so
    // `--concurrency` requests are in flight all the time.
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let results: Vec<Result<()>> = futures::stream::iter(names.iter().map(|ns| {
        let (ns_api, throttle, count, prefix) = (&ns_api, &throttle, &count, a.prefix.as_str());
        async move {
            let obj = Namespace { metadata: meta(ns.clone(), None, prefix), ..Default::default() };
            count(create(throttle, ns_api, &obj).await.with_context(|| format!("namespace {ns}"))?);
            Ok(())
        }
    }))
    .buffer_unordered(a.concurrency)
    .collect()
    .await;
    results.into_iter().collect::<Result<()>>()?;

    let jobs = a.pairs().into_iter().flat_map(|(_, ns, i)| [(ns, i, false), (ns, i, true)]);
    let results: Vec<Result<()>> = futures::stream::iter(jobs.map(|(ns, i, is_secret)| {
        let ns = names[ns].as_str();
        let client = client.clone();
        let (throttle, prefix, count) = (&throttle, a.prefix.as_str(), &count);
        async move {
            if is_secret {
                let secrets: Api<Secret> = Api::namespaced(client, ns);
                let random: Vec<u8> = {
                    let mut rng = rand::rng();
                    (0..(a.bytes / 4).max(16)).map(|_| rng.random()).collect()
                };
                let secret = Secret {
                    metadata: meta(format!("secret-{i:05}"), Some(ns), prefix),
                    type_: Some("Opaque".into()),
                    data: Some(
                        [
                            ("username".to_string(), ByteString(format!("user-{i}").into_bytes())),
                            ("token".to_string(), ByteString(random)),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                };
                count(create(throttle, &secrets, &secret).await.with_context(|| format!("secret {ns}/secret-{i:05}"))?);
            } else {
                let cms: Api<ConfigMap> = Api::namespaced(client, ns);
                let cm = ConfigMap {
                    metadata: meta(format!("cm-{i:05}"), Some(ns), prefix),
                    data: Some(
                        [
                            ("app.yaml".to_string(), config_text(ns, i, a.bytes)),
                            ("mode".to_string(), "production".to_string()),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                };
                count(create(throttle, &cms, &cm).await.with_context(|| format!("configmap {ns}/cm-{i:05}"))?);
            }
            Ok(())
        }
    }))
    .buffer_unordered(a.concurrency)
    .collect()
    .await;
    results.into_iter().collect::<Result<()>>()?;
    println!("created={} existed={}", created.load(Ordering::Relaxed), existed.load(Ordering::Relaxed));
    Ok(())
}

/// `--patch ROUND`: sets `data.revision` of the selected pairs' ConfigMaps and Secrets.
async fn patch(client: &kube::Client, throttle: &Throttle, a: &Args, names: &[String], round: u64) -> Result<()> {
    let every = a.every;
    let selected = (round % every as u64) as usize;
    let jobs = a
        .pairs()
        .into_iter()
        .filter(|(j, _, _)| j % every == selected)
        .flat_map(|(_, ns, i)| [(ns, i, false), (ns, i, true)]);
    let pp = PatchParams::default();
    let results: Vec<Result<()>> = futures::stream::iter(jobs.map(|(ns, i, is_secret)| {
        let ns = names[ns].as_str();
        let (client, pp) = (client.clone(), &pp);
        async move {
            if is_secret {
                let api: Api<Secret> = Api::namespaced(client, ns);
                let revision = ByteString(round.to_string().into_bytes());
                let body = Patch::Merge(serde_json::json!({"data": {"revision": revision}}));
                let name = format!("secret-{i:05}");
                throttle.call(|| api.patch(&name, pp, &body)).await.with_context(|| format!("secret {ns}/{name}"))?;
            } else {
                let api: Api<ConfigMap> = Api::namespaced(client, ns);
                let body = Patch::Merge(serde_json::json!({"data": {"revision": round.to_string()}}));
                let name = format!("cm-{i:05}");
                throttle
                    .call(|| api.patch(&name, pp, &body))
                    .await
                    .with_context(|| format!("configmap {ns}/{name}"))?;
            }
            Ok(())
        }
    }))
    .buffer_unordered(a.concurrency)
    .collect()
    .await;
    let patched = results.len();
    results.into_iter().collect::<Result<()>>()?;
    println!("patched={patched}");
    Ok(())
}
