//! What runs inside a mover Pod (`backup-webhook mover`): one volume's files to numbered parts at
//! presigned URLs, or back.
//!
//! The Pod holds no credentials of the location: its plan (a Secret the client creates beside it)
//! lists one presigned URL per part, valid for this run only. Backing up, the tree is written as a
//! tar ([`super::tree`]), compressed with zstd and cut into parts of `partSize` bytes; each part's
//! SHA-256 goes into a manifest uploaded last, and the manifest's own SHA-256 is the Pod's
//! termination message, which the client checks before it records the parts in the backup.
//! Restoring, each part is downloaded and its size and SHA-256 checked against the backup's
//! metadata before any of its bytes reach the decompressor, so nothing unverified is written.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::tree::{TreeStats, extract_tree, write_tree};
use crate::{Error, Result};

/// The stored stream's format.
pub const FORMAT: &str = "tar+zstd";
/// Where the kubelet reads the termination message from (the Pod's default path).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The termination message is cut at 4096 bytes by the kubelet: keep it well below.
const SKIPPED_SHOWN: usize = 20;
/// Attempts per part transfer (the part is in memory, so a failed one is simply sent again).
const ATTEMPTS: u32 = 4;

/// What a mover Pod does, from its plan file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum Plan {
    /// Read the volume: parts of `part_size` bytes PUT to `parts` in order, then the manifest.
    #[serde(rename_all = "camelCase")]
    Backup {
        part_size: u64,
        parts: Vec<String>,
        manifest: String,
        /// Encrypt the stream (after compression) to this age recipient: the volume's own key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recipient: Option<String>,
    },
    /// Write the volume from the parts, each checked before use.
    #[serde(rename_all = "camelCase")]
    Restore {
        parts: Vec<PartSource>,
        /// The volume's own age identity, when its parts are encrypted (never the location's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
    },
}

/// A part to download and what it must be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartSource {
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

/// A stored part, as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartDigest {
    pub size: u64,
    pub sha256: String,
}

/// What a backup mover stored, uploaded after the last part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub parts: Vec<PartDigest>,
    pub size: u64,
    pub sha256: String,
    pub tree: TreeStats,
}

/// A backup mover's termination message: which manifest it uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finished {
    pub manifest_sha256: String,
    pub manifest_size: u64,
    /// A restore mover's: what it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeStats>,
}

/// A mover's progress, reported every [`PROGRESS_EVERY`] while it runs (the Pod prints it as a
/// line of its log, which the client reads): backing up, bytes of the tar stream read against
/// [`super::tree::measure`]; restoring, bytes of the stored stream checked and written against
/// the parts' total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Where progress goes.
pub type Report = std::sync::Arc<dyn Fn(Moved) + Send + Sync>;

/// Counts shared between the thread that moves the bytes and the reporter.
#[derive(Default)]
struct Counter {
    done: AtomicU64,
    total: AtomicU64,
}

impl Counter {
    fn moved(&self) -> Moved {
        let total = self.total.load(Ordering::Relaxed);
        // The total is an estimate when backing up: never show more than it.
        Moved { bytes_done: self.done.load(Ordering::Relaxed).min(total), bytes_total: total }
    }
}

/// Reports `counter` every [`PROGRESS_EVERY`] until dropped.
struct Reporter(tokio::task::JoinHandle<()>);

