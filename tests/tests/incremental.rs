//! Scale and incremental storage (issue 16) on the real control plane: the contents file beside
//! a plain backup (format 2), a format-1 backup still restoring, incremental backups that store only
//! what changed, a workspace's history and `restore --at`, damaged packs refused before any write,
//! packs reclaimed when the last backup using them is deleted, and a chain of deltas ending at 32.

use std::path::{Path, PathBuf};

use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{
    Tools, namespace, small_configmaps, unique, user_role, wait_crd, widget, widget_crd,
};
use serde_json::Value;

fn setup(name: &str) -> (Tools, PathBuf) {
    let env = SharedEnv::load().expect("shared environment");
    let mut t = Tools::new(&env.cluster);
    let dir = env.scratch.join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    t.location = Some(format!("file://{}", dir.display()));
    (t, dir)
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A namespace of `objects` ConfigMaps and a location of its own.
fn workspace(name: &str, objects: usize) -> (Tools, PathBuf, String) {
    let (t, dir) = setup(name);
    let ns = unique("ws");
    t.apply(&namespace(&ns)).ok();
    t.create(&small_configmaps(&ns, objects)).ok();
    (t, dir, ns)
}

/// `kubectl backup create NAME --incremental` of the namespace `ns`, as JSON.
fn create_incremental(t: &Tools, ns: &str, name: &str) -> Value {
    t.backup(&["create", name, "--incremental", "--include-namespaces", ns, "-o", "json"]).ok().json()
}

/// A committed backup's `metadata.json` in a `file://` location.
fn metadata(dir: &Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("backups/{name}/metadata.json"))).unwrap()).unwrap()
}

