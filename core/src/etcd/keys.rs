//! The two key formats, written and read as streams (neither holds the values in memory).
//!
//! - `keys`: a zip with one entry per key, named by [`escape`](super::escape::escape), holding the
//!   value as it is (deflated). The zip comment names the revision.
//! - `keys-json`: one JSON document, one key per line:
//!
//! ```json
//! {
//!   "apiVersion": "kubectl-backup.dev/v1alpha1",
//!   "kind": "EtcdKeys",
//!   "revision": 1234,
//!   "clusterId": "cdf818194e3a8c32",
//!   "memberId": "8e9e05c52164694d",
//!   "prefix": "/registry/",
//!   "keys": [
//!     {"key":"/registry/a","value":"text","createRevision":5,"modRevision":9,"version":2},
//!     {"key":"/registry/b","valueBase64":"azhzAAo=","createRevision":6,"modRevision":6,"version":1}
//!   ],
//!   "count": 2
//! }
//! ```
//!
//! A key or value that is not UTF-8 is written as `keyBase64` / `valueBase64` (standard base64).

use std::fmt;
use std::io::{self, BufReader, Read, Seek, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::escape::{escape, unescape};
use super::model::EtcdBackupType;
use crate::API_VERSION;

/// `kind` of a keys-json document.
pub const JSON_KIND: &str = "EtcdKeys";

/// One key as read back from a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Facts about the keyspace written into the file itself.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub revision: i64,
    pub cluster_id: String,
    pub member_id: String,
    pub prefix: Option<String>,
}

/// The bookkeeping etcd keeps per key, written to keys-json for reference (a restore cannot set it).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyMeta {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// Writes keys in one of the two key formats.
pub enum KeysWriter<W: Write> {
    Zip { zip: Box<ZipWriter<StreamWriter<W>>>, options: SimpleFileOptions, count: u64 },
    Json { out: W, count: u64 },
}

impl<W: Write> KeysWriter<W> {
    pub fn new(kind: EtcdBackupType, mut out: W, header: &Header, mtime: Timestamp) -> io::Result<Self> {
        match kind {
            EtcdBackupType::Keys => {
                let mut zip = ZipWriter::new_stream(out);
                zip.set_comment(format!(
                    "kubectl-backup etcd keys at revision {} of cluster {}; entry names are percent-escaped keys",
                    header.revision, header.cluster_id
                ))
                .map_err(io::Error::other)?;
                let options = SimpleFileOptions::default()
                    .compression_method(CompressionMethod::Deflated)
                    .compression_level(Some(1))
                    .last_modified_time(zip_time(mtime))
                    .unix_permissions(0o644)
                    .large_file(false);
                Ok(KeysWriter::Zip { zip: Box::new(zip), options, count: 0 })
            }
            EtcdBackupType::KeysJson => {
                let text = |s: &str| serde_json::to_string(s).map_err(io::Error::other);
                write!(
                    out,
                    "{{\n  \"apiVersion\": {},\n  \"kind\": {},\n  \"revision\": {},\n  \"clusterId\": {},\n  \"memberId\": {},\n",
                    text(API_VERSION)?,
                    text(JSON_KIND)?,
                    header.revision,
                    text(&header.cluster_id)?,
                    text(&header.member_id)?
                )?;
                if let Some(p) = &header.prefix {
                    writeln!(out, "  \"prefix\": {},", text(p)?)?;
                }
                out.write_all(b"  \"keys\": [")?;
                Ok(KeysWriter::Json { out, count: 0 })
            }
            EtcdBackupType::Snapshot => Err(io::Error::other("a snapshot is not written as keys")),
        }
    }

    pub fn add(&mut self, key: &[u8], value: &[u8], meta: KeyMeta) -> io::Result<()> {
        match self {
            KeysWriter::Zip { zip, options, count } => {
                let name = escape(key).ok_or_else(|| io::Error::other("etcd returned an empty key"))?;
                zip.start_file(name, *options).map_err(io::Error::other)?;
                zip.write_all(value)?;
                *count += 1;
                Ok(())
            }
            KeysWriter::Json { out, count } => {
                let (key_text, key_base64) = match std::str::from_utf8(key) {
                    Ok(s) => (Some(s), None),
                    Err(_) => (None, Some(BASE64.encode(key))),
                };
                let (value_text, value_base64) = match std::str::from_utf8(value) {
                    Ok(s) => (Some(s), None),
                    Err(_) => (None, Some(BASE64.encode(value))),
                };
                let entry = JsonEntryOut {
                    key: key_text,
                    key_base64,
                    value: value_text,
                    value_base64,
                    create_revision: meta.create_revision,
                    mod_revision: meta.mod_revision,
                    version: meta.version,
                    lease: meta.lease,
                };
                out.write_all(if *count == 0 { b"\n    " } else { b",\n    " })?;
                serde_json::to_writer(&mut *out, &entry).map_err(io::Error::other)?;
                *count += 1;
                Ok(())
            }
        }
    }

