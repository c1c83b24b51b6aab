//! The archive: a tar stream compressed with zstd (`tar --zstd -xf` opens it), one readable JSON file
//! per object at `resources/<resource>[.<group>]/namespaces/<ns>/<name>.json` or
//! `resources/<resource>[.<group>]/cluster/<name>.json`, with a SHA-256 per entry kept for the
//! metadata document. The reader checks every path and every digest.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

pub use crate::committed::Digesting;
pub use crate::contents::{Expected, Line, Seen};
use crate::crypto::{Seal, Sealed};

use crate::collect::Item;

/// The archive format name stored in the metadata.
pub const FORMAT: &str = "tar+zstd";
/// zstd level of archives and packs. Level 2 compresses Kubernetes JSON about 1.5x as fast as
/// zstd's default 3 for about 4% more bytes: at 100k objects the archive's compression was 40% of
/// the client's CPU (docs/benchmarks.md, "create at 100k: where the CPU went").
pub const ZSTD_LEVEL: i32 = 2;
/// zstd level of the contents file and of pack indexes: lines of paths and hex digests, which
/// level 1 compresses about 3x as fast as level 3 and smaller (hex defeats the longer searches).
pub const CONTENTS_ZSTD_LEVEL: i32 = 1;
/// The largest entry an archive may hold: the API server's limit on a request body (3 MiB). A
/// larger object could not be restored anyway, so a larger entry is refused before it is read.
pub const MAX_OBJECT_BYTES: u64 = 3 * 1024 * 1024;
/// The longest GNU long-name record: a path of resource, namespace and name is far shorter.
pub(crate) const MAX_LONG_NAME: u64 = 4096;
/// zstd frames asking for a window above 8 MiB are refused (level 3 uses 2 MiB): this bounds the
/// decoder's memory whatever the archive says.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
const BLOCK: u64 = 512;

mod bounded;
pub use self::bounded::Bounded;

/// The path of an object's entry.
pub fn entry_path(resource: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("resources/{resource}/namespaces/{ns}/{name}.json"),
        None => format!("resources/{resource}/cluster/{name}.json"),
    }
}

/// The start of the entry paths of `resource`'s objects in `namespace`: what [`entry_path`] puts
/// before `<name>.json`.
pub fn entry_dir(resource: &str, namespace: &str) -> String {
    format!("resources/{resource}/namespaces/{namespace}/")
}

/// The resource of an entry path [`entry_path`] made, without validating the rest.
pub fn entry_resource(path: &str) -> Option<&str> {
    path.strip_prefix("resources/")?.split('/').next()
}

/// A validated entry path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPath {
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// Parses an entry path, refusing anything that could escape its directory or is not an object.
pub fn parse_entry_path(path: &str) -> Result<EntryPath, String> {
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(format!("entry {path:?} is not a relative path"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(format!("entry {path:?} has an empty, '.' or '..' segment"));
    }
    let file = |f: &str| f.strip_suffix(".json").filter(|n| !n.is_empty()).map(str::to_string);
    match parts.as_slice() {
        ["resources", resource, "namespaces", ns, f] => Ok(EntryPath {
            resource: resource.to_string(),
            namespace: Some(ns.to_string()),
            name: file(f).ok_or_else(|| format!("entry {path:?} is not a .json file"))?,
        }),
        ["resources", resource, "cluster", f] => Ok(EntryPath {
            resource: resource.to_string(),
            namespace: None,
            name: file(f).ok_or_else(|| format!("entry {path:?} is not a .json file"))?,
        }),
        _ => Err(format!("entry {path:?} is not an object path (resources/<resource>/...)")),
    }
}

/// SHA-256 of `bytes`, lowercase hex. Hexed through a table, not a `char` at a time
/// (`hex::encode`): this runs once per object written.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(bytes), &mut out).expect("64 hex digits for 32 bytes");
    String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
}

