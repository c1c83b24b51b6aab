//! An etcd backup: choose the member -> stream the snapshot, or page through the keys at one
//! revision -> multipart upload -> metadata written last (the commit).

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{GetOptions, KeyValue, KvClient};

use jiff::Timestamp;
use object_store::path::Path;

use tokio::sync::mpsc;

use super::connect::{self, MAX_MESSAGE, Member, REQUEST_TIMEOUT, RangeFailure, TlsFiles};
use super::keys::{Header, KeyMeta, KeysWriter};
use super::model::{EtcdBackup, EtcdBackupSpec, EtcdBackupType, EtcdMetadata, EtcdSource, FORMAT_VERSION, hex_id};
use super::{WHAT, snapshot};
use crate::committed::Digesting;
use crate::crypto::Sealed;
use crate::input::{expiration, parse_duration, validate_name};
use crate::model::Phase;
use crate::model::{StoredFile, Timing};
use crate::progress::{Event, Observer};
use crate::store::{ChunkSender, Store};
use crate::{Error, Result};

/// Most keys asked for per range request.
pub const PAGE: i64 = 1000;
/// Keys in the first page, before the size of values is known.
const FIRST_PAGE: i64 = 100;
/// Bytes a page aims at: the page size follows the values' average size, so pages of large values
/// stay near this (and far below [`MAX_MESSAGE`]).
const PAGE_BYTES: usize = 16 << 20;
/// Bytes handed from the key writer to the uploader at a time.
const CHUNK: usize = 1 << 20;

/// Takes one etcd backup of `kind` from `source` into `store` as `name`, and commits it.
pub async fn run(
    source: &EtcdSource,
    store: &Store,
    name: &str,
    kind: EtcdBackupType,
    ttl: Option<&str>,
    observer: Arc<dyn Observer>,
) -> Result<EtcdBackup> {
    let spec = EtcdBackupSpec {
        kind,
        endpoints: source.endpoints.clone(),
        prefix: source.prefix.clone(),
        ttl: ttl.map(str::to_string),
        location: Some(store.url().to_string()),
        schedule: None,
    };
    run_with(source, store, name, spec, observer).await
}

/// [`run`] with a whole spec (a schedule sets `spec.schedule`). `spec.endpoints` and `spec.prefix`
/// are taken from `source`.
pub async fn run_with(
    source: &EtcdSource,
    store: &Store,
    name: &str,
    mut spec: EtcdBackupSpec,
    observer: Arc<dyn Observer>,
) -> Result<EtcdBackup> {
    validate_name(WHAT, name)?;
    let ttl = spec.ttl.as_deref().map(|t| parse_duration("--ttl", t)).transpose()?;
    spec.endpoints = source.endpoints.clone();
    spec.prefix = source.prefix.clone().filter(|p| !p.is_empty());
    if spec.kind == EtcdBackupType::Snapshot
        && let Some(p) = &spec.prefix
    {
        return Err(Error::invalid(
            "--prefix",
            p,
            "a snapshot holds the whole keyspace; --prefix applies to --type keys and keys-json",
        ));
    }
    let tls = TlsFiles::load(source)?;
    crate::committed::ensure_absent::<super::catalog::Etcd>(store, name).await?;

    observer.event(Event::Waiting { what: format!("etcd at {}", spec.endpoints.join(",")) });
    let (member, mut warnings) = connect::best_member(source).await?;
    let start = Timestamp::now();
    let run_id = format!("{}-{:08x}", start.as_second(), rand::random::<u32>());
    let file = spec.kind.file_name(&run_id);
    let path = crate::committed::data_path::<super::catalog::Etcd>(name, &file);

    let written = save(&member, &tls, store, &path, &spec, start, observer).await?;
    // The store must hold exactly what we wrote.
    crate::commit::check_uploaded(store, &path, written.size).await?;

    let member_name = member_name(&member).await;
    if member_name.is_none() {
        tracing::debug!(member = %hex_id(member.member_id), "member name unknown");
    }
    let mut backup = EtcdBackup::new(name, spec);
    backup.metadata.creation_timestamp = Some(start);
    let s = &mut backup.status;
    s.phase = Phase::Completed;
    s.revision = Some(written.revision);
    s.member_id = Some(hex_id(member.member_id));
    s.member_name = member_name;
    s.endpoint = Some(member.endpoint.clone());
    s.cluster_id = Some(hex_id(member.cluster_id));
    s.etcd_version = Some(member.version.clone()).filter(|v| !v.is_empty());
    s.keys = written.keys;
    s.archive = Some(StoredFile {
        key: file.clone(),
        size: written.size,
        sha256: written.sha256,
        format: backup.spec.kind.format().to_string(),
        encryption: store.seal().map(|s| s.describe()),
    });
    s.timing = Timing { start_timestamp: Some(start), completion_timestamp: Some(Timestamp::now()) };
    s.expiration = ttl.and_then(|t| expiration(start, t));
    s.warnings.append(&mut warnings);

    let metadata = EtcdMetadata { format_version: FORMAT_VERSION, backup: backup.clone() };
    crate::committed::commit::<super::catalog::Etcd>(store, name, &metadata).await?;
    Ok(backup)
}