fn value(t: &Tools, ns: &str, cm: &str) -> String {
    t.get_json(&["configmap", cm, "-n", ns])["data"]["i"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_plain_backup_streams_its_contents_beside_the_archive_and_format_1_still_restores() {
    let (t, dir) = setup("contents");
    let ns = unique("plain");
    t.apply(&namespace(&ns)).ok();
    t.create(&small_configmaps(&ns, 40)).ok();
    let b = t.backup(&["create", &format!("{ns}-b"), "--include-namespaces", &ns, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "Completed");
    let bdir = dir.join(format!("backups/{ns}-b"));
    let meta: Value = serde_json::from_slice(&std::fs::read(bdir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["formatVersion"], 2);
    assert!(meta.get("objects").is_none(), "format 2 keeps the digests out of metadata.json");
    let contents = meta["contents"]["file"]["key"].as_str().unwrap().to_string();
    assert!(contents.starts_with("contents-") && contents.ends_with(".jsonl.zst"), "{contents}");
    let entries = meta["contents"]["entries"].as_u64().unwrap();
    assert_eq!(entries, b["status"]["progress"]["itemsBackedUp"].as_u64().unwrap());
    assert!(files(&bdir).contains(&contents), "{:?}", files(&bdir));
    // The contents file is zstd JSON lines, one per archive entry, in archive order.
    let out = std::process::Command::new("zstd").args(["-dc"]).arg(bdir.join(&contents)).output().unwrap();
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, entries);
    assert!(lines.iter().all(|l| l["sha256"].as_str().unwrap().len() == 64));

    // A damaged contents file is refused before anything is written.
    let good = std::fs::read(bdir.join(&contents)).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(bdir.join(&contents), &bad).unwrap();
    t.delete_namespace(&ns);
    let r = t.backup(&["restore", &format!("{ns}-b")]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!("{contents} has SHA-256")) && r.stderr.contains("the metadata says"),
        "{}",
        r.stderr
    );
    assert_eq!(t.kubectl(&["get", "namespace", &ns]).code, 1, "a refused restore created the namespace");
    std::fs::write(bdir.join(&contents), &good).unwrap();

    // Format 1 (the digests in metadata.json, no contents file) still restores: the same backup
    // rewritten the way the previous format stored it.
    let old = format!("{ns}-v1");
    let odir = dir.join(format!("backups/{old}"));
    std::fs::create_dir_all(&odir).unwrap();
    let archive = meta["backup"]["status"]["archive"]["key"].as_str().unwrap();
    std::fs::copy(bdir.join(archive), odir.join(archive)).unwrap();
    let mut v1 = meta.clone();
    v1["formatVersion"] = 1.into();
    v1.as_object_mut().unwrap().remove("contents");
    v1["backup"]["metadata"]["name"] = old.clone().into();
    v1["objects"] = lines.iter().map(|l| (l["path"].as_str().unwrap().to_string(), l["sha256"].clone())).collect();
    std::fs::write(odir.join("metadata.json"), serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
    let listed = t.backup(&["list", "-o", "json"]).ok().json();
    assert!(listed["items"].as_array().unwrap().iter().any(|b| b["metadata"]["name"] == old.as_str()));
    let r = t.backup(&["restore", &old, "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    assert_eq!(value(&t, &ns, "cm-00007"), "7");
    // Its digests are checked as before: one wrong digest and it is refused by name.
    t.delete_namespace(&ns);
    let first = lines[0]["path"].as_str().unwrap();
    v1["objects"][first] = "0".repeat(64).into();
    std::fs::write(odir.join("metadata.json"), serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
    let r = t.backup(&["restore", &old]);
    assert!(r.stderr.contains(&format!("entry {first:?} is corrupt")), "{}", r.stderr);
    assert_eq!(t.kubectl(&["get", "namespace", &ns]).code, 1);
}

#[test]
fn incremental_backups_store_only_what_changed_and_restore_any_point_in_time() {
    let (t, dir, ns) = workspace("incr", 60);
    let create = |name: &str| create_incremental(&t, &ns, name);
    let first = create(&format!("{ns}-1"));
    let inc = &first["status"]["incremental"];
    assert_eq!(first["status"]["phase"], "Completed", "{first}");
    assert!(first["status"].get("archive").is_none());
    let items = first["status"]["progress"]["itemsBackedUp"].as_u64().unwrap();
    assert!(items >= 61, "{first}");
    assert!(inc["objectsStored"].as_u64().unwrap() > items, "bodies and contents chunks: {inc}");
    assert!(inc["packsWritten"].as_u64().unwrap() >= 1, "{inc}");
    let first_bytes = inc["bytesUploaded"].as_u64().unwrap();

    // Nothing changed: nothing stored, only the metadata document uploaded.
    let second = create(&format!("{ns}-2"));
    let inc = &second["status"]["incremental"];
    assert_eq!((inc["objectsStored"].as_u64(), inc["packsWritten"].as_u64()), (Some(0), Some(0)), "{inc}");
    assert_eq!(
        inc["objectsReused"].as_u64().unwrap(),
        first["status"]["incremental"]["objectsStored"].as_u64().unwrap()
    );
    let second_bytes = inc["bytesUploaded"].as_u64().unwrap();
    assert!(second_bytes * 4 < first_bytes, "an unchanged backup uploaded {second_bytes} of {first_bytes} bytes");
    let at_second = second["metadata"]["creationTimestamp"].as_str().unwrap().to_string();

    // One object changed: its body and the one contents chunk holding it are stored.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.kubectl(&["patch", "configmap", "cm-00005", "-n", &ns, "--type=merge", "-p", r#"{"data":{"i":"changed"}}"#]).ok();
    let third = create(&format!("{ns}-3"));
    let stored = third["status"]["incremental"]["objectsStored"].as_u64().unwrap();
    assert!((1..=3).contains(&stored), "one change stored {stored} blobs: {}", third["status"]["incremental"]);

    // It stored the change, not a new list of every object: one delta after the second's chunks.
    let meta = |name: &str| metadata(&dir, name);
    let (m2, m3) = (meta(&format!("{ns}-2")), meta(&format!("{ns}-3")));
    assert!(m2["contents"]["list"].is_string(), "{}", m2["contents"]);
    assert_eq!(m3["contents"]["list"], m2["contents"]["list"]);
    assert_eq!(m3["contents"]["deltas"].as_array().map(Vec::len), Some(1), "{}", m3["contents"]);
    let log = t.backup(&["logs", &format!("{ns}-3")]).ok().stdout;
    assert!(log.contains(&format!("storing the contents as changes since backup {ns}-2")), "{log}");

    // The history, newest first.
    let h = t.backup(&["workspace", "history", &ns, "-o", "json"]).ok().json();
    let names: Vec<&str> =
        h["items"].as_array().unwrap().iter().map(|b| b["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("{ns}-3"), format!("{ns}-2"), format!("{ns}-1")]);
    let table = t.backup(&["workspace", "history", &ns]).ok().stdout;
    assert!(table.contains("0 new,"), "{table}");

    // Download gives the archive a plain backup would have, built from the packs.
    let archive = dir.join("third.tar.zst");
    t.backup(&["download", &format!("{ns}-3"), "-f", archive.to_str().unwrap()]).ok();
    let entries = kubectl_backup_e2e::fixtures::tar_entries(&archive);
    assert_eq!(entries.len() as u64, third["status"]["progress"]["itemsBackedUp"].as_u64().unwrap());
    assert!(entries.contains(&format!("resources/configmaps/namespaces/{ns}/cm-00005.json")), "{entries:?}");

    // Restore the newest, then the workspace as it was at the second backup.
    t.delete_namespace(&ns);
    let r = t.backup(&["restore", &format!("{ns}-3"), "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    assert_eq!(value(&t, &ns, "cm-00005"), "changed");
    assert_eq!(value(&t, &ns, "cm-00059"), "59");
    let r = t.backup(&["restore", &ns, "--at", &at_second, "--existing", "update", "-o", "json"]).ok();
    assert!(r.stderr.contains(&format!("from backup \"{ns}-2\"")), "{}", r.stderr);
    assert_eq!(value(&t, &ns, "cm-00005"), "5");
    let err = t.backup(&["restore", &ns, "--at", "2001-01-01T00:00Z"]);
    assert!(
        err.stderr.contains(&format!("no backup of workspace \"{ns}\" was taken at or before 2001-01-01T00:00:00Z")),
        "{}",
        err.stderr
    );
    let err = t.backup(&["restore", &ns, "--at", "yesterday"]);
    assert!(err.stderr.contains("invalid --at \"yesterday\""), "{}", err.stderr);

    // An object removed and one added (and every other one changed: the restores above made
    // them anew): a second delta. Backups continue the chain while it is short and small.
    t.kubectl(&["delete", "configmap", "cm-00010", "-n", &ns]).ok();
    t.create(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: added\n  namespace: {ns}\ndata:\n  i: new\n"
    ))
    .ok();
    let fourth = create(&format!("{ns}-4"));
    assert_eq!(fourth["status"]["progress"]["itemsBackedUp"], third["status"]["progress"]["itemsBackedUp"]);
    assert_eq!(meta(&format!("{ns}-4"))["contents"]["deltas"].as_array().map(Vec::len), Some(2));
    // Its changes were more than a quarter of the objects: the next backup lists every object
    // again, in chunks (the unchanged ones stored already).
    for i in 20..40 {
        let patch = format!(r#"{{"data":{{"i":"v2-{i}"}}}}"#);
        t.kubectl(&["patch", "configmap", &format!("cm-{i:05}"), "-n", &ns, "--type=merge", "-p", &patch]).ok();
    }
    let fifth = create(&format!("{ns}-5"));
    let m5 = meta(&format!("{ns}-5"));
    assert!(m5["contents"].get("deltas").is_none(), "a chain of many changes is not continued: {}", m5["contents"]);
    assert!(m5["contents"]["list"].is_string() && m5["contents"]["list"] != m2["contents"]["list"]);
    assert!(fifth["status"]["incremental"]["objectsReused"].as_u64().unwrap() >= items - 20, "{}", fifth["status"]);
    t.kubectl(&["delete", "configmap", "cm-00011", "-n", &ns]).ok();
    create(&format!("{ns}-6"));
    let m6 = meta(&format!("{ns}-6"));
    assert_eq!(m6["contents"]["list"], m5["contents"]["list"]);
    assert_eq!(m6["contents"]["deltas"].as_array().map(Vec::len), Some(1), "{}", m6["contents"]);
    // The first backups, whose chunks the later ones continue, can go: what they use stays.
    t.backup(&["delete", &format!("{ns}-1"), "--yes"]).ok();
    for (backup, cm11, cm25) in [("4", Some("11"), "25"), ("5", Some("11"), "v2-25"), ("6", None, "v2-25")] {
        t.delete_namespace(&ns);
        let r = t.backup(&["restore", &format!("{ns}-{backup}"), "-o", "json"]).ok().json();
        assert_eq!(r["status"]["phase"], "Completed", "{r}");
        let get = |cm: &str| {
            let out = t.kubectl(&["get", "configmap", cm, "-n", &ns, "-o", "jsonpath={.data.i}"]);
            (out.code == 0).then(|| out.stdout.trim().to_string())
        };
        assert_eq!(get("cm-00010"), None, "backup {backup}");
        assert_eq!(get("cm-00011").as_deref(), cm11, "backup {backup}");
        assert_eq!(get("added").as_deref(), Some("new"), "backup {backup}");
        assert_eq!(value(&t, &ns, "cm-00025"), cm25, "backup {backup}");
        assert_eq!(value(&t, &ns, "cm-00005"), "5", "backup {backup}: as restored --at the second");
    }
    t.delete_namespace(&ns);
    let r = t.backup(&["restore", &format!("{ns}-3"), "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    assert_eq!((value(&t, &ns, "cm-00010"), value(&t, &ns, "cm-00005")), ("10".into(), "changed".into()));

    // A damaged pack: refused before the first write, naming the pack.
    let packs = dir.join("packs");
    let third_packs = meta(&format!("{ns}-3"))["packs"].as_array().unwrap().clone();
    let data_pack = third_packs.iter().map(|p| p.as_str().unwrap()).find(|p| !p.contains("-c")).unwrap();
    let pack = format!("{data_pack}.tar.zst");
    let good = std::fs::read(packs.join(&pack)).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 10;
    bad[last] ^= 1;
    std::fs::write(packs.join(&pack), &bad).unwrap();
    t.delete_namespace(&ns);
    let r = t.backup(&["restore", &format!("{ns}-3")]);
    let id = pack.trim_end_matches(".tar.zst");
    assert!(r.stderr.contains(&format!("{id} has SHA-256")), "{}", r.stderr);
    assert_eq!(t.kubectl(&["get", "namespace", &ns]).code, 1, "a refused restore created the namespace");
    std::fs::write(packs.join(&pack), &good).unwrap();

    // Deleting backups keeps every pack another backup uses; the last delete reclaims them all.
    for n in 2..=5 {
        t.backup(&["delete", &format!("{ns}-{n}"), "--yes"]).ok();
        let left = files(&packs);
        for m in n + 1..=6 {
            for id in meta(&format!("{ns}-{m}"))["packs"].as_array().unwrap() {
                let file = format!("{}.tar.zst", id.as_str().unwrap());
                assert!(left.contains(&file), "deleting backup {n} removed pack {file}, which backup {m} uses");
            }
        }
    }
    let out = t.backup(&["delete", &format!("{ns}-6"), "--yes"]).ok().stdout;
    assert!(out.contains("pack(s) no backup uses any more"), "{out}");
    assert!(files(&packs).is_empty(), "{:?}", files(&packs));
    assert!(files(&dir.join("leases")).is_empty(), "{:?}", files(&dir.join("leases")));
}

#[test]
fn a_chain_ends_at_32_deltas_and_the_next_backup_lists_every_object_again() {
    // Enough objects that 32 one-line deltas stay under a quarter of them.
    let (t, dir, ns) = workspace("chain", 150);
    let create = |name: &str| create_incremental(&t, &ns, name);
    let meta = |name: &str| metadata(&dir, name);
    let change = |cm: usize, value: &str| {
        let patch = format!(r#"{{"data":{{"i":"{value}"}}}}"#);
        t.kubectl(&["patch", "configmap", &format!("cm-{cm:05}"), "-n", &ns, "--type=merge", "-p", &patch]).ok();
    };
    create(&format!("{ns}-0"));
    let list = meta(&format!("{ns}-0"))["contents"]["list"].clone();
    assert!(list.is_string(), "{list}");
    for n in 1..=32 {
        change(n, &format!("c{n}"));
        create(&format!("{ns}-{n}"));
        let m = meta(&format!("{ns}-{n}"));
        assert_eq!(m["contents"]["list"], list, "backup {n} continues the chain");
        assert_eq!(m["contents"]["deltas"].as_array().map(Vec::len), Some(n), "{}", m["contents"]);
    }
    // The chain is full: the next backup lists every object again, in chunks, and says so by
    // not continuing.
    change(100, "c100");
    create(&format!("{ns}-33"));
    let m33 = meta(&format!("{ns}-33"));
    assert!(m33["contents"].get("deltas").is_none(), "a chain of 32 deltas was continued: {}", m33["contents"]);
    assert!(m33["contents"]["list"].is_string() && m33["contents"]["list"] != list, "{}", m33["contents"]);
    let log = t.backup(&["logs", &format!("{ns}-33")]).ok().stdout;
    assert!(!log.contains("storing the contents as changes"), "{log}");
    // A new chain starts from it.
    change(101, "c101");
    create(&format!("{ns}-34"));
    let m34 = meta(&format!("{ns}-34"));
    assert_eq!(m34["contents"]["list"], m33["contents"]["list"]);
    assert_eq!(m34["contents"]["deltas"].as_array().map(Vec::len), Some(1), "{}", m34["contents"]);
    let log = t.backup(&["logs", &format!("{ns}-34")]).ok().stdout;
    assert!(log.contains(&format!("storing the contents as changes since backup {ns}-33")), "{log}");
    // The last backup of the full chain restores exactly what it saw: all 32 deltas applied.
    t.delete_namespace(&ns);
    let r = t.backup(&["restore", &format!("{ns}-32"), "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    for (cm, want) in [(1, "c1"), (17, "c17"), (32, "c32"), (33, "33"), (100, "100"), (149, "149")] {
        assert_eq!(value(&t, &ns, &format!("cm-{cm:05}")), want, "cm-{cm:05}");
    }
}

#[test]
fn a_continuing_backup_reads_only_the_objects_whose_resource_version_moved() {
    let (t, dir, ns) = workspace("versions", 40);
    let create = |name: &str| create_incremental(&t, &ns, name);
    let not_read = |b: &Value| b["status"]["incremental"]["objectsNotRead"].as_u64().unwrap();
    let items = |b: &Value| b["status"]["progress"]["itemsBackedUp"].as_u64().unwrap();
    let first = create(&format!("{ns}-1"));
    assert_eq!(not_read(&first), 0, "a first backup reads every object: {}", first["status"]);
    // The apiVersions recorded are those of the types the backup holds objects of, not of every
    // type listed (about 1 kB of metadata.json per backup, for nothing a later one looks up). The
    // Namespace is read to plan the backup, not listed as a type: it has no version recorded.
    let m1 = metadata(&dir, &format!("{ns}-1"));
    let recorded: Vec<&String> = m1["contents"]["versions"].as_object().unwrap().keys().collect();
    let held: Vec<&String> =
        first["status"]["resources"].as_object().unwrap().keys().filter(|k| *k != "namespaces").collect();
    assert_eq!(recorded, held, "{}", m1["contents"]);
    assert_eq!(m1["contents"]["versions"]["configmaps"], "v1", "{}", m1["contents"]);

    // Nothing changed: every object but the Namespace (read to plan the backup) is left unread.
    let second = create(&format!("{ns}-2"));
    assert_eq!(second["status"]["phase"], "Completed", "{second}");
    assert_eq!(items(&second), items(&first));
    assert!(not_read(&second) >= 40 && not_read(&second) < items(&second), "{}", second["status"]);
    assert_eq!(second["status"]["incremental"]["objectsStored"], 0, "{}", second["status"]);

    // One object changed, one deleted, one added: exactly the two that moved are read again.
    t.kubectl(&["patch", "configmap", "cm-00003", "-n", &ns, "--type=merge", "-p", r#"{"data":{"i":"changed"}}"#]).ok();
    t.kubectl(&["delete", "configmap", "cm-00004", "-n", &ns]).ok();
    t.create(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: added\n  namespace: {ns}\ndata:\n  i: new\n"
    ))
    .ok();
    let third = create(&format!("{ns}-3"));
    assert_eq!(third["status"]["phase"], "Completed", "{third}");
    assert_eq!(not_read(&third), not_read(&second) - 2, "{}", third["status"]);
    assert_eq!(items(&third), items(&second));

    // A backup whose predecessor was read from another API server version reads everything
    // (an upgraded server may serialize an unchanged object differently).
    let m3 = dir.join(format!("backups/{ns}-3/metadata.json"));
    let mut doc = metadata(&dir, &format!("{ns}-3"));
    doc["backup"]["status"]["sourceCluster"]["version"] = "v1.0.0-elsewhere".into();
    std::fs::write(&m3, serde_json::to_vec(&doc).unwrap()).unwrap();
    let fourth = create(&format!("{ns}-4"));
    assert_eq!(not_read(&fourth), 0, "{}", fourth["status"]);
    // It still continued the chain, adding no delta: what it read had not changed.
    let m4 = metadata(&dir, &format!("{ns}-4"));
    assert_eq!(m4["contents"]["deltas"].as_array().map(Vec::len), Some(1), "{}", m4["contents"]);
    assert_eq!(m4["contents"]["deltas"], doc["contents"]["deltas"]);

    // Many changed (more than are worth a GET each): the resource is listed again for them.
    for i in 10..30 {
        let patch = format!(r#"{{"data":{{"i":"v2-{i}"}}}}"#);
        t.kubectl(&["patch", "configmap", &format!("cm-{i:05}"), "-n", &ns, "--type=merge", "-p", &patch]).ok();
    }
    let fifth = create(&format!("{ns}-5"));
    assert_eq!(fifth["status"]["phase"], "Completed", "{fifth}");
    assert_eq!(not_read(&fifth), not_read(&second) - 20, "{}", fifth["status"]);

    // What was left unread restores as it was stored; what moved, as it is now.
    for backup in [3, 5] {
        t.delete_namespace(&ns);
        let r = t.backup(&["restore", &format!("{ns}-{backup}"), "-o", "json"]).ok().json();
        assert_eq!(r["status"]["phase"], "Completed", "{r}");
        let out = t.kubectl(&["get", "configmap", "cm-00004", "-n", &ns]);
        assert_eq!(out.code, 1, "backup {backup} restored the deleted ConfigMap");
        assert_eq!(value(&t, &ns, "cm-00003"), "changed", "backup {backup}");
        assert_eq!(value(&t, &ns, "added"), "new", "backup {backup}");
        assert_eq!(value(&t, &ns, "cm-00039"), "39", "backup {backup}");
        let want = if backup == 5 { "v2-15" } else { "15" };
        assert_eq!(value(&t, &ns, "cm-00015"), want, "backup {backup}");
    }
}

/// A custom resource's preferred version changes (its CRD serves v2 beside v1) while no object
/// does: the next incremental backup lists the type at v2, and so reads every object of it again
/// rather than referencing the v1 bodies (their resourceVersions did not move); the ConfigMaps,
/// listed at v1 both times, stay unread. What it stores is what a plain backup would:
/// `apiVersion: <group>/v2`.
#[test]
fn a_new_preferred_version_of_a_type_reads_its_objects_again() {
    let (t, dir, ns) = workspace("crdver", 20);
    let group = format!("{}.example.org", unique("v"));
    t.apply(&widget_crd(&group)).ok();
    wait_crd(&t, &format!("widgets.{group}"));
    for w in ["w1", "w2"] {
        t.create(&widget(&group, &ns, w)).ok();
    }
    let key = format!("widgets.{group}");
    let resources = format!("configmaps,{key}");
    let create = |name: &str| {
        let args = ["create", name, "--incremental", "--include-namespaces", &ns, "--include-resources", &resources];
        t.backup(&[&args[..], &["-o", "json"]].concat()).ok().json()
    };
    let first = create(&format!("{ns}-1"));
    assert_eq!(first["status"]["resources"][&key], 2, "{}", first["status"]);
    let configmaps = first["status"]["resources"]["configmaps"].as_u64().unwrap();
    assert_eq!(metadata(&dir, &format!("{ns}-1"))["contents"]["versions"][&key], format!("{group}/v1"));

    // v2 is served too, and preferred (the higher version); v1 stays the storage version.
    let v2 = widget_crd(&group).replace("  versions:\n", "  versions:\n  - name: v2\n    served: true\n    storage: false\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n");
    t.apply(&v2).ok();
    kubectl_backup_e2e::fixtures::eventually("v2 served", std::time::Duration::from_secs(60), || {
        t.kubectl(&["get", &format!("widgets.v2.{group}"), "-n", &ns]).code == 0
    });
    let second = create(&format!("{ns}-2"));
    assert_eq!(second["status"]["phase"], "Completed", "{second}");
    assert_eq!(second["status"]["incremental"]["objectsNotRead"], configmaps, "{}", second["status"]);
    let m2 = metadata(&dir, &format!("{ns}-2"));
    assert_eq!(m2["contents"]["versions"][&key], format!("{group}/v2"), "{}", m2["contents"]);
    let archive = dir.join("second.tar.zst");
    t.backup(&["download", &format!("{ns}-2"), "-f", archive.to_str().unwrap()]).ok();
    let entry = format!("resources/{key}/namespaces/{ns}/w1.json");
    let out = std::process::Command::new("tar").arg("--zstd").arg("-xOf").arg(&archive).arg(&entry).output().unwrap();
    assert!(out.status.success(), "{entry}: {}", String::from_utf8_lossy(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["apiVersion"], format!("{group}/v2"), "{body}");

    // Listed at v2 again: now nothing moved, and nothing is read.
    let third = create(&format!("{ns}-3"));
    assert_eq!(third["status"]["incremental"]["objectsNotRead"], configmaps + 2, "{}", third["status"]);
    t.kubectl(&["delete", "crd", &key]).ok();
    t.delete_namespace(&ns);
}

#[test]
fn a_reader_who_may_list_but_not_get_still_backs_up_what_moved() {
    let env = SharedEnv::load().expect("shared environment");
    let (t, _dir, ns) = workspace("listonly", 20);
    // alice may list ConfigMaps in the namespace (which shows their contents) but not get one.
    t.apply(&user_role(&ns, "alice", "cm-lister", &["configmaps"], &["list"])).ok();
    let alice = t.as_user(&env.cluster.user("alice").kubeconfig);
    let create = |name: &str| {
        let args = ["create", name, "--incremental", "-n", &ns, "--include-resources", "configmaps", "-o", "json"];
        alice.backup(&args).json()
    };
    let first = create(&format!("{ns}-1"));
    assert_eq!(first["status"]["resources"]["configmaps"], 21, "{first}");
    let (name, got) = ("cm-00007", t.kubectl(&["get", "configmap", "cm-00007", "-n", &ns, "--as", "alice"]));
    assert!(got.stderr.contains("forbidden"), "alice may get {name}: {}", got.stderr);
    t.kubectl(&["patch", "configmap", name, "-n", &ns, "--type=merge", "-p", r#"{"data":{"i":"changed"}}"#]).ok();
    // The changed object's GET is refused: the ConfigMaps are listed again for it.
    let second = create(&format!("{ns}-2"));
    assert_eq!(second["status"]["resources"]["configmaps"], 21, "{second}");
    assert_eq!(second["status"]["incremental"]["objectsNotRead"], 20, "{}", second["status"]);
    assert!(second["status"]["errors"].as_array().is_none_or(|e| e.is_empty()), "{}", second["status"]);
    t.delete_namespace(&ns);
    let r = t.backup(&["restore", &format!("{ns}-2"), "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    assert_eq!(value(&t, &ns, name), "changed");
    assert_eq!(value(&t, &ns, "cm-00008"), "8");
}

/// An incremental run asks the location (its lease, the packs, the previous backup) and the
/// cluster (discovery, the plan) side by side. When the cluster side refuses the run, the lease
/// written meanwhile is removed: nothing of the run is left in the location, and the same name
/// then backs up.
#[test]
fn a_run_refused_after_its_lease_was_written_leaves_no_lease_behind() {
    let (t, dir, ns) = workspace("lease-refused", 3);
    create_incremental(&t, &ns, "first");
    let r = t.backup(&[
        "create",
        "second",
        "--incremental",
        "--include-namespaces",
        &ns,
        "--include-resources",
        "nosuchwidgets",
    ]);
    assert_ne!(r.code, 0, "a backup of a resource type the server does not serve succeeded");
    assert!(
        r.stderr.contains("--include-resources") && r.stderr.contains("nosuchwidgets"),
        "the error does not name the flag and the value: {}",
        r.stderr
    );
    // The run's lease is written before the plan is refused (the location side does not wait for
    // the cluster side); it must be gone, and so must any trace of the run.
    assert_eq!(files(&dir.join("leases")), Vec::<String>::new(), "a refused run left its lease");
    assert!(!dir.join("backups/second").exists(), "a refused run left files under its name");
    let again = create_incremental(&t, &ns, "second");
    assert_eq!(again["status"]["phase"], "Completed");
    assert_eq!(again["status"]["incremental"]["objectsNotRead"].as_u64().map(|n| n >= 3), Some(true), "{again}");
    assert_eq!(files(&dir.join("leases")), Vec::<String>::new(), "a committed run left its lease");
}