    /// The writer underneath (for progress); `None` once the zip is closed.
    pub fn get_ref(&self) -> Option<&W> {
        match self {
            KeysWriter::Zip { zip, .. } => zip.get_ref().map(StreamWriter::get_ref),
            KeysWriter::Json { out, .. } => Some(out),
        }
    }

    pub fn count(&self) -> u64 {
        match self {
            KeysWriter::Zip { count, .. } | KeysWriter::Json { count, .. } => *count,
        }
    }

    /// Ends the document (the zip's central directory, or the JSON's closing lines).
    pub fn finish(self) -> io::Result<W> {
        match self {
            KeysWriter::Zip { zip, .. } => Ok((*zip).finish().map_err(io::Error::other)?.into_inner()),
            KeysWriter::Json { mut out, count } => {
                if count > 0 {
                    out.write_all(b"\n  ")?;
                }
                write!(out, "],\n  \"count\": {count}\n}}\n")?;
                Ok(out)
            }
        }
    }
}

fn zip_time(t: Timestamp) -> zip::DateTime {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    zip::DateTime::from_date_and_time(
        u16::try_from(z.year()).unwrap_or(1980),
        z.month() as u8,
        z.day() as u8,
        z.hour() as u8,
        z.minute() as u8,
        z.second() as u8,
    )
    .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonEntryOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    #[serde(skip_serializing_if = "is_zero")]
    lease: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEntryIn {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_base64: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
}

impl JsonEntryIn {
    fn decode(self, index: u64) -> Result<Entry, String> {
        let key = match (self.key, self.key_base64) {
            (Some(k), None) => k.into_bytes(),
            (None, Some(b)) => {
                BASE64.decode(b.as_bytes()).map_err(|e| format!("keys[{index}].keyBase64 is not base64: {e}"))?
            }
            _ => return Err(format!("keys[{index}] needs exactly one of key and keyBase64")),
        };
        if key.is_empty() {
            return Err(format!("keys[{index}] has an empty key"));
        }
        let value = match (self.value, self.value_base64) {
            (Some(v), None) => v.into_bytes(),
            (None, Some(b)) => {
                BASE64.decode(b.as_bytes()).map_err(|e| format!("keys[{index}].valueBase64 is not base64: {e}"))?
            }
            _ => return Err(format!("keys[{index}] needs exactly one of value and valueBase64")),
        };
        Ok(Entry { key, value })
    }
}

/// What reading a keys file found besides the entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub entries: u64,
    pub revision: Option<i64>,
}

/// Reads a keys-json document, calling `sink` for each key in order. The document is parsed as a
/// stream: memory stays flat however many keys it holds. Checks `kind` and `count`.
pub fn read_json<R: Read>(reader: R, sink: &mut dyn FnMut(Entry) -> io::Result<()>) -> Result<ReadSummary, String> {
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, reader));
    let doc = DocumentSeed { sink }.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| format!("trailing data after the document: {e}"))?;
    if doc.kind.as_deref() != Some(JSON_KIND) {
        return Err(format!("not a keys-json document (kind {:?}, expected {JSON_KIND:?})", doc.kind));
    }
    if let Some(count) = doc.count
        && count != doc.entries
    {
        return Err(format!("the document says it holds {count} keys but has {}", doc.entries));
    }
    Ok(ReadSummary { entries: doc.entries, revision: doc.revision })
}

struct DocumentSeed<'a> {
    sink: &'a mut dyn FnMut(Entry) -> io::Result<()>,
}

#[derive(Default)]
struct Document {
    kind: Option<String>,
    revision: Option<i64>,
    count: Option<u64>,
    entries: u64,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Document;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Document, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a keys-json document (an object with a \"keys\" array)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut doc = Document::default();
        let mut seen_keys = false;
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "keys" => {
                    if seen_keys {
                        return Err(de::Error::custom("\"keys\" appears twice"));
                    }
                    seen_keys = true;
                    doc.entries = map.next_value_seed(KeysSeed { sink: &mut *self.sink })?;
                }
                "kind" => doc.kind = Some(map.next_value()?),
                "revision" => doc.revision = Some(map.next_value()?),
                "count" => doc.count = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !seen_keys {
            return Err(de::Error::custom("the document has no \"keys\" array"));
        }
        Ok(doc)
    }
}

struct KeysSeed<'a> {
    sink: &'a mut dyn FnMut(Entry) -> io::Result<()>,
}

impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
    type Value = u64;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of {key, value} objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        while let Some(e) = seq.next_element::<JsonEntryIn>()? {
            let entry = e.decode(n).map_err(de::Error::custom)?;
            (self.sink)(entry).map_err(de::Error::custom)?;
            n += 1;
        }
        Ok(n)
    }
}

/// The largest value a keys archive may hold: etcd refuses requests over `--max-request-bytes`
/// (1.5 MiB by default); 64 MiB leaves room for clusters that raised it.
pub const MAX_VALUE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a keys zip, calling `sink` for each entry in archive order. Every name must be one
/// [`escape`] makes; anything else (a directory, a path) is refused, so no entry can point outside.
pub fn read_zip<R: Read + Seek>(
    reader: R,
    sink: &mut dyn FnMut(Entry) -> io::Result<()>,
) -> Result<ReadSummary, String> {
    let mut zip = ZipArchive::new(reader).map_err(|e| format!("not a zip archive: {e}"))?;
    let revision = revision_from_comment(zip.comment());
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = std::str::from_utf8(file.name_raw())
            .map_err(|_| format!("zip entry {i}: the name is not ASCII"))?
            .to_string();
        let key = unescape(&name)?;
        if file.size() > MAX_VALUE_BYTES {
            return Err(format!(
                "zip entry {name} is {} bytes, larger than any etcd value ({MAX_VALUE_BYTES} bytes)",
                file.size()
            ));
        }
        let mut value = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0));
        // The declared size is the writer's word: read one byte more than the limit, never all.
        (&mut file).take(MAX_VALUE_BYTES + 1).read_to_end(&mut value).map_err(|e| format!("zip entry {name}: {e}"))?;
        if value.len() as u64 > MAX_VALUE_BYTES {
            return Err(format!(
                "zip entry {name} decompresses to more than {MAX_VALUE_BYTES} bytes, larger than any etcd value"
            ));
        }
        sink(Entry { key, value }).map_err(|e| e.to_string())?;
    }
    Ok(ReadSummary { entries: zip.len() as u64, revision })
}

