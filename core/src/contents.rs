//! What a backup holds, object by object: its entry path, the SHA-256 of its bytes and their size
//! — the catalog every reader checks the data against. One idea, two containers:
//!
//! - a plain backup (format 2) streams it, in archive order, to its own file beside the archive
//!   (`contents-<run>.jsonl.zst`, compressed and sealed like the archive), so a run never holds
//!   it in memory however many objects it backs up;
//! - an incremental backup stores it in chunks that are blobs like any object body ([`crate::packs`]),
//!   so an unchanged part of the catalog is stored once too.
//!
//! Format 1 kept the digests in `metadata.json` (`objects`); those backups are still read.
//!
//! Each line is a JSON object `{"path": ..., "sha256": ..., "size": ...}`; an incremental backup's
//! lines also carry the object's `resourceVersion`, which lets the next backup of the same scope
//! skip reading an object whose version has not moved ([`Recorded`]).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::committed::Digesting;
use crate::crypto::{Seal, Sealed};

/// The contents file's format name, recorded in the metadata.
pub const FORMAT: &str = "jsonl+zstd";
/// The longest line a reader accepts: an entry path is far shorter than this.
const MAX_LINE: u64 = 16 * 1024;

/// One object of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The object's `metadata.resourceVersion` when it was read (incremental backups only).
    #[serde(rename = "resourceVersion", default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl Line {
    pub fn of(path: String, body: &[u8]) -> Line {
        Line { path, sha256: crate::archive::sha256_hex(body), size: body.len() as u64, resource_version: None }
    }

    /// What a later backup needs to know of this line.
    pub fn recorded(&self) -> Recorded {
        Recorded {
            sha256: digest(&self.sha256).unwrap_or_default(),
            size: self.size,
            version: version_number(self.resource_version.as_deref()),
            reusable: false,
        }
    }

    /// Appends the line, newline-terminated, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("a line always serializes");
        out.push(b'\n');
    }
}

/// One object as an earlier backup recorded it. Its body may be reused without reading the object
/// again when the server reports the same `resourceVersion` for it: every write to an object gives
/// it a new one (etcd's revision of the write, which only grows), the same assumption every
/// informer's cache makes.
///
/// Held once per object by a backup that continues another (a million objects, a million of
/// these): the digest as its 32 bytes, not 64 hex characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub sha256: [u8; 32],
    pub size: u64,
    /// The `resourceVersion` recorded with it, when it was one etcd revision (a decimal number);
    /// other servers' opaque versions are never compared.
    pub version: Option<u64>,
    /// Whether a new backup may reference the body unread: it has a version, and the location's
    /// packs still hold the body (set by the backup that continues this one).
    pub reusable: bool,
}

impl Recorded {
    /// Whether `line` records the same object body and version.
    pub fn same_as(&self, line: &Line) -> bool {
        let version = version_number(line.resource_version.as_deref());
        digest(&line.sha256) == Some(self.sha256) && self.size == line.size && self.version == version
    }

    /// Whether an object the server now reports at `version` may be referenced unread.
    pub fn unchanged_at(&self, version: Option<&str>) -> bool {
        self.reusable && self.version.is_some() && self.version == version_number(version)
    }

    /// The digest in hex, as lines and pack indexes write it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Its line again, at `path`.
    pub fn line(&self, path: String) -> Line {
        let resource_version = self.version.map(|v| v.to_string());
        Line { path, sha256: self.sha256_hex(), size: self.size, resource_version }
    }
}

/// A `resourceVersion` that is one etcd revision (a decimal number); `None` for any other.
pub fn version_number(version: Option<&str>) -> Option<u64> {
    version?.parse().ok()
}

/// A hex SHA-256 as its 32 bytes.
pub fn digest(hex_sha: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sha, &mut out).ok()?;
    Some(out)
}

