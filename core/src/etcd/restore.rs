//! Restores: a snapshot becomes `DIR/snapshot.db`, verified, for `etcdutl snapshot restore`; the
//! keys of a `keys` or `keys-json` backup are written into a running etcd in bounded transactions
//! (or, in a dry run, compared with it and reported).

use std::io;
use std::path::Path;
use std::sync::Arc;

use etcd_client::{KvClient, Txn, TxnOp, TxnOpResponse};
use jiff::Timestamp;
use tokio::sync::mpsc;

use super::SNAPSHOT_FILE;
use super::catalog::{Inspect, corrupt, fetch, metadata, write_verified};
use super::connect::{self, MAX_MESSAGE, Member, REQUEST_TIMEOUT, TlsFiles};
use super::escape::display;
use super::keys::{Entry, ReadSummary, read_json, read_zip};
use super::model::{EtcdBackup, EtcdBackupType, EtcdRestore, EtcdRestoreCounts, EtcdRestoreSpec, EtcdSource};
use super::snapshot::SnapshotDigest;
use crate::model::Phase;
use crate::progress::{Event, Observer};
use crate::store::Store;
use crate::{Error, Result};

/// Most operations in one transaction (etcd's default `--max-txn-ops` is 128).
pub const MAX_OPS: usize = 128;
/// Most key and value bytes in one transaction (etcd's default `--max-request-bytes` is 1.5 MiB).
pub const MAX_BYTES: usize = 1 << 20;

