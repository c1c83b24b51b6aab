//! LIST pages of ConfigMaps and Secrets read in protobuf and written back as the JSON the API
//! server would have sent, byte for byte.
//!
//! The API server spends a good part of a LIST's CPU encoding every object as JSON; in protobuf it
//! does not (about a quarter less kube-apiserver CPU for a LIST of ConfigMaps,
//! docs/benchmarks.md). A backup keeps each object's JSON exactly as the server sends it: its
//! SHA-256 is how incremental storage finds a body again, and the controller's watches receive
//! JSON. So a protobuf page is used only when its JSON can be rebuilt exactly, and otherwise the
//! same page is asked for again in JSON ([`Rebuilt::Unsure`]):
//! - every field of the page must be one these messages know: a field a newer (or older) server
//!   sends that they do not is dropped by the decoder, so the page's bytes must re-encode to the
//!   same length (k8s-pb is not used for the messages: it follows the newest API only, without
//!   the `clusterName` servers before 1.25 send in every object);
//! - no string holds a character whose escape changed between Go releases (`\b` and `\f`, written
//!   as `\u0008` and `\u000c` before Go 1.22);
//! - a managed-fields entry's `fieldsV1` must be compact JSON that Go's encoder would copy as it is.
//!
//! The JSON is written as Go's `encoding/json` writes these types: fields in the order of the Go
//! structs, `omitempty` as they declare it, map keys sorted, `<`, `>`, `&`, U+2028 and U+2029
//! escaped, times in RFC 3339 to the second. The end-to-end test `protobuf_lists_store_the_json_
//! the_server_sends` compares both ways, object by object, on a real API server.

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::Bytes;
use prost::Message;

/// The `Accept` of a LIST in protobuf.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// What every protobuf body of the API server starts with, before its `runtime.Unknown`.
const MAGIC: &[u8] = b"k8s\0";

/// How LIST pages are asked for (`--list-encoding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListEncoding {
    /// In protobuf for the resources whose JSON this module rebuilds exactly, in JSON otherwise.
    #[default]
    Auto,
    /// Always in JSON.
    Json,
}

impl std::str::FromStr for ListEncoding {
    type Err = String;
    /// auto or json (the spelling of `--list-encoding`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            _ => Err(format!("expected auto or json, got {s:?}")),
        }
    }
}

/// The kinds whose LISTs are read in protobuf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    /// The kind of a resource listed in protobuf: core/v1 ConfigMaps and Secrets.
    pub fn of(group: &str, version: &str, plural: &str) -> Option<Kind> {
        match (group, version, plural) {
            ("", "v1", "configmaps") => Some(Kind::ConfigMap),
            ("", "v1", "secrets") => Some(Kind::Secret),
            _ => None,
        }
    }
}