fn revision_from_comment(comment: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(comment).ok()?;
    let rest = text.split("at revision ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header { revision: 77, cluster_id: "c1".into(), member_id: "m1".into(), prefix: Some("/p/".into()) }
    }

    fn write(kind: EtcdBackupType, entries: &[Entry]) -> Vec<u8> {
        let mut w = KeysWriter::new(kind, Vec::new(), &header(), Timestamp::now()).unwrap();
        for (i, e) in entries.iter().enumerate() {
            let i = i as i64;
            w.add(&e.key, &e.value, KeyMeta { create_revision: i + 1, mod_revision: i + 2, version: 1, lease: 0 })
                .unwrap();
        }
        assert_eq!(w.count(), entries.len() as u64);
        w.finish().unwrap()
    }

    fn read(kind: EtcdBackupType, bytes: &[u8]) -> Result<(Vec<Entry>, ReadSummary), String> {
        let mut got = Vec::new();
        let mut sink = |e: Entry| {
            got.push(e);
            Ok(())
        };
        let summary = match kind {
            EtcdBackupType::Keys => read_zip(io::Cursor::new(bytes), &mut sink)?,
            _ => read_json(bytes, &mut sink)?,
        };
        Ok((got, summary))
    }

    fn sample() -> Vec<Entry> {
        vec![
            Entry { key: b"/registry/configmaps/default/a".to_vec(), value: b"{\"text\": \"\xc3\xa9\"}".to_vec() },
            Entry { key: b"/registry/secrets/default/b".to_vec(), value: b"k8s\0\xff\xfe binary".to_vec() },
            Entry { key: b"\xff\x00odd key".to_vec(), value: Vec::new() },
            Entry { key: b"../../escape".to_vec(), value: b"v".to_vec() },
        ]
    }

    #[test]
    fn json_writes_binary_values_as_base64_and_text_as_text() {
        let bytes = write(EtcdBackupType::KeysJson, &sample());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], JSON_KIND);
        assert_eq!(v["revision"], 77);
        assert_eq!(v["prefix"], "/p/");
        assert_eq!(v["count"], 4);
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys[0]["key"], "/registry/configmaps/default/a");
        assert_eq!(keys[0]["value"], "{\"text\": \"é\"}");
        assert!(keys[0].get("valueBase64").is_none());
        assert_eq!(keys[1]["valueBase64"], BASE64.encode(b"k8s\0\xff\xfe binary"));
        assert!(keys[1].get("value").is_none());
        assert_eq!(keys[2]["keyBase64"], BASE64.encode(b"\xff\x00odd key"));
        assert_eq!(keys[2]["value"], "");
        assert_eq!(keys[1]["createRevision"], 2);
        assert_eq!(keys[1]["modRevision"], 3);
        // One key per line.
        assert_eq!(String::from_utf8(bytes).unwrap().lines().filter(|l| l.contains("createRevision")).count(), 4);
    }

    #[test]
    fn both_formats_round_trip_exactly() {
        for kind in [EtcdBackupType::Keys, EtcdBackupType::KeysJson] {
            let bytes = write(kind, &sample());
            let (got, summary) = read(kind, &bytes).unwrap();
            assert_eq!(got, sample(), "{kind}");
            assert_eq!(summary, ReadSummary { entries: 4, revision: Some(77) }, "{kind}");
            let (got, _) = read(kind, &write(kind, &[])).unwrap();
            assert!(got.is_empty());
        }
    }

    #[test]
    fn zip_entries_are_safe_names_other_tools_read() {
        let bytes = write(EtcdBackupType::Keys, &sample());
        let mut zip = ZipArchive::new(io::Cursor::new(&bytes)).unwrap();
        for i in 0..zip.len() {
            let f = zip.by_index(i).unwrap();
            let enclosed = f.enclosed_name().expect("entry escapes the archive");
            assert_eq!(enclosed.components().count(), 1, "{enclosed:?}");
            assert!(!enclosed.to_string_lossy().starts_with('.'));
        }
        let mut f = zip.by_name("%2Fregistry%2Fsecrets%2Fdefault%2Fb").unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"k8s\0\xff\xfe binary");
    }

    #[test]
    fn zip_holds_more_than_65535_keys() {
        let entries: Vec<Entry> = (0..70_000u32)
            .map(|i| Entry { key: format!("k{i:06}").into_bytes(), value: i.to_le_bytes().to_vec() })
            .collect();
        let bytes = write(EtcdBackupType::Keys, &entries);
        let (got, summary) = read(EtcdBackupType::Keys, &bytes).unwrap();
        assert_eq!(summary.entries, 70_000);
        assert_eq!(got[69_999], entries[69_999]);
    }

    #[test]
    fn tampered_documents_are_refused() {
        let bytes = write(EtcdBackupType::KeysJson, &sample());
        let text = String::from_utf8(bytes).unwrap();
        let wrong_count = text.replace("\"count\": 4", "\"count\": 5");
        assert!(read(EtcdBackupType::KeysJson, wrong_count.as_bytes()).unwrap_err().contains("says it holds 5"));
        let truncated = &text[..text.len() / 2];
        assert!(read(EtcdBackupType::KeysJson, truncated.as_bytes()).is_err());
        let both = r#"{"kind":"EtcdKeys","keys":[{"key":"a","keyBase64":"YQ==","value":""}]}"#;
        assert!(read(EtcdBackupType::KeysJson, both.as_bytes()).unwrap_err().contains("exactly one of key"));
        let other = r#"{"kind":"Backup","keys":[]}"#;
        assert!(read(EtcdBackupType::KeysJson, other.as_bytes()).unwrap_err().contains("not a keys-json"));

        // A zip entry whose name is a path.
        let mut zip = ZipWriter::new(io::Cursor::new(Vec::new()));
        zip.start_file("../evil", SimpleFileOptions::default()).unwrap();
        zip.write_all(b"x").unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert!(read(EtcdBackupType::Keys, &bytes).is_err());
    }

    #[test]
    fn a_zip_bomb_value_is_refused_without_reading_it_whole() {
        let mut zip = ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        zip.start_file(escape(b"/registry/bomb").unwrap(), opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(MAX_VALUE_BYTES >> 20) + 1 {
            zip.write_all(&chunk).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        assert!(bytes.len() < 1 << 20, "{} bytes compressed", bytes.len());
        let err = read(EtcdBackupType::Keys, &bytes).unwrap_err();
        assert!(err.contains("larger than any etcd value"), "{err}");
    }

    #[test]
    fn a_failing_sink_stops_reading() {
        let bytes = write(EtcdBackupType::KeysJson, &sample());
        let mut n = 0;
        let err = read_json(&bytes[..], &mut |_| {
            n += 1;
            Err(io::Error::other("stop"))
        })
        .unwrap_err();
        assert!(err.contains("stop"), "{err}");
        assert_eq!(n, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_keys_and_values_round_trip(
            kvs in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..24),
                proptest::collection::vec(any::<u8>(), 0..64),
                0..20,
            )
        ) {
            let entries: Vec<Entry> = kvs.into_iter().map(|(key, value)| Entry { key, value }).collect();
            for kind in [EtcdBackupType::Keys, EtcdBackupType::KeysJson] {
                let (got, _) = read(kind, &write(kind, &entries)).unwrap();
                prop_assert_eq!(&got, &entries);
            }
        }
    }
}