/// Writes the snapshot of etcd backup `name` to `dir/snapshot.db`, verified against the metadata
/// (size, SHA-256) and against its own SHA-256 trailer before it gets that name.
pub async fn restore_snapshot(
    store: &Store,
    name: &str,
    dir: &Path,
    overwrite: bool,
    observer: Arc<dyn Observer>,
) -> Result<EtcdRestore> {
    let start = Timestamp::now();
    let backup = metadata(store, name).await?.backup;
    if backup.spec.kind != EtcdBackupType::Snapshot {
        return Err(Error::invalid(
            "--data-dir",
            dir.display().to_string(),
            format!(
                "etcd backup {name:?} is a {} backup, not a snapshot: write its keys into a running etcd with --endpoints instead",
                backup.spec.kind
            ),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let target = dir.join(SNAPSHOT_FILE);
    if target.exists() && !overwrite {
        return Err(Error::invalid(
            "--data-dir",
            dir.display().to_string(),
            format!("{} already exists; pass --overwrite or choose another directory", target.display()),
        ));
    }
    observer.event(Event::Waiting { what: format!("the snapshot of {name}") });
    let mut check = TrailerCheck {
        digest: SnapshotDigest::new(),
        name: name.to_string(),
        location: store.url().to_string(),
        observer: observer.clone(),
        reported: 0,
    };
    let size = write_verified(store, &backup, &target, &mut check).await?;
    let mut report = report(&backup, start);
    report.spec.data_dir = Some(dir.to_path_buf());
    report.status.snapshot = Some(target);
    report.status.size = Some(size);
    report.status.timing.completion_timestamp = Some(Timestamp::now());
    Ok(report)
}

fn report(backup: &EtcdBackup, start: Timestamp) -> EtcdRestore {
    let spec = EtcdRestoreSpec {
        backup_name: backup.metadata.name.clone(),
        kind: backup.spec.kind,
        data_dir: None,
        endpoints: Vec::new(),
        dry_run: false,
    };
    let mut r = EtcdRestore::new(backup.name(), spec);
    r.status.phase = Phase::Completed;
    r.status.revision = backup.status.revision;
    r.status.timing.start_timestamp = Some(start);
    r
}

/// Checks the snapshot's own trailer while it downloads, and reports bytes.
struct TrailerCheck {
    digest: SnapshotDigest,
    name: String,
    location: String,
    observer: Arc<dyn Observer>,
    reported: u64,
}

impl Inspect for TrailerCheck {
    fn update(&mut self, chunk: &[u8]) {
        self.digest.update(chunk);
        if self.digest.size() - self.reported >= 1 << 20 {
            self.reported = self.digest.size();
            self.observer.event(Event::Archived { items: 0, bytes: self.reported });
        }
    }

    fn verify(&mut self) -> Result<()> {
        let digests = std::mem::take(&mut self.digest).finish();
        if digests.trailer_ok {
            Ok(())
        } else {
            Err(Error::Corrupt {
                name: self.name.clone(),
                location: self.location.clone(),
                reason: "the snapshot's SHA-256 trailer does not match its contents".into(),
            })
        }
    }
}

/// Writes the keys of etcd backup `name` (type keys or keys-json) into the etcd of `target`:
/// keys that are missing are added, keys whose value differs are changed, equal keys are left
/// alone; nothing is deleted. With `dry_run`, compares and reports only. The backup is downloaded
/// and verified before the first write.
pub async fn restore_keys(
    store: &Store,
    name: &str,
    target: &EtcdSource,
    dry_run: bool,
    observer: Arc<dyn Observer>,
) -> Result<EtcdRestore> {
    let start = Timestamp::now();
    let backup = metadata(store, name).await?.backup;
    let kind = backup.spec.kind;
    if kind == EtcdBackupType::Snapshot {
        return Err(Error::invalid(
            "--endpoints",
            target.endpoints.join(","),
            format!(
                "etcd backup {name:?} is a snapshot: a snapshot is restored into a new data directory, not written into a running etcd; use --data-dir DIR, then `etcdutl snapshot restore DIR/{SNAPSHOT_FILE} --data-dir NEW_DATA_DIR`"
            ),
        ));
    }
    let tls = TlsFiles::load(target)?;
    observer.event(Event::Waiting { what: format!("etcd at {}", target.endpoints.join(",")) });
    let (member, _) = connect::best_member(target).await?;
    observer.event(Event::Waiting { what: format!("the keys of {name}") });
    let file = fetch(store, &backup).await?;
    let total = backup.status.keys.unwrap_or(0);
    observer.event(Event::Verified { items: total });
    observer.event(Event::RestorePlanned { total });

    let (batches, reader) = read_batches(file, kind);
    let mut applier = Applier::new(&member, tls, dry_run);
    let failure = applier.apply_all(batches, observer.as_ref(), total).await;
    let read = reader.await.map_err(|e| Error::Other(format!("the key reader stopped: {e}")))?;
    if let Some(e) = failure {
        let c = &applier.counts;
        return Err(Error::Other(format!(
            "restore of etcd backup {name:?} stopped after {} of {total} keys ({} added, {} changed): {e}",
            applier.done, c.added, c.changed
        )));
    }
    let summary = read.map_err(|reason| corrupt(store, name, reason))?;
    if let Some(keys) = backup.status.keys
        && keys != summary.entries
    {
        return Err(corrupt(store, name, format!("the metadata says {keys} keys, the file holds {}", summary.entries)));
    }

    let mut r = report(&backup, start);
    r.spec.endpoints = target.endpoints.clone();
    r.spec.dry_run = dry_run;
    r.status.counts = Some(applier.counts);
    r.status.added = applier.added;
    r.status.changed = applier.changed;
    r.status.endpoint = Some(member.endpoint.clone());
    r.status.timing.completion_timestamp = Some(Timestamp::now());
    Ok(r)
}

/// Reads the downloaded keys on a blocking thread and sends them in transaction-sized batches.
fn read_batches(
    file: std::fs::File,
    kind: EtcdBackupType,
) -> (mpsc::Receiver<Vec<Entry>>, tokio::task::JoinHandle<Result<ReadSummary, String>>) {
    let (tx, rx) = mpsc::channel::<Vec<Entry>>(2);
    let reader = tokio::task::spawn_blocking(move || -> Result<ReadSummary, String> {
        let mut batcher = Batcher { tx, batch: Vec::new(), bytes: 0 };
        let mut sink = |e: Entry| batcher.push(e);
        let summary = match kind {
            EtcdBackupType::Keys => read_zip(file, &mut sink)?,
            _ => read_json(file, &mut sink)?,
        };
        batcher.flush().map_err(|e| e.to_string())?;
        Ok(summary)
    });
    (rx, reader)
}

/// Groups entries into transactions of at most [`MAX_OPS`] operations and about [`MAX_BYTES`].
struct Batcher {
    tx: mpsc::Sender<Vec<Entry>>,
    batch: Vec<Entry>,
    bytes: usize,
}

impl Batcher {
    fn push(&mut self, e: Entry) -> io::Result<()> {
        let size = e.key.len() + e.value.len();
        if !self.batch.is_empty() && (self.batch.len() >= MAX_OPS || self.bytes + size > MAX_BYTES) {
            self.flush()?;
        }
        self.bytes += size;
        self.batch.push(e);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        self.tx.blocking_send(batch).map_err(|_| io::Error::other("the writer stopped"))
    }
}

struct Applier {
    kv: KvClient,
    endpoint: String,
    tls: TlsFiles,
    dry_run: bool,
    counts: EtcdRestoreCounts,
    added: Vec<String>,
    changed: Vec<String>,
    done: u64,
}

impl Applier {
    /// Writes into (or, in a dry run, compares with) the etcd of `member`.
    fn new(member: &Member, tls: TlsFiles, dry_run: bool) -> Applier {
        Applier {
            kv: member.client.kv_client().max_decoding_message_size(MAX_MESSAGE),
            endpoint: member.endpoint.clone(),
            tls,
            dry_run,
            counts: EtcdRestoreCounts::default(),
            added: Vec::new(),
            changed: Vec::new(),
            done: 0,
        }
    }

    /// Applies batches until they run out or one fails; returns that failure. Drops `batches`
    /// on return, so a reader still sending stops instead of waiting forever.
    async fn apply_all(
        &mut self,
        mut batches: mpsc::Receiver<Vec<Entry>>,
        observer: &dyn Observer,
        total: u64,
    ) -> Option<Error> {
        while let Some(batch) = batches.recv().await {
            if let Err(e) = self.apply(batch).await {
                return Some(e);
            }
            observer.event(Event::Restored { done: self.done, total });
        }
        None
    }

    /// One transaction reads the batch's keys; a second writes those missing or different.
    async fn apply(&mut self, batch: Vec<Entry>) -> Result<()> {
        let gets: Vec<TxnOp> = batch.iter().map(|e| TxnOp::get(e.key.clone(), None)).collect();
        let live = self.txn(Txn::new().and_then(gets)).await?.op_responses();
        if live.len() != batch.len() {
            return Err(Error::Etcd {
                endpoint: self.endpoint.clone(),
                reason: format!("asked for {} keys, got {} answers", batch.len(), live.len()),
            });
        }
        let mut puts = Vec::new();
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for (e, r) in batch.into_iter().zip(live) {
            let current = match &r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value() == e.value.as_slice()),
                _ => None,
            };
            match current {
                Some(true) => self.counts.unchanged += 1,
                Some(false) => {
                    changed.push(display(&e.key));
                    puts.push(TxnOp::put(e.key, e.value, None));
                }
                None => {
                    added.push(display(&e.key));
                    puts.push(TxnOp::put(e.key, e.value, None));
                }
            }
            self.done += 1;
        }
        if !self.dry_run && !puts.is_empty() {
            self.txn(Txn::new().and_then(puts)).await?;
        }
        self.counts.added += added.len() as u64;
        self.counts.changed += changed.len() as u64;
        self.added.append(&mut added);
        self.changed.append(&mut changed);
        Ok(())
    }

    async fn txn(&mut self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.kv.txn(txn)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(connect::explain(&self.endpoint, &self.tls, &e)),
            Err(_) => Err(connect::timeout_error(&self.endpoint, REQUEST_TIMEOUT)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let (tx, mut rx) = mpsc::channel(1000);
        let mut b = Batcher { tx, batch: Vec::new(), bytes: 0 };
        for i in 0..300u32 {
            b.push(Entry { key: format!("k{i}").into_bytes(), value: vec![0; 10] }).unwrap();
        }
        // Three big values: each batch stays under the byte bound unless one value alone exceeds it.
        for _ in 0..3 {
            b.push(Entry { key: b"big".to_vec(), value: vec![1; 700 << 10] }).unwrap();
        }
        b.push(Entry { key: b"huge".to_vec(), value: vec![2; 1200 << 10] }).unwrap();
        b.flush().unwrap();
        drop(b);
        let mut sizes = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            let bytes: usize = batch.iter().map(|e| e.key.len() + e.value.len()).sum();
            assert!(batch.len() <= MAX_OPS);
            assert!(batch.len() == 1 || bytes <= MAX_BYTES, "{} entries, {bytes} bytes", batch.len());
            sizes.push(batch.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 304);
        assert_eq!(sizes, vec![128, 128, 45, 1, 1, 1]);
    }
}