impl Reporter {
    fn start(counter: Arc<Counter>, report: Report) -> Reporter {
        Reporter(tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                report(counter.moved());
            }
        }))
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the plan at `plan` against the volume mounted at `dir`; writes the outcome to
/// `termination` (the Pod's termination message). Progress goes to `report`. With
/// `bytes_per_second`, the files are read (or written) no faster than that.
pub async fn run(
    plan: &Path,
    dir: &Path,
    termination: &Path,
    report: Report,
    bytes_per_second: Option<u64>,
) -> Result<()> {
    let text = std::fs::read(plan).map_err(|e| Error::Io { path: plan.into(), source: e })?;
    let plan: Plan = serde_json::from_slice(&text)
        .map_err(|e| Error::invalid("mover plan", plan.display().to_string(), e.to_string()))?;
    let http = client()?;
    let counter = Arc::new(Counter::default());
    let reporter = Reporter::start(counter.clone(), report.clone());
    let finished = match plan {
        Plan::Backup { part_size, parts, manifest, recipient } => {
            let seal = recipient.map(|r| crate::crypto::Seal::recipients(&[r])).transpose()?;
            let to = Upload { part_size, urls: &parts, manifest_url: &manifest, seal };
            back_up(&http, dir, to, &counter, bytes_per_second).await?
        }
        Plan::Restore { parts, identity } => {
            let keys = match identity {
                Some(text) => {
                    let mut keys = crate::crypto::Unseal::default();
                    keys.add_identity("the plan", text)?;
                    Some(keys)
                }
                None => None,
            };
            restore(&http, dir, parts, keys, &counter, bytes_per_second).await?
        }
    };
    drop(reporter);
    let mut last = counter.moved();
    last.bytes_done = last.bytes_total;
    report(last);
    let message = serde_json::to_vec(&finished).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(termination, message).map_err(|e| Error::Io { path: termination.into(), source: e })
}

/// Counts what passes through to the compressor.
struct Counting<W> {
    inner: W,
    counter: Arc<Counter>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.counter.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Holds a stream of files to a rate: once the bytes so far are due later than now, the (blocking)
/// thread that moves them sleeps until then. Short waits are left to add up, so that a stream of
/// small writes is not a stream of tiny sleeps.
struct Paced<T> {
    inner: T,
    /// The start, the bytes per second and the bytes so far.
    pace: Option<(std::time::Instant, f64, u64)>,
}

impl<T> Paced<T> {
    const LEAST_WAIT: Duration = Duration::from_millis(20);

    fn new(inner: T, bytes_per_second: Option<u64>) -> Paced<T> {
        Paced { inner, pace: bytes_per_second.map(|rate| (std::time::Instant::now(), rate as f64, 0)) }
    }

    fn passed(&mut self, n: usize) {
        if let Some((start, rate, done)) = &mut self.pace {
            *done += n as u64;
            let due = Duration::from_secs_f64(*done as f64 / *rate);
            if let Some(wait) = due.checked_sub(start.elapsed())
                && wait >= Self::LEAST_WAIT
            {
                std::thread::sleep(wait);
            }
        }
    }
}

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.passed(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.passed(n);
        Ok(n)
    }
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| Error::Other(format!("HTTP client: {e}")))
}

/// Where a backup mover's stream goes.
struct Upload<'a> {
    part_size: u64,
    urls: &'a [String],
    manifest_url: &'a str,
    /// The volume's own key, when the location is encrypted.
    seal: Option<crate::crypto::Seal>,
}