/// What a finished archive is.
#[derive(Debug, Default)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    /// Entries written.
    pub entries: u64,
    /// Entries refused because their path was already written.
    pub duplicates: u64,
}

/// Writes objects into a tar+zstd stream; each object's [`Line`] goes to the caller, which
/// streams the contents elsewhere. It keeps 12 bytes per object to refuse one listed twice,
/// except for objects collect listed [`Item::in_key_order`], whose paths are unique by
/// construction: its memory does not grow with the objects of the API server's own resources.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<zstd::Encoder<'static, Sealed<Digesting<W>>>>,
    seen: Seen,
    /// Resources with objects written unchecked ([`Item::in_key_order`]), and with objects
    /// checked against `seen`: no resource may have both, or an object of one kind could repeat
    /// one of the other unnoticed.
    unchecked: HashSet<String>,
    checked: HashSet<String>,
    entries: u64,
    duplicates: u64,
    mtime: u64,
}

impl<W: Write> ArchiveWriter<W> {
    /// `mtime` (seconds since the epoch) is stamped on every entry: the backup's start time. With
    /// a `seal`, the compressed stream is encrypted; size and SHA-256 are of the stored bytes.
    pub fn new(out: W, mtime: u64, seal: Option<&Seal>) -> io::Result<Self> {
        let sealed = Sealed::new(Digesting::new(out), seal).map_err(|e| io::Error::other(e.to_string()))?;
        let mut encoder = zstd::Encoder::new(sealed, ZSTD_LEVEL)?;
        encoder.include_checksum(true)?;
        let mut tar = tar::Builder::new(encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(ArchiveWriter {
            tar,
            seen: Seen::default(),
            unchecked: HashSet::new(),
            checked: HashSet::new(),
            entries: 0,
            duplicates: 0,
            mtime,
        })
    }

    /// Appends an object; returns its contents line, or `None` when its path was written already.
    pub fn append(&mut self, item: &Item) -> io::Result<Option<Line>> {
        let path = entry_path(&item.resource, item.namespace.as_deref(), &item.name);
        let json = item.json()?;
        let (this, other) =
            if item.in_key_order { (&mut self.unchecked, &self.checked) } else { (&mut self.checked, &self.unchecked) };
        if other.contains(&item.resource) {
            return Err(io::Error::other(format!(
                "internal error: objects of {} came both listed in key order and not; the archive could hold one twice",
                item.resource
            )));
        }
        if !this.contains(&item.resource) {
            this.insert(item.resource.clone());
        }
        let written = if item.in_key_order {
            self.write(&path, json)?;
            true
        } else {
            self.append_raw(&path, json)?
        };
        Ok(written.then(|| Line::of(path, json)))
    }

    /// Appends `body` as the regular file `path`; false (and nothing written) when `path` was
    /// written already.
    pub fn append_raw(&mut self, path: &str, body: &[u8]) -> io::Result<bool> {
        if !self.seen.insert(path) {
            self.duplicates += 1;
            return Ok(false);
        }
        self.write(path, body)?;
        Ok(true)
    }

    fn write(&mut self, path: &str, body: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut header, path, body)?;
        self.entries += 1;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Compressed bytes produced so far (before encryption, which adds 16 bytes per 64 KiB).
    pub fn bytes_out(&mut self) -> u64 {
        self.tar.get_mut().get_ref().written()
    }

    pub fn finish(self) -> io::Result<(W, Written)> {
        let encoder = self.tar.into_inner()?;
        let digesting = encoder.finish()?.finish()?;
        let (mut out, size, sha256) = digesting.finish();
        out.flush()?;
        Ok((out, Written { size, sha256, entries: self.entries, duplicates: self.duplicates }))
    }
}

/// One object read back from an archive, its digest verified.
#[derive(Debug)]
pub struct Entry {
    pub path: EntryPath,
    pub raw_path: String,
    pub json: Vec<u8>,
    /// SHA-256 of `json`, hex: checked against the contents.
    pub sha256: String,
}

/// The tar entries of an archive read through the bounds every reader needs: a capped zstd window,
/// and [`Bounded`] limits on each tar record and on the whole stream for `entries` objects.
pub fn open<R: Read>(
    input: R,
    entries: usize,
) -> Result<tar::Archive<Bounded<zstd::Decoder<'static, io::BufReader<R>>>>, String> {
    // Per object: a header, a long-name record and its header, the body padded to a block.
    let per_entry = MAX_OBJECT_BYTES + MAX_LONG_NAME + 3 * BLOCK;
    let max_total = (entries as u64).saturating_add(1).saturating_mul(per_entry).saturating_add(4 * BLOCK);
    open_within(input, max_total)
}