/// A protobuf page rebuilt as JSON, or why it was not.
#[derive(Debug)]
pub enum Rebuilt {
    /// Each item's JSON (without `kind` and `apiVersion`, as a JSON LIST sends its items), one
    /// after another in `body`, at `items`.
    Page {
        body: String,
        items: Vec<std::ops::Range<usize>>,
        /// Each item's namespace, name and resourceVersion in `body`.
        metas: Vec<ItemMeta>,
        metadata: kube::core::ListMeta,
    },
    /// The page cannot be rebuilt exactly: it must be read as JSON.
    Unsure(&'static str),
}

/// Rebuilds the protobuf LIST page `wire` of `kind` as its JSON items, into `out` (cleared
/// first). Hands `wire` back, to read the next page into.
pub fn rebuild(kind: Kind, wire: Vec<u8>, mut out: String) -> (Rebuilt, Vec<u8>) {
    out.clear();
    let wire = Bytes::from(wire);
    let rebuilt = match unwrap(&wire) {
        Some(raw) => rebuild_list(kind, wire.slice_ref(raw), out),
        None => Rebuilt::Unsure("not a protobuf body"),
    };
    // The page's objects borrowed from `wire` are gone: it is whole again.
    let wire = wire.try_into_mut().map(Vec::from).unwrap_or_default();
    (rebuilt, wire)
}

fn rebuild_list(kind: Kind, raw: Bytes, out: String) -> Rebuilt {
    match kind {
        Kind::ConfigMap => rebuild_items::<ConfigMapList, _>(raw, out, |l| (l.metadata, l.items), write_config_map),
        Kind::Secret => rebuild_items::<SecretList, _>(raw, out, |l| (l.metadata, l.items), write_secret),
    }
}

/// Decodes `raw` as a list `L`, split into its metadata and items by `parts`, and writes each
/// item with `write`.
fn rebuild_items<L: Message + Default, I>(
    raw: Bytes,
    mut out: String,
    parts: impl FnOnce(L) -> (Option<ListMeta>, Vec<I>),
    write: fn(&mut String, &I) -> WrittenObject,
) -> Rebuilt {
    let len = raw.len();
    let Ok(list) = L::decode(raw) else { return Rebuilt::Unsure("not the list asked for") };
    if list.encoded_len() != len {
        return Rebuilt::Unsure("fields this client does not know");
    }
    let (meta, list) = parts(list);
    let (mut items, mut metas) = (Vec::with_capacity(list.len()), Vec::with_capacity(list.len()));
    for item in &list {
        let start = out.len();
        match write(&mut out, item) {
            Ok(meta) => metas.push(meta),
            Err(why) => return Rebuilt::Unsure(why),
        }
        items.push(start..out.len());
    }
    let meta = meta.unwrap_or_default();
    let metadata = kube::core::ListMeta {
        continue_: meta.continue_,
        remaining_item_count: meta.remaining_item_count,
        resource_version: meta.resource_version,
        self_link: meta.self_link,
    };
    Rebuilt::Page { body: out, items, metas, metadata }
}

/// Whether a response body is in protobuf.
pub fn is_protobuf(wire: &[u8]) -> bool {
    wire.starts_with(MAGIC)
}

/// Where an item's namespace, name and resourceVersion are in the page's body, without quotes.
#[derive(Debug, Clone, Default)]
pub struct ItemMeta {
    pub namespace: Option<std::ops::Range<usize>>,
    pub name: Option<std::ops::Range<usize>>,
    pub resource_version: Option<std::ops::Range<usize>>,
}

/// An error response in protobuf, as kube's [`kube::core::Status`]; `None` if `wire` is not one.
pub fn status(wire: &[u8]) -> Option<kube::core::Status> {
    let s = Status::decode(unwrap(wire)?).ok()?;
    let summary = match s.status.as_deref() {
        Some("Success") => Some(kube::core::response::StatusSummary::Success),
        Some("Failure") => Some(kube::core::response::StatusSummary::Failure),
        _ => None,
    };
    Some(kube::core::Status {
        status: summary,
        code: s.code.and_then(|c| u16::try_from(c).ok()).unwrap_or_default(),
        message: s.message.unwrap_or_default(),
        reason: s.reason.unwrap_or_default(),
        ..Default::default()
    })
}

/// The message a protobuf body wraps (`runtime.Unknown`'s `raw`), borrowed from it: the page's
/// bytes are not copied once more. `None` if `wire` is not a protobuf body.
pub fn unwrap(wire: &[u8]) -> Option<&[u8]> {
    let fields = delimited(wire.strip_prefix(MAGIC)?)?;
    fields.into_iter().rev().find(|(tag, _)| *tag == 2).map(|(_, raw)| raw)
}

/// The length-delimited fields of the message `buf` (strings, bytes, messages, each element of a
/// repeated one), by tag and in order, borrowed from it; the other fields are skipped. `None` if
/// it does not decode.
pub fn delimited(mut buf: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    use prost::encoding::{WireType, decode_key, decode_varint, skip_field};
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        if wire_type == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
            out.push((tag, buf.get(..len)?));
            buf = &buf[len..];
        } else {
            skip_field(wire_type, tag, &mut buf, Default::default()).ok()?;
        }
    }
    Some(out)
}

// The messages, as in k8s.io/api and k8s.io/apimachinery's generated.proto. Every field is
// optional and every map a list of entries, so that what gogo-protobuf writes (each field of a Go
// struct, empty or not, and each map entry's key and value) re-encodes to the same bytes. An
// object's strings are `Text`: slices of the page's buffer, not copies (checked as UTF-8 when
// written).

/// A string or bytes field, borrowed from the page's buffer.
type Text = Option<Bytes>;