/// Tar, compress, (encrypt,) cut and upload; the manifest last.
async fn back_up(
    http: &reqwest::Client,
    dir: &Path,
    to: Upload<'_>,
    counter: &Arc<Counter>,
    bytes_per_second: Option<u64>,
) -> Result<Finished> {
    let Upload { part_size, urls, manifest_url, seal } = to;
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    let (dir, max_parts, counter) = (dir.to_path_buf(), urls.len(), counter.clone());
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<TreeStats> {
        // Metadata only, before the data: what progress is shown against.
        counter.total.store(super::tree::measure(&dir)?, Ordering::Relaxed);
        let sink = Parts { tx, part_size: part_size as usize, buf: Vec::new(), sent: 0, max_parts };
        let sealed = crate::crypto::Sealed::new(sink, seal.as_ref()).map_err(std::io::Error::other)?;
        let encoder = zstd::Encoder::new(sealed, crate::archive::ZSTD_LEVEL)?;
        let paced = Paced::new(Counting { inner: encoder, counter }, bytes_per_second);
        let (paced, stats) = write_tree(&dir, paced)?;
        paced.inner.inner.finish()?.finish()?.finish()?;
        Ok(stats)
    });
    // The stream's digest is taken here, beside the upload, not on the compressing thread.
    let (mut parts, mut whole, mut size) = (Vec::new(), Sha256::new(), 0);
    while let Some(part) = rx.recv().await {
        let url = &urls[parts.len()];
        whole.update(&part);
        size += part.len() as u64;
        let digest = PartDigest { size: part.len() as u64, sha256: crate::archive::sha256_hex(&part) };
        put(http, url, part).await.map_err(|e| Error::Other(format!("uploading part {}: {e}", parts.len())))?;
        parts.push(digest);
    }
    let tree = writer
        .await
        .map_err(|e| Error::Other(format!("reading the volume: {e}")))?
        .map_err(|e| Error::Other(format!("reading the volume: {e}")))?;
    let sha256 = hex::encode(whole.finalize());
    let manifest = Manifest { format: FORMAT.into(), parts, size, sha256, tree: shown(tree) };
    let body = Bytes::from(serde_json::to_vec(&manifest).map_err(|e| Error::Other(e.to_string()))?);
    let finished =
        Finished { manifest_sha256: crate::archive::sha256_hex(&body), manifest_size: body.len() as u64, tree: None };
    put(http, manifest_url, body).await.map_err(|e| Error::Other(format!("uploading the manifest: {e}")))?;
    Ok(finished)
}

/// The stats with at most [`SKIPPED_SHOWN`] skipped entries named (and how many more there were).
fn shown(mut tree: TreeStats) -> TreeStats {
    if tree.skipped.len() > SKIPPED_SHOWN {
        let more = tree.skipped.len() - SKIPPED_SHOWN;
        tree.skipped.truncate(SKIPPED_SHOWN);
        tree.skipped.push(format!("... and {more} more"));
    }
    tree
}

/// The compressed stream cut into parts, each sent to the uploader when full.
struct Parts {
    tx: mpsc::Sender<Bytes>,
    part_size: usize,
    buf: Vec<u8>,
    sent: usize,
    max_parts: usize,
}

impl Parts {
    fn send(&mut self) -> std::io::Result<()> {
        if self.sent == self.max_parts {
            return Err(std::io::Error::other(format!(
                "the volume's data is larger than the {} parts planned from the claim's capacity",
                self.max_parts
            )));
        }
        let part = std::mem::take(&mut self.buf);
        self.tx.blocking_send(Bytes::from(part)).map_err(|_| std::io::Error::other("the upload stopped"))?;
        self.sent += 1;
        Ok(())
    }