/// [`open`] for a stream whose writer never puts more than `max_total` plaintext bytes in it.
pub fn open_within<R: Read>(
    input: R,
    max_total: u64,
) -> Result<tar::Archive<Bounded<zstd::Decoder<'static, io::BufReader<R>>>>, String> {
    let mut decoder = zstd::Decoder::new(input).map_err(|e| format!("not a zstd stream: {e}"))?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| format!("zstd decoder: {e}"))?;
    Ok(tar::Archive::new(Bounded::new(decoder, max_total)))
}

/// Checks that an archived object is what its entry path says: its `metadata.name`, its
/// `metadata.namespace` (absent or equal), and its `apiVersion`'s group in the resource key. A
/// restore filtered to namespace X must not create a cluster-wide object filed under X.
pub fn check_identity(path: &EntryPath, raw_path: &str, obj: &serde_json::Value) -> Result<(), String> {
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    if name != path.name {
        return Err(format!("entry {raw_path:?} holds an object named {name:?}, not {:?}", path.name));
    }
    match (meta["namespace"].as_str(), path.namespace.as_deref()) {
        (Some(ns), Some(p)) if ns != p => {
            return Err(format!("entry {raw_path:?} holds an object of namespace {ns:?}, not {p:?}"));
        }
        (Some(ns), None) if !ns.is_empty() => {
            return Err(format!("entry {raw_path:?} is filed as cluster-scoped but its object is in namespace {ns:?}"));
        }
        _ => {}
    }
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        return Err(format!("entry {raw_path:?} has no apiVersion or kind"));
    }
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let grouped = !group.is_empty() && path.resource.ends_with(&format!(".{group}"));
    let core = group.is_empty() && !path.resource.contains('.');
    if !(grouped || core) {
        return Err(format!(
            "entry {raw_path:?} is filed under resource {:?} but holds a {kind} of {api_version}",
            path.resource
        ));
    }
    Ok(())
}

/// Reads an entry's body whole. A body cut short is an error, not a shorter body: the tar reader
/// stops quietly where its input ends, and a stream cut where a zstd frame ends is valid zstd.
pub fn read_body<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<u8>> {
    let size = entry.size();
    let mut body = Vec::with_capacity(size.min(MAX_OBJECT_BYTES) as usize);
    entry.read_to_end(&mut body)?;
    if (body.len() as u64) < size {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} of its {size} bytes", body.len())));
    }
    Ok(body)
}