#[derive(Clone, PartialEq, Message)]
struct ListMeta {
    #[prost(string, optional, tag = "1")]
    self_link: Option<String>,
    #[prost(string, optional, tag = "2")]
    resource_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    continue_: Option<String>,
    #[prost(int64, optional, tag = "4")]
    remaining_item_count: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct Time {
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    nanos: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct OwnerReference {
    #[prost(bytes = "bytes", optional, tag = "1")]
    kind: Text,
    #[prost(bytes = "bytes", optional, tag = "3")]
    name: Text,
    #[prost(bytes = "bytes", optional, tag = "4")]
    uid: Text,
    #[prost(bytes = "bytes", optional, tag = "5")]
    api_version: Text,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct FieldsV1 {
    #[prost(bytes = "bytes", optional, tag = "1")]
    raw: Text,
}

#[derive(Clone, PartialEq, Message)]
struct ManagedFieldsEntry {
    #[prost(bytes = "bytes", optional, tag = "1")]
    manager: Text,
    #[prost(bytes = "bytes", optional, tag = "2")]
    operation: Text,
    #[prost(bytes = "bytes", optional, tag = "3")]
    api_version: Text,
    #[prost(message, optional, tag = "4")]
    time: Option<Time>,
    #[prost(bytes = "bytes", optional, tag = "6")]
    fields_type: Text,
    #[prost(message, optional, tag = "7")]
    fields_v1: Option<FieldsV1>,
    #[prost(bytes = "bytes", optional, tag = "8")]
    subresource: Text,
}

#[derive(Clone, PartialEq, Message)]
struct StringEntry {
    #[prost(bytes = "bytes", optional, tag = "1")]
    key: Text,
    #[prost(bytes = "bytes", optional, tag = "2")]
    value: Text,
}

#[derive(Clone, PartialEq, Message)]
struct BytesEntry {
    #[prost(bytes = "bytes", optional, tag = "1")]
    key: Text,
    #[prost(bytes = "bytes", optional, tag = "2")]
    value: Text,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(bytes = "bytes", optional, tag = "1")]
    name: Text,
    #[prost(bytes = "bytes", optional, tag = "2")]
    generate_name: Text,
    #[prost(bytes = "bytes", optional, tag = "3")]
    namespace: Text,
    #[prost(bytes = "bytes", optional, tag = "4")]
    self_link: Text,
    #[prost(bytes = "bytes", optional, tag = "5")]
    uid: Text,
    #[prost(bytes = "bytes", optional, tag = "6")]
    resource_version: Text,
    #[prost(int64, optional, tag = "7")]
    generation: Option<i64>,
    #[prost(message, optional, tag = "8")]
    creation_timestamp: Option<Time>,
    #[prost(message, optional, tag = "9")]
    deletion_timestamp: Option<Time>,
    #[prost(int64, optional, tag = "10")]
    deletion_grace_period_seconds: Option<i64>,
    #[prost(message, repeated, tag = "11")]
    labels: Vec<StringEntry>,
    #[prost(message, repeated, tag = "12")]
    annotations: Vec<StringEntry>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
    #[prost(bytes = "bytes", repeated, tag = "14")]
    finalizers: Vec<Bytes>,
    /// Sent (empty) by servers before Kubernetes 1.25, in every object.
    #[prost(bytes = "bytes", optional, tag = "15")]
    cluster_name: Text,
    #[prost(message, repeated, tag = "17")]
    managed_fields: Vec<ManagedFieldsEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    data: Vec<StringEntry>,
    #[prost(message, repeated, tag = "3")]
    binary_data: Vec<BytesEntry>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMapList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    items: Vec<ConfigMap>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    data: Vec<BytesEntry>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    type_: Text,
    #[prost(message, repeated, tag = "4")]
    string_data: Vec<StringEntry>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct SecretList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    items: Vec<Secret>,
}

/// `metav1.Status`, as far as an error needs it.
#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(string, optional, tag = "2")]
    status: Option<String>,
    #[prost(string, optional, tag = "3")]
    message: Option<String>,
    #[prost(string, optional, tag = "4")]
    reason: Option<String>,
    #[prost(int32, optional, tag = "6")]
    code: Option<i32>,
}

type Written = Result<(), &'static str>;
/// An object written, with where its metadata is.
type WrittenObject = Result<ItemMeta, &'static str>;

/// Writes JSON objects' fields, each after a comma but the first.
struct Fields<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Fields<'o> {
    fn open(out: &'o mut String) -> Self {
        out.push('{');
        Fields { out, first: true }
    }

    fn name(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    /// A Go `string` field with `omitempty`.
    fn string(&mut self, name: &str, v: &Text) -> Written {
        match v.as_deref() {
            Some(s) if !s.is_empty() => string(self.name(name), s),
            _ => Ok(()),
        }
    }

    /// A Go `string` field with `omitempty` that JSON never escapes (a name, a namespace, a
    /// resourceVersion), and where its text is in `out` (`None` if empty, and left out).
    fn string_at(&mut self, name: &str, v: &Text) -> Result<Option<std::ops::Range<usize>>, &'static str> {
        let Some(s) = v.as_deref().filter(|s| !s.is_empty()) else { return Ok(None) };
        let out = self.name(name);
        let start = out.len() + 1;
        string(out, s)?;
        let end = out.len() - 1;
        match end - start == s.len() {
            true => Ok(Some(start..end)),
            false => Err("a name, namespace or resourceVersion JSON escapes, which none is"),
        }
    }

