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
mod tests;