/// Paths already written, to refuse an object listed twice: 12 bytes of each path's SHA-256 (the
/// odds that two of a million paths share them are about 10^-17), in 16 sets chosen by one more
/// byte. A set that grows copies itself into a table twice its size, and one of 16 copies a 16th
/// of what one set would: for 100k paths about 1.7 MB in all, where one set of 16-byte keys held
/// 2.2 MB and 3.3 MB while its last growth had both tables (estimates from the tables' sizes).
pub struct Seen(Box<[HashSet<[u8; 12]>; SEEN_SHARDS]>);

const SEEN_SHARDS: usize = 16;

impl Default for Seen {
    fn default() -> Self {
        Seen(Box::new(std::array::from_fn(|_| HashSet::new())))
    }
}

impl Seen {
    /// True the first time `path` is seen.
    pub fn insert(&mut self, path: &str) -> bool {
        let (shard, key) = Self::key(path);
        self.0[shard].insert(key)
    }

    pub fn contains(&self, path: &str) -> bool {
        let (shard, key) = Self::key(path);
        self.0[shard].contains(&key)
    }

    fn key(path: &str) -> (usize, [u8; 12]) {
        let d = Sha256::digest(path.as_bytes());
        (usize::from(d[12]) % SEEN_SHARDS, d[..12].try_into().expect("12 bytes"))
    }
}

/// What a finished contents file is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub size: u64,
    pub sha256: String,
    pub entries: u64,
}

/// Writes lines, compressed (and sealed with the store's seal), to `out`.
pub struct Writer<W: Write> {
    encoder: zstd::Encoder<'static, Sealed<Digesting<W>>>,
    line: Vec<u8>,
    entries: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, seal: Option<&Seal>) -> io::Result<Self> {
        let sealed = Sealed::new(Digesting::new(out), seal).map_err(|e| io::Error::other(e.to_string()))?;
        let mut encoder = zstd::Encoder::new(sealed, crate::archive::CONTENTS_ZSTD_LEVEL)?;
        encoder.include_checksum(true)?;
        Ok(Writer { encoder, line: Vec::with_capacity(256), entries: 0 })
    }

    pub fn push(&mut self, line: &Line) -> io::Result<()> {
        self.line.clear();
        line.encode(&mut self.line);
        self.encoder.write_all(&self.line)?;
        self.entries += 1;
        Ok(())
    }

    pub fn finish(self) -> io::Result<(W, WrittenFile)> {
        let digesting = self.encoder.finish()?.finish()?;
        let (mut out, size, sha256) = digesting.finish();
        out.flush()?;
        Ok((out, WrittenFile { size, sha256, entries: self.entries }))
    }
}

/// Reads lines from a compressed plaintext stream (decrypted already), each bounded in length.
pub struct Reader<R: Read> {
    input: io::BufReader<zstd::Decoder<'static, io::BufReader<R>>>,
    line: Vec<u8>,
    read: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(input: R) -> Result<Self, String> {
        let mut decoder = zstd::Decoder::new(input).map_err(|e| format!("the contents file is not zstd: {e}"))?;
        decoder.window_log_max(23).map_err(|e| format!("zstd decoder: {e}"))?;
        Ok(Reader { input: io::BufReader::new(decoder), line: Vec::new(), read: 0 })
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Line, String>;
    fn next(&mut self) -> Option<Self::Item> {
        self.line.clear();
        let n = match (&mut self.input).take(MAX_LINE + 1).read_until(b'\n', &mut self.line) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => return Some(Err(format!("the contents file is truncated or corrupt: {e}"))),
        };
        self.read += 1;
        if n as u64 > MAX_LINE || self.line.last() != Some(&b'\n') {
            return Some(Err(format!("line {} of the contents file is too long or unterminated", self.read)));
        }
        Some(parse_line(&self.line).map_err(|e| format!("line {} of the contents file: {e}", self.read)))
    }
}

/// Parses one line (with or without its newline).
pub fn parse_line(bytes: &[u8]) -> Result<Line, String> {
    let line: Line = serde_json::from_slice(bytes).map_err(|e| format!("not a contents line: {e}"))?;
    if line.sha256.len() != 64 || !line.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(format!("{:?} has no valid SHA-256", line.path));
    }
    Ok(line)
}