    /// A Go `string` field without `omitempty`.
    fn string_always(&mut self, name: &str, v: &Text) -> Written {
        string(self.name(name), v.as_deref().unwrap_or_default())
    }

    /// A Go `*bool` field with `omitempty`.
    fn bool(&mut self, name: &str, v: Option<bool>) {
        if let Some(b) = v {
            self.name(name).push_str(if b { "true" } else { "false" });
        }
    }

    /// A Go `map[string]string` field with `omitempty`.
    fn strings(&mut self, name: &str, entries: &[StringEntry]) -> Written {
        self.map(name, entries, |e| &e.key, |out, e| string(out, e.value.as_deref().unwrap_or_default()))
    }

    /// A Go `map[string][]byte` field with `omitempty`: each value in base64.
    fn bytes(&mut self, name: &str, entries: &[BytesEntry]) -> Written {
        self.map(
            name,
            entries,
            |e| &e.key,
            |out, e| {
                // gogo leaves a nil value out of its entry; Go writes a nil []byte as null.
                match e.value.as_deref() {
                    Some(v) => {
                        out.push('"');
                        base64::engine::general_purpose::STANDARD.encode_string(v, out);
                        out.push('"');
                    }
                    None => out.push_str("null"),
                }
                Ok(())
            },
        )
    }

    /// A Go slice field with `omitempty`, each element written by `each`.
    fn array<E>(&mut self, name: &str, items: &[E], each: impl Fn(&mut String, &E) -> Written) -> Written {
        if items.is_empty() {
            return Ok(());
        }
        let out = self.name(name);
        out.push('[');
        for (i, e) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            each(out, e)?;
        }
        out.push(']');
        Ok(())
    }

    /// A Go map field with `omitempty`, keyed by `key`, each value written by `value`.
    fn map<E>(
        &mut self,
        name: &str,
        entries: &[E],
        key: impl Fn(&E) -> &Text,
        value: impl Fn(&mut String, &E) -> Written,
    ) -> Written {
        if entries.is_empty() {
            return Ok(());
        }
        let mut map = Fields::open(self.name(name));
        in_key_order(entries, &key, |e| {
            let out = map.comma();
            string(out, key(e).as_deref().unwrap_or_default())?;
            out.push(':');
            value(out, e)
        })?;
        map.close();
        Ok(())
    }

    fn comma(&mut self) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// `each` of a map's entries in the order Go writes them, by key: as they come when sorted
/// already (gogo writes them so), else sorted.
fn in_key_order<E>(entries: &[E], key: impl Fn(&E) -> &Text, each: impl FnMut(&E) -> Written) -> Written {
    if entries.is_sorted_by(|a, b| key(a) <= key(b)) {
        return entries.iter().try_for_each(each);
    }
    let mut sorted: Vec<&E> = entries.iter().collect();
    sorted.sort_by(|a, b| key(a).cmp(key(b)));
    sorted.into_iter().try_for_each(each)
}

fn write_config_map(out: &mut String, cm: &ConfigMap) -> WrittenObject {
    let ConfigMap { metadata, data, binary_data, immutable } = cm;
    let mut f = Fields::open(out);
    let meta = object_meta(f.name("metadata"), metadata.as_ref())?;
    f.bool("immutable", *immutable);
    f.strings("data", data)?;
    f.bytes("binaryData", binary_data)?;
    f.close();
    Ok(meta)
}

fn write_secret(out: &mut String, s: &Secret) -> WrittenObject {
    let Secret { metadata, data, type_, string_data, immutable } = s;
    let mut f = Fields::open(out);
    let meta = object_meta(f.name("metadata"), metadata.as_ref())?;
    f.bool("immutable", *immutable);
    f.bytes("data", data)?;
    f.strings("stringData", string_data)?;
    f.string("type", type_)?;
    f.close();
    Ok(meta)
}