/// Uploads the snapshot or the keys of `member` to `path`; removes `path` if that fails.
async fn save(
    member: &Member,
    tls: &TlsFiles,
    store: &Store,
    path: &Path,
    spec: &EtcdBackupSpec,
    start: Timestamp,
    observer: Arc<dyn Observer>,
) -> Result<Written> {
    let written = match spec.kind {
        EtcdBackupType::Snapshot => {
            let saved = snapshot::save(member, tls, store, path, observer).await;
            saved.map(|d| Written { size: d.size, sha256: d.sha256, revision: member.revision, keys: None })
        }
        _ => save_keys(member, tls, store, path, spec, start, observer).await,
    };
    if written.is_err() {
        store.remove_quietly(path).await;
    }
    written
}

/// What was uploaded.
struct Written {
    size: u64,
    sha256: String,
    revision: i64,
    keys: Option<u64>,
}

async fn member_name(member: &Member) -> Option<String> {
    let mut client = member.client.clone();
    let list = tokio::time::timeout(connect::PROBE_TIMEOUT, client.member_list()).await.ok()?.ok()?;
    list.members().iter().find(|m| m.id() == member.member_id).map(|m| m.name().to_string()).filter(|n| !n.is_empty())
}

/// The key range of a prefix: `[prefix, prefix+1)`; everything for no prefix.
pub fn key_range(prefix: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    match prefix.map(str::as_bytes).filter(|p| !p.is_empty()) {
        None => (vec![0], vec![0]),
        Some(p) => {
            let mut end = p.to_vec();
            while let Some(last) = end.pop() {
                if last < 0xff {
                    end.push(last + 1);
                    return (p.to_vec(), end);
                }
            }
            (p.to_vec(), vec![0])
        }
    }
}

/// Pages through a key range at one revision (the first page's). Pages hold up to [`PAGE`] keys,
/// fewer when values are large (about [`PAGE_BYTES`] a page), and halve when a response would still
/// be too large to decode.
pub struct Pager {
    kv: KvClient,
    endpoint: String,
    tls: TlsFiles,
    next: Vec<u8>,
    end: Vec<u8>,
    pub revision: i64,
    limit: i64,
    pub done: bool,
}

impl Pager {
    pub fn new(member: &Member, tls: &TlsFiles, prefix: Option<&str>) -> Pager {
        let (next, end) = key_range(prefix);
        Pager {
            kv: member.client.kv_client().max_decoding_message_size(MAX_MESSAGE),
            endpoint: member.endpoint.clone(),
            tls: tls.clone(),
            next,
            end,
            revision: 0,
            limit: FIRST_PAGE,
            done: false,
        }
    }

    pub async fn next_page(&mut self) -> Result<Vec<KeyValue>> {
        if self.done {
            return Ok(Vec::new());
        }
        loop {
            let options =
                GetOptions::new().with_range(self.end.clone()).with_limit(self.limit).with_revision(self.revision);
            let got = tokio::time::timeout(REQUEST_TIMEOUT, self.kv.get(self.next.clone(), Some(options))).await;
            let mut resp = match got {
                Err(_) => return Err(connect::timeout_error(&self.endpoint, REQUEST_TIMEOUT)),
                Ok(Err(e)) => match connect::range_failure(&e) {
                    Some(RangeFailure::TooLarge) if self.limit > 1 => {
                        self.limit = (self.limit / 2).max(1);
                        continue;
                    }
                    Some(RangeFailure::Compacted) => {
                        return Err(Error::Etcd {
                            endpoint: self.endpoint.clone(),
                            reason: format!(
                                "revision {} was compacted while the backup read it (etcd drops old revisions; the kube-apiserver compacts every 5 minutes): run the backup again ({})",
                                self.revision,
                                connect::chain(&e)
                            ),
                        });
                    }
                    _ => return Err(connect::explain(&self.endpoint, &self.tls, &e)),
                },
                Ok(Ok(r)) => r,
            };
            if self.revision == 0 {
                self.revision = resp.header().map(|h| h.revision()).filter(|r| *r > 0).ok_or_else(|| Error::Etcd {
                    endpoint: self.endpoint.clone(),
                    reason: "the range answer names no revision".into(),
                })?;
            }
            let kvs = resp.take_kvs();
            let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len() + 16).sum();
            tracing::debug!(limit = self.limit, keys = kvs.len(), bytes, "read a page of keys");
            self.limit = next_limit(bytes, kvs.len());
            match kvs.last() {
                Some(last) if resp.more() => {
                    let mut next = last.key().to_vec();
                    next.push(0);
                    self.next = next;
                }
                _ => self.done = true,
            }
            return Ok(kvs);
        }
    }
}