/// What an archive is checked against, entry by entry.
pub enum Expected<'a> {
    /// Format 1: digests by path (any order); every one must be seen exactly once.
    Map { digests: &'a BTreeMap<String, String>, seen: HashSet<String> },
    /// Format 2: the contents lines, in archive order; the archive and the lines end together.
    /// `paths` refuses a path listed twice (16 bytes per entry).
    InOrder { lines: Box<dyn Iterator<Item = Result<Line, String>> + Send + 'a>, entries: u64, seen: u64, paths: Seen },
}

impl<'a> Expected<'a> {
    pub fn map(digests: &'a BTreeMap<String, String>) -> Self {
        Expected::Map { digests, seen: HashSet::new() }
    }

    pub fn in_order(lines: impl Iterator<Item = Result<Line, String>> + Send + 'a, entries: u64) -> Self {
        Expected::InOrder { lines: Box::new(lines), entries, seen: 0, paths: Seen::default() }
    }

    /// How many entries the archive must hold.
    pub fn len(&self) -> u64 {
        match self {
            Expected::Map { digests, .. } => digests.len() as u64,
            Expected::InOrder { entries, .. } => *entries,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the next entry of the archive: its path is expected (here, in this order) and its
    /// bytes have the expected SHA-256.
    pub fn check(&mut self, path: &str, sha256: &str) -> Result<(), String> {
        let want = match self {
            Expected::Map { digests, seen } => {
                let want =
                    digests.get(path).ok_or_else(|| format!("entry {path:?} is not listed in the metadata"))?.clone();
                if !seen.insert(path.to_string()) {
                    return Err(format!("entry {path:?} appears twice"));
                }
                want
            }
            Expected::InOrder { lines, seen, paths, .. } => {
                *seen += 1;
                let line = match lines.next() {
                    Some(line) => line?,
                    None => return Err(format!("entry {path:?} is not listed in the contents")),
                };
                if line.path != path {
                    return Err(format!(
                        "entry {path:?} is not listed in the contents (entry {} there is {:?})",
                        *seen, line.path
                    ));
                }
                if !paths.insert(path) {
                    return Err(format!("entry {path:?} appears twice"));
                }
                line.sha256
            }
        };
        if sha256 != want {
            return Err(format!("entry {path:?} is corrupt: SHA-256 {sha256} does not match {want} in the metadata"));
        }
        Ok(())
    }

    /// After the last entry: everything expected was seen.
    pub fn finish(self) -> Result<(), String> {
        match self {
            Expected::Map { digests, seen } => {
                if seen.len() != digests.len() {
                    let missing = digests.keys().find(|k| !seen.contains(*k)).cloned().unwrap_or_default();
                    return Err(format!(
                        "archive truncated: {} of {} entries present (first missing: {missing:?})",
                        seen.len(),
                        digests.len()
                    ));
                }
            }
            Expected::InOrder { mut lines, entries, seen, .. } => {
                if let Some(next) = lines.next() {
                    let missing = next.map(|l| l.path).unwrap_or_default();
                    return Err(format!(
                        "archive truncated: {seen} of {entries} entries present (first missing: {missing:?})"
                    ));
                }
                if seen != entries {
                    return Err(format!("the contents list {seen} entries, the metadata says {entries}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<Line> {
        (0..n)
            .map(|i| Line::of(format!("resources/configmaps/namespaces/a/c{i}.json"), i.to_string().as_bytes()))
            .collect()
    }

    #[test]
    fn a_recorded_line_is_the_same_only_with_the_same_body_and_version() {
        let mut line = Line::of("resources/configmaps/namespaces/a/c.json".into(), b"{}");
        line.resource_version = Some("4711".into());
        // Lines round-trip with their version; lines of older backups have none.
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.contains(r#""resourceVersion":"4711""#), "{text}");
        assert_eq!(parse_line(text.as_bytes()).unwrap(), line);
        let old = parse_line(
            br#"{"path":"p","sha256":"0000000000000000000000000000000000000000000000000000000000000000","size":2}"#,
        );
        assert_eq!(old.unwrap().resource_version, None);

        let recorded = line.recorded();
        assert_eq!(recorded.version, Some(4711));
        assert!(!recorded.reusable, "only the backup continuing it may mark it reusable");
        assert!(recorded.same_as(&line));
        let mut moved = line.clone();
        moved.resource_version = Some("4712".into());
        assert!(!recorded.same_as(&moved));
        let mut unversioned = line.clone();
        unversioned.resource_version = None;
        assert!(!recorded.same_as(&unversioned), "a line gaining a version is written to the delta");
        let mut other_body = Line::of(line.path.clone(), b"{\"a\":1}");
        other_body.resource_version = line.resource_version.clone();
        assert!(!recorded.same_as(&other_body));
        // An opaque (non-etcd) version is kept in the line but never compared.
        let mut opaque = line.clone();
        opaque.resource_version = Some("abc".into());
        assert_eq!(opaque.recorded().version, None);
    }

    #[test]
    fn seen_paths_are_found_again() {
        let mut seen = Seen::default();
        assert!(seen.insert("a") && !seen.insert("a"));
        assert!(seen.contains("a") && !seen.contains("b"));
    }

    #[test]
    fn a_path_listed_twice_is_refused_even_in_order() {
        let l = lines(1).remove(0);
        let twice = vec![Ok(l.clone()), Ok(l.clone())];
        let mut e = Expected::in_order(twice.into_iter(), 2);
        e.check(&l.path, &l.sha256).unwrap();
        let err = e.check(&l.path, &l.sha256).unwrap_err();
        assert_eq!(err, format!("entry {:?} appears twice", l.path));
    }

    #[test]
    fn lines_round_trip_through_the_compressed_file() {
        let mut w = Writer::new(Vec::new(), None).unwrap();
        for l in lines(1000) {
            w.push(&l).unwrap();
        }
        let (bytes, written) = w.finish().unwrap();
        assert_eq!(written.entries, 1000);
        assert_eq!(written.size, bytes.len() as u64);
        let back: Vec<Line> = Reader::new(bytes.as_slice()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, lines(1000));
    }

    #[test]
    fn a_line_without_a_valid_digest_or_too_long_is_refused() {
        let err = parse_line(br#"{"path":"p","sha256":"ABC","size":1}"#).unwrap_err();
        assert!(err.contains("no valid SHA-256"), "{err}");
        let mut w = zstd::Encoder::new(Vec::new(), 3).unwrap();
        w.write_all(&vec![b'x'; 20_000]).unwrap();
        let bytes = w.finish().unwrap();
        let err = Reader::new(bytes.as_slice()).unwrap().next().unwrap().unwrap_err();
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn in_order_checks_order_digest_and_count() {
        let all = lines(3);
        let mut e = Expected::in_order(all.clone().into_iter().map(Ok), 3);
        e.check(&all[0].path, &all[0].sha256).unwrap();
        let err = e.check(&all[2].path, &all[2].sha256).unwrap_err();
        assert!(err.contains("entry 2 there is"), "{err}");

        let mut e = Expected::in_order(all.clone().into_iter().map(Ok), 3);
        let err = e.check(&all[0].path, &all[1].sha256).unwrap_err();
        assert!(err.contains("is corrupt"), "{err}");

        let mut e = Expected::in_order(all.clone().into_iter().map(Ok), 3);
        e.check(&all[0].path, &all[0].sha256).unwrap();
        let err = e.finish().unwrap_err();
        assert!(err.contains("1 of 3 entries present"), "{err}");

        // The lines agree with the archive but not with the count the metadata records.
        let mut e = Expected::in_order(all.clone().into_iter().map(Ok), 4);
        for l in &all {
            e.check(&l.path, &l.sha256).unwrap();
        }
        let err = e.finish().unwrap_err();
        assert!(err.contains("the metadata says 4"), "{err}");
    }

    #[test]
    fn seen_refuses_a_path_twice() {
        let mut s = Seen::default();
        assert!(s.insert("a"));
        assert!(s.insert("b"));
        assert!(!s.insert("a"));
    }
}
