//! `presign --location L [--expires S] (url get|put KEY... | backup-plan --stem STEM --part-size B
//! --parts N | restore-plan --stem STEM)`: presigned URLs of a location, for `bench/volumes.sh`,
//! which runs the volume mover (`backup-webhook mover`) on the host and needs what the plugin would
//! give its Pod.
//!
//! The location is opened like the plugin opens it (`Store::open_url`, credentials and endpoint from
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`), and URLs are
//! signed with `Store::signed_url`, valid for `--expires` seconds (default 3600).
//!
//! - `url get|put KEY...` prints one URL per line, in the order of the keys.
//! - `backup-plan` prints a mover backup plan: N part URLs `STEM-00000.tar.zst`... (the plugin's
//!   names) and `STEM-manifest.json`.
//! - `restore-plan` reads `STEM-manifest.json` from the location (what a backup mover uploaded) and
//!   prints the mover restore plan of its parts, each with its size and SHA-256.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;
use kubectl_backup_core::store::{Store, StoreOptions};
use kubectl_backup_core::volume::mover::{Manifest, PartSource, Plan};
use object_store::path::Path;

const USAGE: &str = "usage: presign --location L [--expires SECONDS] \
    (url get|put KEY... | backup-plan --stem STEM --part-size BYTES --parts N | restore-plan --stem STEM)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    kubectl_backup_core::kube_client::install_crypto_provider();
    let (mut location, mut expires, mut rest) = (None, 3600u64, Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--location" => location = args.next(),
            "--expires" => expires = args.next().context("--expires needs seconds")?.parse().context("--expires")?,
            _ => rest.push(a),
        }
    }
    let location = location.context(USAGE)?;
    let store = Store::open_url(&location, &StoreOptions::default())?;
    let sign = Signer { store: &store, expires: Duration::from_secs(expires) };
    let out = match rest.first().map(String::as_str) {
        Some("url") => {
            let method = match rest.get(1).map(String::as_str) {
                Some("get") => Method::GET,
                Some("put") => Method::PUT,
                _ => bail!("url: get or put? {USAGE}"),
            };
            let mut lines = String::new();
            for key in &rest[2..] {
                lines += &sign.url(method.clone(), key).await?;
                lines.push('\n');
            }
            lines
        }
        Some("backup-plan") => {
            let stem = flag(&rest, "--stem")?;
            let part_size = flag(&rest, "--part-size")?.parse().context("--part-size")?;
            let count: usize = flag(&rest, "--parts")?.parse().context("--parts")?;
            let mut parts = Vec::with_capacity(count);
            for i in 0..count {
                parts.push(sign.url(Method::PUT, &part_key(stem, i)).await?);
            }
            let manifest = sign.url(Method::PUT, &format!("{stem}-manifest.json")).await?;
            serde_json::to_string(&Plan::Backup { part_size, parts, manifest, recipient: None })? + "\n"
        }
        Some("restore-plan") => {
            let stem = flag(&rest, "--stem")?;
            let key = format!("{stem}-manifest.json");
            let body = store.get_optional_within(&Path::from(key.as_str()), 16 << 20).await?;
            let body = body.with_context(|| format!("no {key} in {location}: did the backup mover finish?"))?;
            let manifest: Manifest = serde_json::from_slice(&body).with_context(|| format!("reading {key}"))?;
            let mut parts = Vec::with_capacity(manifest.parts.len());
            for (i, p) in manifest.parts.into_iter().enumerate() {
                let url = sign.url(Method::GET, &part_key(stem, i)).await?;
                parts.push(PartSource { url, size: p.size, sha256: p.sha256 });
            }
            serde_json::to_string(&Plan::Restore { parts, identity: None })? + "\n"
        }
        _ => bail!(USAGE),
    };
    print!("{out}");
    Ok(())
}

struct Signer<'a> {
    store: &'a Store,
    expires: Duration,
}

impl Signer<'_> {
    async fn url(&self, method: Method, key: &str) -> Result<String> {
        let url = self.store.signed_url(method, &Path::from(key), self.expires).await?;
        Ok(url.to_string())
    }
}

/// The plugin's name of a volume's part `i` (`core/src/volume/mod.rs`).
fn part_key(stem: &str, i: usize) -> String {
    format!("{stem}-{i:05}.tar.zst")
}

/// The value after `name` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Result<&'a str> {
    let at = args.iter().position(|a| a == name).with_context(|| format!("{name} is required; {USAGE}"))?;
    args.get(at + 1).map(String::as_str).with_context(|| format!("{name} needs a value"))
}
