//! The keys and keys-json formats: round trips, names other tools read, tampering refused.

use super::*;
use proptest::prelude::*;

fn header() -> Header {
    Header { revision: 77, cluster_id: "c1".into(), member_id: "m1".into(), prefix: Some("/p/".into()) }
}

fn write(kind: EtcdBackupType, entries: &[Entry]) -> Vec<u8> {
    let mut w = KeysWriter::new(kind, Vec::new(), &header(), Timestamp::now()).unwrap();
    for (i, e) in entries.iter().enumerate() {
        let i = i as i64;
        w.add(&e.key, &e.value, KeyMeta { create_revision: i + 1, mod_revision: i + 2, version: 1, lease: 0 }).unwrap();
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