fn object_meta(out: &mut String, m: Option<&ObjectMeta>) -> WrittenObject {
    let empty = ObjectMeta::default();
    let ObjectMeta {
        name,
        generate_name,
        namespace,
        self_link,
        uid,
        resource_version,
        generation,
        creation_timestamp,
        deletion_timestamp,
        deletion_grace_period_seconds,
        labels,
        annotations,
        owner_references,
        finalizers,
        cluster_name,
        managed_fields,
    } = m.unwrap_or(&empty);
    let mut f = Fields::open(out);
    let name_at = f.string_at("name", name)?;
    f.string("generateName", generate_name)?;
    let namespace_at = f.string_at("namespace", namespace)?;
    f.string("selfLink", self_link)?;
    f.string("uid", uid)?;
    let resource_version_at = f.string_at("resourceVersion", resource_version)?;
    if let Some(g) = generation.filter(|g| *g != 0) {
        write!(f.name("generation"), "{g}").ok();
    }
    // A struct, not a pointer: written even when zero (see `time`).
    time(f.name("creationTimestamp"), creation_timestamp.as_ref())?;
    if let Some(t) = deletion_timestamp {
        time(f.name("deletionTimestamp"), Some(t))?;
    }
    if let Some(s) = deletion_grace_period_seconds {
        write!(f.name("deletionGracePeriodSeconds"), "{s}").ok();
    }
    f.strings("labels", labels)?;
    f.strings("annotations", annotations)?;
    f.array("ownerReferences", owner_references, |out, r| {
        let OwnerReference { kind, name, uid, api_version, controller, block_owner_deletion } = r;
        let mut o = Fields::open(out);
        o.string_always("apiVersion", api_version)?;
        o.string_always("kind", kind)?;
        o.string_always("name", name)?;
        o.string_always("uid", uid)?;
        o.bool("controller", *controller);
        o.bool("blockOwnerDeletion", *block_owner_deletion);
        o.close();
        Ok(())
    })?;
    f.array("finalizers", finalizers, |out, s| string(out, s))?;
    f.string("clusterName", cluster_name)?;
    f.array("managedFields", managed_fields, |out, e| {
        let ManagedFieldsEntry { manager, operation, api_version, time: at, fields_type, fields_v1, subresource } = e;
        let mut o = Fields::open(out);
        o.string("manager", manager)?;
        o.string("operation", operation)?;
        o.string("apiVersion", api_version)?;
        if let Some(t) = at {
            time(o.name("time"), Some(t))?;
        }
        o.string("fieldsType", fields_type)?;
        if let Some(FieldsV1 { raw }) = fields_v1 {
            fields(o.name("fieldsV1"), raw.as_deref().unwrap_or_default())?;
        }
        o.string("subresource", subresource)?;
        o.close();
        Ok(())
    })?;
    f.close();
    Ok(ItemMeta { namespace: namespace_at, name: name_at, resource_version: resource_version_at })
}

/// `metav1.Time` as JSON: RFC 3339 in UTC to the second. The zero time, which protobuf carries
/// as an empty message (the Unix epoch is seconds 0 and nanos 0, both written), is written as
/// `null` by servers before 1.34 and left out by later ones (`omitzero` on `creationTimestamp`):
/// [`Rebuilt::Unsure`]. Servers set every time they write themselves, so it is rare.
fn time(out: &mut String, t: Option<&Time>) -> Written {
    let Some(t) = t.filter(|t| t.seconds.is_some() || t.nanos.is_some()) else {
        return Err("a zero time, which servers write differently by release");
    };
    let seconds = t.seconds.unwrap_or_default();
    let Ok(ts) = jiff::Timestamp::from_second(seconds) else { return Err("a time out of range") };
    let year = ts.to_zoned(jiff::tz::TimeZone::UTC).year();
    if !(1000..=9999).contains(&year) {
        return Err("a time out of range");
    }
    write!(out, "\"{}\"", ts.strftime("%Y-%m-%dT%H:%M:%SZ")).ok();
    Ok(())
}

/// A `fieldsV1` as Go writes it: its bytes, which Go's encoder compacts and HTML-escapes. Only
/// bytes that stay the same through that are taken; anything else is [`Rebuilt::Unsure`].
fn fields(out: &mut String, raw: &[u8]) -> Written {
    let Ok(s) = std::str::from_utf8(raw) else { return Err("a fieldsV1 that is not UTF-8") };
    let changed_by_go = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}');
    if s.is_empty() || s.contains(changed_by_go) || serde_json::from_str::<serde::de::IgnoredAny>(s).is_err() {
        return Err("a fieldsV1 Go's encoder would change");
    }
    out.push_str(s);
    Ok(())
}

