//! `bench-load --prefix P --namespaces N --from A --to B [--bytes S] [--concurrency C]`: loads
//! benchmark objects into the cluster of `KUBECONFIG` (bench tooling; loading is not measured).
//!
//! Creates namespaces `P-00` .. `P-<N-1>` and in each of them, for every `i` in `A..B`, a ConfigMap
//! `cm-<i>` (an application config of about S bytes) and an Opaque Secret `secret-<i>` (about S/4
//! bytes of random data). Objects that already exist are left alone, so loading in stages (0..50,
//! then 50..100, ...) grows the same set. Prints `created=<n> existed=<n>` on stdout.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kubectl_backup_core::kube_client::{KubeOptions, Throttle, client};
use rand::RngExt;

struct Args {
    prefix: String,
    namespaces: usize,
    from: usize,
    to: usize,
    bytes: usize,
    concurrency: usize,
}

fn parse() -> Result<Args> {
    let mut a = Args { prefix: "bench".into(), namespaces: 50, from: 0, to: 0, bytes: 1024, concurrency: 32 };
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
            other => bail!(
                "unknown argument {other:?}; usage: bench-load --prefix P --namespaces N --from A --to B [--bytes S] [--concurrency C]"
            ),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
    let created = AtomicU64::new(0);
    let existed = AtomicU64::new(0);
    let count = |made: bool| {
        let counter = if made { &created } else { &existed };
        counter.fetch_add(1, Ordering::Relaxed);
    };

    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &names {
        let obj = Namespace { metadata: meta(ns.clone(), None, &a.prefix), ..Default::default() };
        count(create(&throttle, &ns_api, &obj).await?);
    }

    let jobs = names.iter().flat_map(|ns| (a.from..a.to).map(move |i| (ns.as_str(), i)));
    let results: Vec<Result<()>> = futures::stream::iter(jobs.map(|(ns, i)| {
        let client = client.clone();
        let (throttle, prefix, count) = (&throttle, a.prefix.as_str(), &count);
        async move {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
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
            Ok(())
        }
    }))
    .buffer_unordered(a.concurrency)
    .collect()
    .await;
    for r in results {
        r?;
    }
    println!("created={} existed={}", created.load(Ordering::Relaxed), existed.load(Ordering::Relaxed));
    Ok(())
}