/// Reads an archive, checking each entry's path and digest against `expected` (the contents, or
/// a format-1 digest map). Calls `f` for each verified entry. At the end checks that every
/// expected entry was seen exactly once.
///
/// Any failure names the entry and what was wrong.
pub fn read_verified<R: Read>(
    input: R,
    mut expected: Expected<'_>,
    mut f: impl FnMut(Entry) -> Result<(), String>,
) -> Result<u64, String> {
    let mut archive = open(input, expected.len() as usize)?;
    let mut seen = 0u64;
    let entries = archive.entries().map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("archive truncated or corrupt: {e}"))?;
        let raw_path =
            String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| "an entry path is not UTF-8".to_string())?;
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(format!("entry {raw_path:?} is not a regular file ({kind:?})"));
        }
        let path = parse_entry_path(&raw_path)?;
        if entry.size() > MAX_OBJECT_BYTES {
            return Err(format!(
                "entry {raw_path:?} is {} bytes, larger than any object the API server accepts",
                entry.size()
            ));
        }
        let json = read_body(&mut entry).map_err(|e| format!("archive truncated or corrupt in {raw_path:?}: {e}"))?;
        let sha256 = sha256_hex(&json);
        expected.check(&raw_path, &sha256)?;
        seen += 1;
        f(Entry { path, raw_path, json, sha256 })?;
    }
    expected.finish()?;
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn item(resource: &str, ns: Option<&str>, name: &str, body: &str) -> Item {
        Item {
            resource: resource.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
            body: crate::collect::Body::Read { json: body.as_bytes().to_vec(), version: None },
            in_key_order: false,
        }
    }

    fn build(items: &[Item]) -> (Vec<u8>, Written, Vec<Line>) {
        let mut w = ArchiveWriter::new(Vec::new(), 1_700_000_000, None).unwrap();
        let mut lines = Vec::new();
        for i in items {
            lines.extend(w.append(i).unwrap());
        }
        let (bytes, written) = w.finish().unwrap();
        (bytes, written, lines)
    }

    /// Format 1's digest map of the same lines.
    fn digests(lines: &[Line]) -> BTreeMap<String, String> {
        lines.iter().map(|l| (l.path.clone(), l.sha256.clone())).collect()
    }

    fn in_order(lines: &[Line]) -> Expected<'static> {
        let owned: Vec<Line> = lines.to_owned();
        Expected::in_order(owned.into_iter().map(Ok), lines.len() as u64)
    }

    #[test]
    fn round_trip_verifies_every_entry() {
        let long = "x".repeat(200);
        let items = vec![
            item("configmaps", Some("shop"), "settings", r#"{"kind":"ConfigMap"}"#),
            item("deployments.apps", Some("shop"), &long, r#"{"kind":"Deployment"}"#),
            item("customresourcedefinitions.apiextensions.k8s.io", None, "widgets.example.org", "{}"),
        ];
        let (bytes, written, lines) = build(&items);
        assert_eq!((written.entries, lines.len()), (3, 3));
        assert_eq!(written.size, bytes.len() as u64);
        assert_eq!(written.sha256, sha256_hex(&bytes));
        let mut got = Vec::new();
        let n = read_verified(bytes.as_slice(), in_order(&lines), |e| {
            assert_eq!(e.sha256, sha256_hex(&e.json));
            got.push((e.path, String::from_utf8(e.json).unwrap()));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        // Format 1's digest map reads the same archive.
        assert_eq!(read_verified(bytes.as_slice(), Expected::map(&digests(&lines)), |_| Ok(())).unwrap(), 3);
        assert_eq!(got[1].0.name, long);
        assert_eq!(
            got[2].0,
            EntryPath {
                resource: "customresourcedefinitions.apiextensions.k8s.io".into(),
                namespace: None,
                name: "widgets.example.org".into()
            }
        );
        assert_eq!(got[0].1, r#"{"kind":"ConfigMap"}"#);
    }

    #[test]
    fn an_archive_of_several_zstd_frames_cut_where_one_ends_is_refused() {
        // `zstd -T0` and `tar --zstd` write several frames; a stream cut where one ends is valid
        // zstd, and the tar reader stops quietly mid-entry: the entry cut short must refuse it.
        let items: Vec<Item> = (0..40)
            .map(|i| {
                item("configmaps", Some("a"), &format!("cm-{i}"), &format!("{{\"data\":\"{}\"}}", "v".repeat(3000)))
            })
            .collect();
        let (bytes, written, lines) = build(&items);
        let tar = zstd::decode_all(bytes.as_slice()).unwrap();
        let cut = tar.len() / 2 + 100;
        let first = zstd::encode_all(&tar[..cut], 1).unwrap();
        let two_frames = [first.clone(), zstd::encode_all(&tar[cut..], 1).unwrap()].concat();
        assert_eq!(read_verified(two_frames.as_slice(), in_order(&lines), |_| Ok(())).unwrap(), written.entries);
        let err = read_verified(first.as_slice(), in_order(&lines), |_| Ok(())).unwrap_err();
        assert!(err.starts_with("archive truncated or corrupt in \"resources/configmaps/namespaces/a/cm-"), "{err}");
        assert!(err.ends_with(" of its 3011 bytes"), "{err}");
    }

    #[test]
    fn duplicates_are_written_once() {
        let (_, written, lines) =
            build(&[item("configmaps", Some("a"), "b", "1"), item("configmaps", Some("a"), "b", "2")]);
        assert_eq!((written.entries, written.duplicates, lines.len()), (1, 1, 1));
    }

    #[test]
    fn objects_listed_in_key_order_are_not_remembered_and_their_resources_take_no_other() {
        let sorted = |ns, name| Item { in_key_order: true, ..item("configmaps", Some(ns), name, "{}") };
        let mut w = ArchiveWriter::new(Vec::new(), 1_700_000_000, None).unwrap();
        for (ns, name) in [("a", "1"), ("a", "2"), ("b", "1")] {
            assert!(w.append(&sorted(ns, name)).unwrap().is_some());
        }
        assert!(!w.seen.contains(&entry_path("configmaps", Some("a"), "1")));
        // Others are remembered and refused twice.
        assert!(w.append(&item("widgets.example.org", Some("a"), "1", "{}")).unwrap().is_some());
        assert!(w.append(&item("widgets.example.org", Some("a"), "1", "{}")).unwrap().is_none());
        assert!(w.seen.contains(&entry_path("widgets.example.org", Some("a"), "1")));
        // A resource written unchecked cannot get a checked object, nor the other way round.
        let e = w.append(&item("configmaps", Some("a"), "1", "{}")).unwrap_err();
        assert!(e.to_string().contains("objects of configmaps came both listed in key order and not"), "{e}");
        let e =
            w.append(&Item { in_key_order: true, ..item("widgets.example.org", Some("z"), "9", "{}") }).unwrap_err();
        assert!(e.to_string().contains("objects of widgets.example.org came both"), "{e}");
        let (bytes, written) = w.finish().unwrap();
        assert_eq!((written.entries, written.duplicates), (4, 1));
        assert!(!bytes.is_empty());
    }

    #[test]
    fn refuses_corrupted_truncated_and_unlisted() {
        let (bytes, _, lines) =
            build(&[item("configmaps", Some("a"), "b", "hello"), item("secrets", Some("a"), "c", "world")]);
        let objects = digests(&lines);
        // a digest that does not match
        let mut wrong = objects.clone();
        wrong.insert("resources/secrets/namespaces/a/c.json".into(), sha256_hex(b"other"));
        let err = read_verified(bytes.as_slice(), Expected::map(&wrong), |_| Ok(())).unwrap_err();
        assert!(err.contains("is corrupt"), "{err}");
        let mut wrong = lines.clone();
        wrong[1].sha256 = sha256_hex(b"other");
        let err = read_verified(bytes.as_slice(), in_order(&wrong), |_| Ok(())).unwrap_err();
        assert!(err.contains("\"resources/secrets/namespaces/a/c.json\" is corrupt"), "{err}");
        // truncated stream
        let err = read_verified(&bytes[..bytes.len() / 2], in_order(&lines), |_| Ok(())).unwrap_err();
        assert!(err.contains("truncated") || err.contains("corrupt"), "{err}");
        // an entry the metadata does not list
        let mut fewer = objects.clone();
        fewer.remove("resources/secrets/namespaces/a/c.json");
        let err = read_verified(bytes.as_slice(), Expected::map(&fewer), |_| Ok(())).unwrap_err();
        assert!(err.contains("not listed"), "{err}");
        let err = read_verified(bytes.as_slice(), in_order(&lines[..1]), |_| Ok(())).unwrap_err();
        assert!(err.contains("\"resources/secrets/namespaces/a/c.json\" is not listed in the contents"), "{err}");
        // metadata lists more than the archive has
        let mut more = objects.clone();
        more.insert("resources/secrets/namespaces/a/z.json".into(), sha256_hex(b""));
        let err = read_verified(bytes.as_slice(), Expected::map(&more), |_| Ok(())).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let mut more = lines.clone();
        more.push(Line::of("resources/secrets/namespaces/a/z.json".into(), b""));
        let err = read_verified(bytes.as_slice(), in_order(&more), |_| Ok(())).unwrap_err();
        assert!(err.contains("2 of 3 entries present"), "{err}");
    }

    #[test]
    fn an_entry_paths_resource_is_read_back() {
        assert_eq!(entry_resource(&entry_path("widgets.example.org", Some("a"), "w")), Some("widgets.example.org"));
        assert_eq!(entry_resource(&entry_path("nodes", None, "n")), Some("nodes"));
        assert_eq!(entry_resource("other/x.json"), None);
        // entry_dir is entry_path without the name: read_watched finds a type's objects by it.
        let path = entry_path("configmaps", Some("ns"), "cm");
        assert_eq!(path.strip_prefix(&entry_dir("configmaps", "ns")), Some("cm.json"));
    }

    #[test]
    fn entry_paths_cannot_escape() {
        for bad in [
            "/etc/passwd",
            "resources/../../etc/passwd.json",
            "resources/configmaps/namespaces/../x.json",
            "resources/configmaps/namespaces/a/.json",
            "resources/configmaps/namespaces/a/b.txt",
            "other/x.json",
            "resources//cluster/x.json",
        ] {
            assert!(parse_entry_path(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_entry_path("resources/configmaps/namespaces/a/b.json").is_ok());
    }

    #[test]
    fn refuses_an_archive_with_an_escaping_entry() {
        // A hand-made tar whose entry name is "../evil.json": the reader must refuse it by name.
        let mut raw = Vec::new();
        {
            let enc = zstd::Encoder::new(&mut raw, 3).unwrap().auto_finish();
            let mut tar = tar::Builder::new(enc);
            let mut h = tar::Header::new_gnu();
            let body = b"{}";
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses "..", so write the name bytes directly, as an attacker would.
            let name = b"resources/../evil.json";
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            tar.append(&h, &body[..]).unwrap();
            tar.finish().unwrap();
        }
        let expected: BTreeMap<String, String> = [("resources/../evil.json".to_string(), sha256_hex(b"{}"))].into();
        let err = read_verified(raw.as_slice(), Expected::map(&expected), |_| Ok(())).unwrap_err();
        assert!(err.contains("'..'"), "{err}");
    }

    #[test]
    fn identity_checks_name_namespace_and_group() {
        let p = |s: &str| parse_entry_path(s).unwrap();
        let ok = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}});
        assert!(check_identity(&p("resources/deployments.apps/namespaces/shop/web.json"), "x", &ok).is_ok());
        let cases = [
            ("resources/deployments.apps/namespaces/shop/api.json", ok.clone(), "named \"web\""),
            ("resources/deployments.apps/namespaces/bank/web.json", ok.clone(), "namespace \"shop\""),
            ("resources/deployments.apps/cluster/web.json", ok.clone(), "filed as cluster-scoped"),
            ("resources/configmaps/namespaces/shop/web.json", ok.clone(), "holds a Deployment"),
            (
                "resources/clusterrolebindings.rbac.authorization.k8s.io/namespaces/shop/web.json",
                ok.clone(),
                "holds a Deployment",
            ),
        ];
        for (path, obj, want) in cases {
            let err = check_identity(&p(path), path, &obj).unwrap_err();
            assert!(err.contains(want), "{path}: {err}");
        }
    }
}
