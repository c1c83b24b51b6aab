//! The snapshot stream: `Maintenance.Snapshot` sends the member's database in chunks, then one more
//! message holding the SHA-256 of everything before it (the trailer `etcdutl snapshot restore`
//! checks). Every message is kept, the trailer too: the stream ends when the server closes it, never
//! at `remaining_bytes == 0`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::connect::{self, Member, STREAM_IDLE_TIMEOUT, TlsFiles};
use crate::progress::{Event, Observer};
use crate::store::Store;
use crate::{Error, Result};

/// Bytes of the SHA-256 trailer.
pub const TRAILER: usize = 32;
/// Bytes handed to the uploader at a time.
const CHUNK: usize = 1 << 20;

/// SHA-256 of a snapshot file, and whether its trailer matches the bytes before it. One pass: the
/// body is hashed 32 bytes behind the stream, so the same state gives the body's digest (to check
/// the trailer) and, with the trailer added, the digest of the whole file.
#[derive(Clone)]
pub struct SnapshotDigest {
    body: Sha256,
    tail: Vec<u8>,
    size: u64,
}

/// What [`SnapshotDigest::finish`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    pub size: u64,
    /// The last 32 bytes are the SHA-256 of the rest, as etcd writes them.
    pub trailer_ok: bool,
}

impl Default for SnapshotDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotDigest {
    pub fn new() -> Self {
        SnapshotDigest { body: Sha256::new(), tail: Vec::with_capacity(2 * TRAILER), size: 0 }
    }

    pub fn update(&mut self, blob: &[u8]) {
        self.size += blob.len() as u64;
        if blob.len() >= TRAILER {
            self.body.update(&self.tail);
            let (head, rest) = blob.split_at(blob.len() - TRAILER);
            self.body.update(head);
            self.tail.clear();
            self.tail.extend_from_slice(rest);
        } else {
            self.tail.extend_from_slice(blob);
            if self.tail.len() > TRAILER {
                let excess = self.tail.len() - TRAILER;
                self.body.update(&self.tail[..excess]);
                self.tail.drain(..excess);
            }
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digests {
        let SnapshotDigest { mut body, tail, size } = self;
        let body_digest = body.clone().finalize();
        let trailer_ok = tail.len() == TRAILER && body_digest.as_slice() == tail.as_slice();
        body.update(&tail);
        Digests { sha256: hex::encode(body.finalize()), size, trailer_ok }
    }
}

/// Streams the member's snapshot into `path` (multipart upload) and returns its digests. The
/// object may exist when this fails: the caller removes it.
pub async fn save(
    member: &Member,
    tls: &TlsFiles,
    store: &Store,
    path: &Path,
    observer: Arc<dyn Observer>,
) -> Result<Digests> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let progress = observer.clone();
    let upload = store.upload_sealed(path, rx, move |bytes| progress.event(Event::Uploading { bytes }));
    let receive = receive(member, tls, tx, observer);
    let (received, uploaded) = tokio::join!(receive, upload);
    // An upload that failed stopped the receiver too: its error is the one to report.
    let stored = uploaded?;
    let digests = received?;
    if stored.plain != digests.size {
        return Err(Error::Other(format!(
            "upload of {path} is incomplete: {} of {} bytes were sent",
            stored.plain, digests.size
        )));
    }
    // What the metadata records is what is stored (the ciphertext, when encrypted).
    Ok(Digests { sha256: stored.sha256, size: stored.size, trailer_ok: digests.trailer_ok })
}

async fn receive(
    member: &Member,
    tls: &TlsFiles,
    tx: mpsc::Sender<Bytes>,
    observer: Arc<dyn Observer>,
) -> Result<Digests> {
    let endpoint = member.endpoint.as_str();
    let mut client = member.client.clone();
    let mut stream = match tokio::time::timeout(connect::REQUEST_TIMEOUT, client.snapshot()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(connect::explain(endpoint, tls, &e)),
        Err(_) => return Err(connect::timeout_error(endpoint, connect::REQUEST_TIMEOUT)),
    };
    let mut digest = SnapshotDigest::new();
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut announced = false;
    loop {
        let message = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                let err = connect::explain(endpoint, tls, &e);
                return Err(Error::Etcd {
                    endpoint: endpoint.into(),
                    reason: format!("the snapshot stream failed after {} bytes: {err}", digest.size()),
                });
            }
            Err(_) => {
                return Err(Error::Etcd {
                    endpoint: endpoint.into(),
                    reason: format!(
                        "the snapshot stream stalled: nothing for {}s after {} bytes",
                        STREAM_IDLE_TIMEOUT.as_secs(),
                        digest.size()
                    ),
                });
            }
        };
        let blob = message.blob();
        if !announced {
            announced = true;
            let total = digest.size() + blob.len() as u64 + message.remaining_bytes() + TRAILER as u64;
            observer.event(Event::Waiting {
                what: format!("the snapshot of member {:x} ({:.1} MiB)", member.member_id, total as f64 / 1048576.0),
            });
        }
        digest.update(blob);
        buf.extend_from_slice(blob);
        if buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut buf, BytesMut::with_capacity(CHUNK)).freeze();
            if tx.send(chunk).await.is_err() {
                // The upload stopped; its error is the one to report.
                return Err(Error::Other("the upload stopped".into()));
            }
            observer.event(Event::Archived { items: 0, bytes: digest.size() });
        }
    }
    if !buf.is_empty() && tx.send(buf.freeze()).await.is_err() {
        return Err(Error::Other("the upload stopped".into()));
    }
    drop(tx);
    observer.event(Event::Archived { items: 0, bytes: digest.size() });
    let digests = digest.finish();
    if !digests.trailer_ok {
        return Err(Error::Etcd {
            endpoint: endpoint.into(),
            reason: format!(
                "the snapshot stream ended without a valid SHA-256 trailer after {} bytes: it was cut short or damaged; run the backup again",
                digests.size
            ),
        });
    }
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot_file(body: &[u8]) -> Vec<u8> {
        let mut f = body.to_vec();
        f.extend_from_slice(&Sha256::digest(body));
        f
    }

    #[test]
    fn trailer_is_checked_and_whole_file_hashed() {
        let file = snapshot_file(&vec![7u8; 100_000]);
        let mut d = SnapshotDigest::new();
        for chunk in file.chunks(32 * 1024) {
            d.update(chunk);
        }
        let got = d.finish();
        assert!(got.trailer_ok);
        assert_eq!(got.size, file.len() as u64);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&file)));
    }

    #[test]
    fn a_cut_or_damaged_stream_is_detected() {
        let file = snapshot_file(b"some database pages");
        let mut d = SnapshotDigest::new();
        d.update(&file[..file.len() - 1]);
        assert!(!d.finish().trailer_ok);
        let mut bad = file.clone();
        bad[3] ^= 1;
        let mut d = SnapshotDigest::new();
        d.update(&bad);
        assert!(!d.finish().trailer_ok);
        let mut d = SnapshotDigest::new();
        d.update(&[1, 2, 3]);
        assert!(!d.finish().trailer_ok);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_answer(body in proptest::collection::vec(any::<u8>(), 0..3000),
                                               cuts in proptest::collection::vec(1usize..100, 1..60)) {
            let file = snapshot_file(&body);
            let mut d = SnapshotDigest::new();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= file.len() { break; }
                let end = (at + c).min(file.len());
                d.update(&file[at..end]);
                at = end;
            }
            let got = d.finish();
            prop_assert!(got.trailer_ok);
            prop_assert_eq!(got.sha256, hex::encode(Sha256::digest(&file)));
        }
    }
}