    /// Sends the last part.
    fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() || self.sent == 0 {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for Parts {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.part_size);
        }
        let n = data.len().min(self.part_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Download, check and extract, part after part.
async fn restore(
    http: &reqwest::Client,
    dir: &Path,
    parts: Vec<PartSource>,
    keys: Option<crate::crypto::Unseal>,
    counter: &Counter,
    bytes_per_second: Option<u64>,
) -> Result<Finished> {
    counter.total.store(parts.iter().map(|p| p.size).sum(), Ordering::Relaxed);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(1);
    let dir = dir.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<TreeStats> {
        let received = Received { rx, current: Bytes::new() };
        // Each age chunk is authenticated as it is read: nothing altered reaches the decompressor.
        let plain: Box<dyn Read + Send> = match &keys {
            Some(keys) => crate::crypto::open(received, Some(&volume_encryption()), keys, "the volume data")
                .map_err(std::io::Error::other)?,
            None => Box::new(received),
        };
        let decoder = zstd::Decoder::new(plain)?;
        extract_tree(Paced::new(decoder, bytes_per_second), &dir)
    });
    let mut failed = None;
    for (i, part) in parts.iter().enumerate() {
        let bytes = match get(http, &part.url).await {
            Ok(b) => b,
            Err(e) => {
                failed = Some(format!("downloading part {i}: {e}"));
                break;
            }
        };
        let digest = crate::archive::sha256_hex(&bytes);
        if bytes.len() as u64 != part.size || digest != part.sha256 {
            failed = Some(format!(
                "part {i} is not what the backup recorded ({} bytes, SHA-256 {digest}; expected {} bytes, {}): nothing of it was written",
                bytes.len(),
                part.size,
                part.sha256
            ));
            break;
        }
        let n = bytes.len() as u64;
        if tx.send(bytes).is_err() {
            break;
        }
        counter.done.fetch_add(n, Ordering::Relaxed);
    }
    drop(tx);
    let extracted = reader.await.map_err(|e| Error::Other(format!("writing the volume: {e}")))?;
    if let Some(f) = failed {
        return Err(Error::Other(f));
    }
    let tree = extracted.map_err(|e| Error::Other(format!("writing the volume: {e}")))?;
    Ok(Finished { manifest_sha256: String::new(), manifest_size: 0, tree: Some(shown(tree)) })
}

/// How a volume's parts are encrypted (for messages): age, to the volume's own key.
fn volume_encryption() -> crate::crypto::Encryption {
    crate::crypto::Encryption {
        algorithm: crate::crypto::ALGORITHM.into(),
        recipients: vec!["the volume's own key".into()],
        passphrase: false,
    }
}

/// The verified parts as one stream, for the decompressor.
struct Received {
    rx: std::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for Received {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.current = b,
                // The sender is gone: the end, or a failed part (reported by the caller).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

async fn put(http: &reqwest::Client, url: &str, body: Bytes) -> std::result::Result<(), String> {
    transfer(|| async {
        let r = http.put(url).body(body.clone()).send().await.map_err(|e| (true, e.to_string()))?;
        check(r).await.map(|_| ())
    })
    .await
}

async fn get(http: &reqwest::Client, url: &str) -> std::result::Result<Bytes, String> {
    transfer(|| async {
        let r = http.get(url).send().await.map_err(|e| (true, e.to_string()))?;
        check(r).await?.bytes().await.map_err(|e| (true, e.to_string()))
    })
    .await
}

/// A response's failure, and whether another attempt may help (5xx, 429, transport).
async fn check(r: reqwest::Response) -> std::result::Result<reqwest::Response, (bool, String)> {
    let status = r.status();
    if status.is_success() {
        return Ok(r);
    }
    let retry = status.is_server_error() || status.as_u16() == 429;
    let body = r.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    Err((retry, format!("HTTP {status}: {body}")))
}

/// Up to [`ATTEMPTS`] tries with a growing pause, while the failure may be passing.
async fn transfer<T, F, Fut>(f: F) -> std::result::Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, (bool, String)>>,
{
    let mut pause = Duration::from_millis(500);
    for attempt in 1.. {
        match f().await {
            Ok(v) => return Ok(v),
            Err((true, e)) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "transfer failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err((_, e)) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// 3 MiB at 10 MiB/s take 0.3 s at least, written or read; the bytes pass through unchanged.
    #[test]
    fn a_paced_stream_moves_no_faster_than_its_rate() {
        let data: Vec<u8> = (0..3u32 << 20).map(|i| i as u8).collect();
        let least = Duration::from_millis(300) - Paced::<()>::LEAST_WAIT;

        let start = Instant::now();
        let mut w = Paced::new(Vec::new(), Some(10 << 20));
        for chunk in data.chunks(1500) {
            w.write_all(chunk).unwrap();
        }
        let took = start.elapsed();
        assert!(took >= least, "written in {took:?}");
        assert!(w.inner == data);

        let start = Instant::now();
        let mut r = Paced::new(&data[..], Some(10 << 20));
        let mut read = Vec::new();
        r.read_to_end(&mut read).unwrap();
        let took = start.elapsed();
        assert!(took >= least, "read in {took:?}");
        assert!(read == data);
    }
}