/// The next page size after a page of `keys` keys and `bytes` bytes: about [`PAGE_BYTES`], at
/// most [`PAGE`].
fn next_limit(bytes: usize, keys: usize) -> i64 {
    if keys == 0 {
        return PAGE;
    }
    let average = (bytes / keys).max(1);
    i64::try_from(PAGE_BYTES / average).unwrap_or(PAGE).clamp(1, PAGE)
}

/// Pipeline: range pages -> (pages) -> writer thread (zip or JSON) -> (chunks) -> multipart upload.
/// Writes `spec.kind` (keys or keys-json) of the keys under `spec.prefix`.
async fn save_keys(
    member: &Member,
    tls: &TlsFiles,
    store: &Store,
    path: &Path,
    spec: &EtcdBackupSpec,
    start: Timestamp,
    observer: Arc<dyn Observer>,
) -> Result<Written> {
    let (kind, prefix) = (spec.kind, spec.prefix.clone());
    let mut pager = Pager::new(member, tls, prefix.as_deref());
    let first = pager.next_page().await?;
    let revision = pager.revision;
    observer.event(Event::Waiting { what: format!("keys of member {:x} at revision {revision}", member.member_id) });
    let header = Header {
        revision,
        cluster_id: hex_id(member.cluster_id),
        member_id: hex_id(member.member_id),
        prefix: prefix.clone(),
    };

    let (page_tx, mut page_rx) = mpsc::channel::<Vec<KeyValue>>(4);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(4);
    let writer_observer = observer.clone();
    let seal = store.seal().cloned();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String, u64)> {
        let sink = Sealed::new(Digesting::new(ChunkSender::new(chunk_tx, CHUNK)), seal.as_ref())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut w = KeysWriter::new(kind, sink, &header, start)?;
        while let Some(page) = page_rx.blocking_recv() {
            for kv in &page {
                let meta = KeyMeta {
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                    version: kv.version(),
                    lease: kv.lease(),
                };
                w.add(kv.key(), kv.value(), meta)?;
            }
            let bytes = w.get_ref().map(Sealed::written).unwrap_or(0);
            writer_observer.event(Event::Archived { items: w.count(), bytes });
        }
        let count = w.count();
        let (mut rest, size, sha256) = w.finish()?.finish()?.finish();
        rest.flush()?; // the last chunk goes to the uploader

        Ok((size, sha256, count))
    });
    let progress = observer.clone();
    let upload = store.upload(path, chunk_rx, move |bytes| progress.event(Event::Uploading { bytes }));
    let reading = async move {
        if page_tx.send(first).await.is_err() {
            return Ok(());
        }
        while !pager.done {
            let page = pager.next_page().await?;
            if page_tx.send(page).await.is_err() {
                break;
            }
        }
        Ok::<(), Error>(())
    };
    let (read, uploaded) = tokio::join!(reading, upload);
    let written = writer.await.map_err(|e| Error::Other(format!("the key writer stopped: {e}")))?;
    read?;
    let sent = uploaded?;
    let (size, sha256, count) = written.map_err(|e| Error::Other(format!("writing the keys: {e}")))?;
    if sent != size {
        return Err(Error::Other(format!("upload of {path} is incomplete: {sent} of {size} bytes were sent")));
    }
    Ok(Written { size, sha256, revision, keys: Some(count) })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(key_range(None), (vec![0], vec![0]));
        assert_eq!(key_range(Some("")), (vec![0], vec![0]));
        assert_eq!(key_range(Some("/registry/")), (b"/registry/".to_vec(), b"/registry0".to_vec()));
        assert_eq!(key_range(Some("a\u{7f}")), (b"a\x7f".to_vec(), b"a\x80".to_vec()));
    }

    #[test]
    fn pages_follow_the_size_of_values() {
        assert_eq!(next_limit(0, 0), PAGE);
        assert_eq!(next_limit(100 * 300, 100), PAGE);
        assert_eq!(next_limit(100 * (128 << 10), 100), 128);
        assert_eq!(next_limit(2 * (40 << 20), 2), 1);
    }

    #[test]
    fn digesting_counts_and_hashes_what_passes() {
        let mut h = Digesting::new(Vec::new());
        h.write_all(b"hello ").unwrap();
        h.write_all(b"world").unwrap();
        assert_eq!(h.size(), 11);
        let (inner, size, sha) = h.finish();
        assert_eq!((inner.as_slice(), size), (&b"hello world"[..], 11));
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
    }
}