/// The bytes [`string`] must look at: control characters, `"`, `\\`, `<`, `>`, `&`, and the first
/// byte of U+2028 and U+2029 (0xE2).
const NOTED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xE2] = true;
    t
};

/// A JSON string as Go's `encoding/json` writes it, with HTML escaping (the default), from UTF-8
/// bytes ([`Rebuilt::Unsure`] if they are not: Go would write U+FFFD for each bad byte).
fn string(out: &mut String, raw: &[u8]) -> Written {
    let Ok(s) = std::str::from_utf8(raw) else { return Err("a string that is not UTF-8") };
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push('"');
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        let c = b[i];
        if !NOTED[c as usize] {
            i += 1;
            continue;
        }
        let escape = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            // Written `\u0008` and `\u000c` by Go before 1.22, `\b` and `\f` since.
            0x08 | 0x0c => return Err("a \\b or \\f, which Go writes differently by release"),
            0xE2 => match (b.get(i + 1), b.get(i + 2)) {
                (Some(0x80), Some(0xA8)) => "\\u2028",
                (Some(0x80), Some(0xA9)) => "\\u2029",
                _ => {
                    i += 1;
                    continue;
                }
            },
            _ => "",
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            write!(out, "\\u{c:04x}").ok();
        } else {
            out.push_str(escape);
        }
        i += if c == 0xE2 { 3 } else { 1 };
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(kind: &str, list: &impl Message) -> Vec<u8> {
        #[derive(Clone, PartialEq, Message)]
        struct TypeMeta {
            #[prost(string, optional, tag = "1")]
            api_version: Option<String>,
            #[prost(string, optional, tag = "2")]
            kind: Option<String>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Unknown {
            #[prost(message, optional, tag = "1")]
            type_meta: Option<TypeMeta>,
            #[prost(bytes = "vec", optional, tag = "2")]
            raw: Option<Vec<u8>>,
            #[prost(string, optional, tag = "3")]
            content_encoding: Option<String>,
            #[prost(string, optional, tag = "4")]
            content_type: Option<String>,
        }
        let u = Unknown {
            type_meta: Some(TypeMeta { api_version: Some("v1".into()), kind: Some(kind.into()) }),
            raw: Some(list.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC, &u.encode_to_vec()].concat()
    }

    fn s(v: &str) -> Text {
        Some(Bytes::from(v.to_string()))
    }

    fn rebuilt(kind: Kind, wire: Vec<u8>) -> Rebuilt {
        rebuild(kind, wire, String::new()).0
    }

    fn entry(k: &str, v: &str) -> StringEntry {
        StringEntry { key: s(k), value: s(v) }
    }

    /// The metadata every object of a server carries, as gogo writes it: each string, empty or not.
    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s("ns"),
            self_link: s(""),
            uid: s("4d6c2f0e-0000-4000-8000-000000000001"),
            resource_version: s("123"),
            generation: Some(0),
            creation_timestamp: Some(Time { seconds: Some(1_796_600_000), nanos: Some(0) }),
            cluster_name: s(""),
            ..Default::default()
        }
    }

    fn page(r: Rebuilt) -> (Vec<String>, kube::core::ListMeta) {
        match r {
            Rebuilt::Page { body, items, metas, metadata } => {
                // Each item's metadata is found where the item's JSON has it.
                for (item, m) in items.iter().zip(&metas) {
                    let v: serde_json::Value = serde_json::from_str(&body[item.clone()]).unwrap();
                    let at = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| body[r].to_string());
                    assert_eq!(at(&m.name).as_deref(), v["metadata"]["name"].as_str());
                    assert_eq!(at(&m.namespace).as_deref(), v["metadata"]["namespace"].as_str());
                    assert_eq!(at(&m.resource_version).as_deref(), v["metadata"]["resourceVersion"].as_str());
                }
                assert_eq!(metas.len(), items.len());
                (items.into_iter().map(|i| body[i].to_string()).collect(), metadata)
            }
            Rebuilt::Unsure(why) => panic!("not rebuilt: {why}"),
        }
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\n\r\t\u{1}\u{1f}<>&\u{2028}\u{2029}\u{7f}é😀/".as_bytes()).unwrap();
        // DEL (0x7f) and everything above it but U+2028 and U+2029 stay as they are.
        assert_eq!(out, concat!(r#""a\"b\\c\n\r\t\u0001\u001f\u003c\u003e\u0026\u2028\u2029"#, "\u{7f}é😀/\""));
        assert!(string(&mut String::new(), b"a\x08").is_err());
        assert!(string(&mut String::new(), b"\xff").is_err());
        let mut out = String::new();
        string(&mut out, "\u{e2}\u{2027}\u{202a}".as_bytes()).unwrap();
        assert_eq!(out, "\"\u{e2}\u{2027}\u{202a}\"", "only U+2028 and U+2029 of the 0xE2 sequences");
        assert!(string(&mut String::new(), b"a\x0c").is_err());
    }

    #[test]
    fn a_config_map_page_is_written_as_the_servers_json() {
        let mut m = meta("a");
        m.labels = vec![entry("z", "1"), entry("a", "<2>")];
        m.owner_references = vec![OwnerReference {
            kind: s("Deployment"),
            name: s("d"),
            uid: s("u"),
            api_version: s("apps/v1"),
            controller: Some(true),
            block_owner_deletion: None,
        }];
        m.finalizers = vec!["x/y".into()];
        m.deletion_timestamp = Some(Time { seconds: Some(1_796_600_001), nanos: Some(5) });
        m.deletion_grace_period_seconds = Some(0);
        m.managed_fields = vec![ManagedFieldsEntry {
            manager: s("kubectl"),
            operation: s("Update"),
            api_version: s("v1"),
            time: Some(Time { seconds: Some(1_796_600_000), nanos: Some(0) }),
            fields_type: s("FieldsV1"),
            fields_v1: Some(FieldsV1 { raw: Some(Bytes::from_static(br#"{"f:data":{".":{},"f:k":{}}}"#)) }),
            subresource: None,
        }];
        let list = ConfigMapList {
            metadata: Some(ListMeta {
                self_link: Some(String::new()),
                resource_version: Some("999".into()),
                continue_: Some("tok".into()),
                remaining_item_count: Some(7),
            }),
            items: vec![
                ConfigMap {
                    metadata: Some(m),
                    data: vec![entry("k", "v"), entry("b", "")],
                    binary_data: vec![BytesEntry { key: s("bin"), value: Some(Bytes::from_static(&[0, 255])) }],
                    immutable: Some(false),
                },
                ConfigMap { metadata: Some(meta("b")), ..Default::default() },
            ],
        };
        let (items, metadata) = page(rebuilt(Kind::ConfigMap, wrap("Unknown", &list)));
        assert_eq!(
            items[0],
            concat!(
                r#"{"metadata":{"name":"a","namespace":"ns","uid":"4d6c2f0e-0000-4000-8000-000000000001","#,
                r#""resourceVersion":"123","creationTimestamp":"2026-12-06T23:33:20Z","#,
                r#""deletionTimestamp":"2026-12-06T23:33:21Z","deletionGracePeriodSeconds":0,"#,
                r#""labels":{"a":"\u003c2\u003e","z":"1"},"#,
                r#""ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"d","uid":"u","controller":true}],"#,
                r#""finalizers":["x/y"],"managedFields":[{"manager":"kubectl","operation":"Update","apiVersion":"v1","#,
                r#""time":"2026-12-06T23:33:20Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"#,
                r#""immutable":false,"data":{"b":"","k":"v"},"binaryData":{"bin":"AP8="}}"#
            )
        );
        assert_eq!(
            items[1],
            concat!(
                r#"{"metadata":{"name":"b","namespace":"ns","uid":"4d6c2f0e-0000-4000-8000-000000000001","#,
                r#""resourceVersion":"123","creationTimestamp":"2026-12-06T23:33:20Z"}}"#
            )
        );
        assert_eq!(metadata.continue_.as_deref(), Some("tok"));
        assert_eq!(metadata.remaining_item_count, Some(7));
        assert_eq!(metadata.resource_version.as_deref(), Some("999"));
    }

    #[test]
    fn a_secret_page_is_written_as_the_servers_json() {
        let list = SecretList {
            metadata: Some(ListMeta::default()),
            items: vec![Secret {
                metadata: Some(meta("s")),
                data: vec![BytesEntry { key: s("p"), value: Some(Bytes::from_static(b"pw")) }],
                type_: s("Opaque"),
                string_data: vec![],
                immutable: Some(true),
            }],
        };
        let (items, _) = page(rebuilt(Kind::Secret, wrap("Unknown", &list)));
        assert_eq!(
            items[0],
            concat!(
                r#"{"metadata":{"name":"s","namespace":"ns","uid":"4d6c2f0e-0000-4000-8000-000000000001","#,
                r#""resourceVersion":"123","creationTimestamp":"2026-12-06T23:33:20Z"},"#,
                r#""immutable":true,"data":{"p":"cHc="},"type":"Opaque"}"#
            )
        );
    }

    #[test]
    fn a_page_with_a_field_these_messages_do_not_know_is_read_as_json() {
        #[derive(Clone, PartialEq, Message)]
        struct Newer {
            #[prost(message, optional, tag = "1")]
            metadata: Option<ObjectMeta>,
            #[prost(bytes = "bytes", optional, tag = "99")]
            added: Text,
        }
        #[derive(Clone, PartialEq, Message)]
        struct NewerList {
            #[prost(message, optional, tag = "1")]
            metadata: Option<ListMeta>,
            #[prost(message, repeated, tag = "2")]
            items: Vec<Newer>,
        }
        let known = NewerList { metadata: None, items: vec![Newer { metadata: Some(meta("a")), added: None }] };
        assert!(matches!(rebuilt(Kind::ConfigMap, wrap("Unknown", &known)), Rebuilt::Page { .. }));
        let newer = NewerList { metadata: None, items: vec![Newer { metadata: Some(meta("a")), added: s("") }] };
        assert!(matches!(
            rebuilt(Kind::ConfigMap, wrap("Unknown", &newer)),
            Rebuilt::Unsure("fields this client does not know")
        ));
    }

    #[test]
    fn pages_go_wrong_go_ways_are_read_as_json() {
        let with = |data: Vec<StringEntry>, fields_v1: &[u8]| {
            let mut m = meta("a");
            m.managed_fields = vec![ManagedFieldsEntry {
                fields_v1: Some(FieldsV1 { raw: Some(Bytes::copy_from_slice(fields_v1)) }),
                ..Default::default()
            }];
            let list = ConfigMapList {
                metadata: None,
                items: vec![ConfigMap { metadata: Some(m), data, ..Default::default() }],
            };
            rebuilt(Kind::ConfigMap, wrap("Unknown", &list))
        };
        assert!(matches!(with(vec![entry("k", "v")], b"{}"), Rebuilt::Page { .. }));
        assert!(matches!(with(vec![entry("k", "a\u{c}")], b"{}"), Rebuilt::Unsure(_)));
        assert!(matches!(with(vec![], b"{\"f:a\": {}}"), Rebuilt::Unsure(_)));
        assert!(matches!(with(vec![], b"{\"k:{\\\"a\\\":\\\"<\\\"}\":{}}"), Rebuilt::Unsure(_)));
        assert!(matches!(with(vec![], b"{"), Rebuilt::Unsure(_)));
        assert!(matches!(rebuilt(Kind::ConfigMap, b"{\"kind\":\"ConfigMapList\"}".to_vec()), Rebuilt::Unsure(_)));
    }

    #[test]
    fn the_epoch_is_a_time_and_a_zero_time_is_read_as_json() {
        let with = |t: Option<Time>| {
            let mut m = meta("a");
            m.creation_timestamp = t;
            let list =
                ConfigMapList { metadata: None, items: vec![ConfigMap { metadata: Some(m), ..Default::default() }] };
            rebuilt(Kind::ConfigMap, wrap("Unknown", &list))
        };
        let (items, _) = page(with(Some(Time { seconds: Some(0), nanos: Some(0) })));
        assert!(items[0].contains(r#""creationTimestamp":"1970-01-01T00:00:00Z""#), "{}", items[0]);
        for zero in [None, Some(Time::default())] {
            assert!(matches!(with(zero), Rebuilt::Unsure("a zero time, which servers write differently by release")));
        }
    }

    #[test]
    fn a_nil_bytes_value_is_null() {
        let list = SecretList {
            metadata: None,
            items: vec![Secret {
                metadata: Some(meta("s")),
                data: vec![
                    BytesEntry { key: s("nil"), value: None },
                    BytesEntry { key: s("e"), value: Some(Bytes::new()) },
                ],
                ..Default::default()
            }],
        };
        let (items, _) = page(rebuilt(Kind::Secret, wrap("Unknown", &list)));
        assert!(items[0].ends_with(r#""data":{"e":"","nil":null}}"#), "{}", items[0]);
    }

    #[test]
    fn an_error_in_protobuf_is_read_as_a_status() {
        let st = Status {
            status: Some("Failure".into()),
            message: Some("too old".into()),
            reason: Some("Expired".into()),
            code: Some(410),
        };
        let got = status(&wrap("Status", &st)).unwrap();
        assert_eq!((got.code, got.reason.as_str(), got.message.as_str()), (410, "Expired", "too old"));
        assert!(status(b"{\"kind\":\"Status\"}").is_none());
    }
}
