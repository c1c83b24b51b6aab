//! The garbage-collection protocol of incremental storage (core/src/packs.rs), run step by step
//! against a real object store (a local directory through object_store, as `file://` locations
//! are): a collection racing a backup that is about to reference a pack never removes that pack.

use std::collections::BTreeSet;

use kubectl_backup_core::catalog::{self, Objects};
use kubectl_backup_core::committed;
use kubectl_backup_core::model::{
    Backup, BackupMetadata, BackupSpec, ContentsRef, FORMAT_VERSION, IncrementalStatus, Phase,
};
use kubectl_backup_core::packs::{self, Known, Lease, Stash};
use kubectl_backup_core::store::{Store, StoreOptions};
use tokio::sync::mpsc;

fn store(dir: &std::path::Path) -> Store {
    Store::open_url(&format!("file://{}", dir.display()), &StoreOptions::default()).unwrap()
}

/// Stores `bodies` as a backup run would (under `lease`, which must have been taken before the
/// packs were loaded into `known`), returning the packs the bodies are in.
async fn stash(store: &Store, known: Known, run: &str, bodies: &[&[u8]]) -> Vec<String> {
    let (tx, rx) = mpsc::channel(1);
    let owned: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_vec()).collect();
    let run = run.to_string();
    let writer = tokio::task::spawn_blocking(move || {
        let mut s = Stash::new(known, &run, None, 0, tx);
        for b in &owned {
            s.put(&kubectl_backup_core::archive::sha256_hex(b), b).unwrap();
        }
        s.finish().unwrap().0
    });
    packs::upload_packs(store, rx).await.unwrap();
    writer.await.unwrap()
}

/// Commits a backup document that references `packs` (what `backup::run` commits).
async fn commit(store: &Store, name: &str, packs: Vec<String>) {
    let mut backup = Backup::new(name, BackupSpec { incremental: true, ..Default::default() });
    backup.metadata.creation_timestamp = Some(jiff::Timestamp::now());
    backup.status.phase = Phase::Completed;
    backup.status.incremental = Some(IncrementalStatus::default());
    let meta = BackupMetadata {
        format_version: FORMAT_VERSION,
        backup,
        objects: Default::default(),
        contents: Some(ContentsRef { entries: 1, ..Default::default() }),
        packs,
    };
    committed::commit::<Objects>(store, name, &meta).await.unwrap();
}

fn pack_files(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("packs"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn collection_never_removes_a_pack_a_running_backup_will_reference() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let body: &[u8] = br#"{"kind":"ConfigMap","metadata":{"name":"a"}}"#;

    // Backup A stores the body in pack X and commits.
    let lease_a = Lease::acquire(&s, "run-a").await.unwrap();
    let known = Known::load(&s, None).await.unwrap();
    let x = stash(&s, known, "run-a", &[body]).await;
    assert_eq!(x.len(), 1);
    commit(&s, "a", x.clone()).await;
    lease_a.release().await;

    // Backup B starts: takes its lease, loads the packs (sees X), and is about to reference X.
    let lease_b = Lease::acquire(&s, "run-b").await.unwrap();
    let known_b = Known::load(&s, None).await.unwrap();

    // Meanwhile A is deleted and garbage is collected: X is unused now, so it is tombstoned,
    // but B's lease began before the tombstone, so X is held, not deleted.
    let deleted = catalog::delete(&s, "a").await.unwrap();
    let collected = deleted.collected.unwrap().unwrap();
    assert_eq!(collected.marked, x);
    assert_eq!(collected.held, x);
    assert!(collected.deleted.is_empty(), "{collected:?}");
    assert!(pack_files(dir.path()).contains(&format!("{}.tar.zst", x[0])));

    // A backup starting now no longer sees X (tombstoned): it stores its own copy.
    let lease_c = Lease::acquire(&s, "run-c").await.unwrap();
    let known_c = Known::load(&s, None).await.unwrap();
    let y = stash(&s, known_c, "run-c", &[body]).await;
    assert_ne!(y, x, "a tombstoned pack was reused");
    lease_c.release().await;

    // B references X (reused: nothing new stored) and commits; the next collection revives X.
    let b_packs = stash(&s, known_b, "run-b", &[body]).await;
    assert_eq!(b_packs, x);
    commit(&s, "b", b_packs).await;
    lease_b.release().await;
    let collected = packs::collect_garbage(&s).await.unwrap();
    assert_eq!(collected.revived, x, "{collected:?}");
    // Y was never committed by anyone: no lease holds it, so it goes at once.
    assert_eq!(collected.marked, y);
    assert_eq!(collected.deleted, y);

    // B's data is all there and reads back verified.
    let meta = catalog::metadata(&s, "b").await.unwrap();
    let local = packs::Local::fetch(&s, &meta).await.unwrap();
    let mut found = Vec::new();
    let want = kubectl_backup_core::archive::sha256_hex(body);
    local
        .scan(&|sha| sha == want, &mut |_, b| {
            found.push(b);
            Ok(true)
        })
        .unwrap();
    assert_eq!(found, vec![body.to_vec()]);

    // Once B is deleted with no backup running, X goes in the same collection.
    let collected = catalog::delete(&s, "b").await.unwrap().collected.unwrap().unwrap();
    assert_eq!((collected.marked.clone(), collected.deleted.clone()), (x.clone(), x.clone()), "{collected:?}");
    assert!(collected.bytes_freed > 0);
    assert!(pack_files(dir.path()).is_empty(), "{:?}", pack_files(dir.path()));
}

/// A store may date a file when its put began, a moment before it can be seen: a backup whose
/// lease began just after a tombstone's date may have listed the packs before that tombstone was
/// visible, and be about to reference the pack. So a tombstoned pack goes only when every live
/// lease began well (10 s) after its tombstone's date.
#[tokio::test]
async fn a_lease_begun_just_after_a_tombstone_was_dated_holds_the_pack() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let body: &[u8] = br#"{"kind":"ConfigMap","metadata":{"name":"a"}}"#;
    let lease_a = Lease::acquire(&s, "run-a").await.unwrap();
    let x = stash(&s, Known::load(&s, None).await.unwrap(), "run-a", &[body]).await;
    commit(&s, "a", x.clone()).await;
    lease_a.release().await;

    // H's lease began before X's tombstone, which the deletion of A writes: X is held.
    let lease_h = Lease::acquire(&s, "run-h").await.unwrap();
    let collected = catalog::delete(&s, "a").await.unwrap().collected.unwrap().unwrap();
    assert_eq!((collected.marked.clone(), collected.held.clone()), (x.clone(), x.clone()), "{collected:?}");
    // B's lease begins a moment after the tombstone's date; H ends.
    let lease_b = Lease::acquire(&s, "run-b").await.unwrap();
    lease_h.release().await;
    let collected = packs::collect_garbage(&s).await.unwrap();
    assert_eq!(collected.held, x, "{collected:?}");
    assert!(pack_files(dir.path()).contains(&format!("{}.tar.zst", x[0])));

    // Dated 20 s earlier, the tombstone is well before B's lease: X goes.
    age(&dir.path().join(format!("packs/{}.gone", x[0])), std::time::Duration::from_secs(20));
    let collected = packs::collect_garbage(&s).await.unwrap();
    assert_eq!(collected.deleted, x, "{collected:?}");
    lease_b.release().await;
}

#[tokio::test]
async fn a_pack_written_by_a_running_backup_is_not_tombstoned() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    // A run writes a pack but has not committed yet.
    let lease = Lease::acquire(&s, "run-1").await.unwrap();
    let known = Known::load(&s, None).await.unwrap();
    let p = stash(&s, known, "run-1", &[b"one", b"two"]).await;
    let collected = packs::collect_garbage(&s).await.unwrap();
    assert!(collected.marked.is_empty() && collected.deleted.is_empty(), "{collected:?}");
    commit(&s, "one", p.clone()).await;
    lease.release().await;
    let collected = packs::collect_garbage(&s).await.unwrap();
    assert_eq!(collected, packs::Collected::default());
    assert!(pack_files(dir.path()).contains(&format!("{}.json.zst", p[0])));
}

#[tokio::test]
async fn collection_refuses_to_guess_when_a_backup_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let lease = Lease::acquire(&s, "run-1").await.unwrap();
    let known = Known::load(&s, None).await.unwrap();
    let p = stash(&s, known, "run-1", &[b"one"]).await;
    commit(&s, "one", p.clone()).await;
    lease.release().await;
    std::fs::write(dir.path().join("backups/one/metadata.json"), b"{not json").unwrap();
    let err = packs::collect_garbage(&s).await.unwrap_err().to_string();
    assert!(err.contains("not collecting packs: the metadata of backup \"one\" cannot be read"), "{err}");
    assert!(pack_files(dir.path()).contains(&format!("{}.tar.zst", p[0])));
}

/// Sets a file's modification time `ago` in the past: the local store's `last_modified`.
fn age(path: &std::path::Path, ago: std::time::Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(std::time::SystemTime::now() - ago)).unwrap();
}

#[tokio::test]
async fn collection_removes_what_interrupted_runs_left_and_nothing_a_live_run_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let minutes = |m: u64| std::time::Duration::from_secs(60 * m);
    // A run that died after uploading a pack, before its index: data only, two minutes old.
    let lease = Lease::acquire(&s, "run-dead").await.unwrap();
    let dead = stash(&s, Known::load(&s, None).await.unwrap(), "run-dead", &[b"dead"]).await;
    lease.release().await;
    std::fs::remove_file(dir.path().join(format!("packs/{}.json.zst", dead[0]))).unwrap();
    age(&dir.path().join(format!("packs/{}.tar.zst", dead[0])), minutes(2));
    // An index left without its pack (a zombie run wrote it after its pack was removed; in the
    // uncompressed form of the first versions, which collection cleans up too).
    std::fs::write(dir.path().join("packs/run-zombie-0000.json"), b"{}").unwrap();
    age(&dir.path().join("packs/run-zombie-0000.json"), minutes(2));
    // A lease nobody refreshed for 15 minutes.
    std::fs::create_dir_all(dir.path().join("leases")).unwrap();
    for suffix in ["start", "beat"] {
        let p = dir.path().join(format!("leases/run-gone.{suffix}"));
        std::fs::write(&p, b"{}").unwrap();
        age(&p, minutes(15));
    }
    // Heartbeats without a start (landed after their run's lease was removed): one 15 minutes old
    // goes, one just written stays for now.
    std::fs::write(dir.path().join("leases/run-orphan.beat"), b"{}").unwrap();
    age(&dir.path().join("leases/run-orphan.beat"), minutes(15));
    std::fs::write(dir.path().join("leases/run-new-orphan.beat"), b"{}").unwrap();
    // A live run whose pack is uploaded and whose index is not written yet: kept.
    let live = Lease::acquire(&s, "run-live").await.unwrap();
    let fresh = stash(&s, Known::load(&s, None).await.unwrap(), "run-live", &[b"fresh"]).await;
    std::fs::remove_file(dir.path().join(format!("packs/{}.json.zst", fresh[0]))).unwrap();

    let collected = packs::collect_garbage(&s).await.unwrap();
    let mut deleted = collected.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, vec![dead[0].clone(), "run-zombie-0000".to_string()], "{collected:?}");
    assert_eq!(pack_files(dir.path()), BTreeSet::from([format!("{}.tar.zst", fresh[0])]));
    let leases: BTreeSet<String> = std::fs::read_dir(dir.path().join("leases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leases, BTreeSet::from(["run-live.beat", "run-live.start", "run-new-orphan.beat"].map(String::from)));
    live.release().await;
}

#[tokio::test]
async fn a_commit_whose_pack_vanished_while_it_ran_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let lease = Lease::acquire(&s, "run-1").await.unwrap();
    let p = stash(&s, Known::load(&s, None).await.unwrap(), "run-1", &[b"one"]).await;
    commit(&s, "one", p.clone()).await;
    packs::confirm(&s, "one", &p).await.unwrap();
    // The pack goes (as a collection that missed this run's lease would remove it).
    std::fs::remove_file(dir.path().join(format!("packs/{}.tar.zst", p[0]))).unwrap();
    let err = packs::confirm(&s, "one", &p).await.unwrap_err().to_string();
    assert!(err.contains(&format!("pack {}, which backup \"one\" references, was removed", p[0])), "{err}");
    assert!(!dir.path().join("backups/one/metadata.json").exists(), "the commit was not undone");
    lease.release().await;
}

/// Stores contents blobs as a run would, returning their SHA-256 and the packs they are in.
async fn stash_contents(store: &Store, run: &str, blobs: &[Vec<u8>]) -> (Vec<String>, Vec<String>) {
    let (tx, rx) = mpsc::channel(1);
    let owned = blobs.to_vec();
    let (run, known) = (run.to_string(), Known::load(store, None).await.unwrap());
    let writer = tokio::task::spawn_blocking(move || {
        let mut s = Stash::new(known, &run, None, 0, tx);
        let shas: Vec<String> = owned
            .iter()
            .map(|b| {
                let sha = kubectl_backup_core::archive::sha256_hex(b);
                s.put_contents(&sha, b).unwrap();
                sha
            })
            .collect();
        (shas, s.finish().unwrap().0)
    });
    packs::upload_packs(store, rx).await.unwrap();
    writer.await.unwrap()
}

fn line(path: &str, body: &str) -> String {
    let sha = kubectl_backup_core::archive::sha256_hex(body.as_bytes());
    format!("{{\"path\":\"{path}\",\"sha256\":\"{sha}\",\"size\":{}}}\n", body.len())
}

#[tokio::test]
async fn contents_are_chunks_then_deltas_in_order_and_a_bad_delta_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let chunk = format!("{}{}", line("r/a", "1"), line("r/b", "2")).into_bytes();
    let delta1 = format!("{}{}", line("r/b", "22"), line("r/c", "3")).into_bytes();
    let delta2 = b"{\"path\":\"r/a\",\"removed\":true}\n".to_vec();
    let bad_delta = b"{\"path\":\"r/z\",\"removed\":true}\n".to_vec();
    let twice = format!("{}{}", line("r/a", "1"), line("r/a", "1")).into_bytes();
    let list = |shas: &[&String]| shas.iter().map(|s| format!("{s}\n")).collect::<String>().into_bytes();
    let (shas, _) = stash_contents(&s, "run-c", &[chunk, delta1, delta2, bad_delta, twice]).await;
    let (list_good, list_twice) = (list(&[&shas[0]]), list(&[&shas[4]]));
    let (lists, packs) = stash_contents(&s, "run-l", &[list_good, list_twice, b"not-a-sha\n".to_vec()]).await;
    let mut all = pack_files(dir.path())
        .into_iter()
        .filter_map(|f| f.strip_suffix(".tar.zst").map(str::to_string))
        .collect::<Vec<_>>();
    all.sort();
    assert!(packs.iter().all(|p| p.contains("-c")), "contents go to contents packs: {packs:?}");
    let local = packs::Local::fetch_packs(&s, "t", &all).await.unwrap();
    let read = |list: &String, deltas: &[&String]| {
        let c = ContentsRef {
            entries: 0,
            list: Some(list.clone()),
            deltas: deltas.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        packs::read_contents(&local, &c)
    };

    let a = read(&lists[0], &[&shas[1], &shas[2]]).unwrap();
    let mut got: Vec<(&str, u64)> = a.lines.iter().map(|(p, r)| (p.as_str(), r.size)).collect();
    got.sort();
    assert_eq!(got, [("r/b", 2), ("r/c", 1)], "b changed, c added, a removed");
    assert_eq!(a.delta_lines, 3);
    assert_eq!(a.chunks, [shas[0].clone()]);
    // The deltas apply in order: removing a first, then the same again, fails on the second.
    let err = read(&lists[0], &[&shas[2], &shas[2]]).err().unwrap();
    assert!(err.contains("removes \"r/a\", which the contents do not hold"), "{err}");
    let err = read(&lists[0], &[&shas[3]]).err().unwrap();
    assert!(err.contains("removes \"r/z\", which the contents do not hold"), "{err}");
    let err = read(&lists[1], &[]).err().unwrap();
    assert!(err.contains("entry \"r/a\" is listed twice"), "{err}");
    let err = read(&lists[2], &[]).err().unwrap();
    assert!(err.contains("names \"not-a-sha\", which is not a SHA-256"), "{err}");
    let missing = "0".repeat(64);
    let err = read(&lists[0], &[&missing]).err().unwrap();
    assert!(err.contains(&format!("contents delta {missing} is in none of its packs")), "{err}");
}

/// Two collections at once (two `delete`s, or a delete and expiry) racing a backup that is about
/// to reference a pack only a deleted backup used: neither removes the pack, whatever the
/// interleaving (ten rounds on a multi-threaded runtime, the backup committing while they run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_collections_at_once_never_remove_a_pack_a_running_backup_will_reference() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let body = format!("{{\"kind\":\"ConfigMap\",\"round\":{round}}}").into_bytes();
        let lease_a = Lease::acquire(&s, "run-a").await.unwrap();
        let x = stash(&s, Known::load(&s, None).await.unwrap(), "run-a", &[&body]).await;
        commit(&s, "a", x.clone()).await;
        lease_a.release().await;
        // B starts (lease, then the packs: it sees X), then A's commit document goes.
        let lease_b = Lease::acquire(&s, "run-b").await.unwrap();
        let known_b = Known::load(&s, None).await.unwrap();
        std::fs::remove_file(dir.path().join("backups/a/metadata.json")).unwrap();
        let backup_b = async {
            let packs = stash(&s, known_b, "run-b", &[&body]).await;
            assert_eq!(packs, x, "round {round}: B reuses X");
            lease_b.check().unwrap();
            commit(&s, "b", packs.clone()).await;
            packs::confirm(&s, "b", &packs).await.unwrap();
            lease_b.release().await;
        };
        let (one, two, ()) = tokio::join!(packs::collect_garbage(&s), packs::collect_garbage(&s), backup_b);
        let (one, two) = (one.unwrap(), two.unwrap());
        assert!(one.deleted.is_empty() && two.deleted.is_empty(), "round {round}: {one:?} {two:?}");
        // Afterwards, with nothing running: X is B's, so it is kept (revived if tombstoned).
        packs::collect_garbage(&s).await.unwrap();
        let files = pack_files(dir.path());
        assert!(
            files.contains(&format!("{}.tar.zst", x[0])) && !files.contains(&format!("{}.gone", x[0])),
            "round {round}: {files:?}"
        );
        let meta = catalog::metadata(&s, "b").await.unwrap();
        let local = packs::Local::fetch(&s, &meta).await.unwrap();
        let want = kubectl_backup_core::archive::sha256_hex(&body);
        let mut found = 0;
        local
            .scan(&|sha| sha == want, &mut |_, _| {
                found += 1;
                Ok(true)
            })
            .unwrap();
        assert_eq!(found, 1, "round {round}");
    }
}

/// What a reader takes from a pack and its index is bounded by what the writer puts in them,
/// whatever the (unauthenticated) index says: a zstd bomb in either is refused, not inflated.
#[tokio::test]
async fn a_pack_or_an_index_larger_than_a_writer_makes_is_refused() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    std::fs::create_dir_all(dir.path().join("packs")).unwrap();
    // A pack of 6 blobs of 2 MiB of zeros: 12 MiB of plaintext, more than the 8 MiB (plus one
    // object) a writer closes a pack at; a few kilobytes compressed.
    let blob = vec![0u8; 2 << 20];
    let sha = kubectl_backup_core::archive::sha256_hex(&blob);
    let mut tar = tar::Builder::new(Vec::new());
    for _ in 0..6 {
        let mut h = tar::Header::new_gnu();
        h.set_size(blob.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("blobs/{sha}"), &blob[..]).unwrap();
    }
    let pack = zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap();
    assert!(pack.len() < 64 << 10, "{}", pack.len());
    std::fs::write(dir.path().join("packs/bomb-0.tar.zst"), &pack).unwrap();
    let index = serde_json::json!({
        "format": "tar+zstd", "size": pack.len(), "sha256": hex::encode(sha2::Sha256::digest(&pack)),
        "blobs": [{"sha256": sha, "size": blob.len()}],
    });
    let index = zstd::encode_all(&serde_json::to_vec(&index).unwrap()[..], 3).unwrap();
    std::fs::write(dir.path().join("packs/bomb-0.json.zst"), index).unwrap();
    let local = packs::Local::fetch_packs(&s, "t", &["bomb-0".to_string()]).await.unwrap();
    let err = local.scan(&|_| true, &mut |_, _| Ok(true)).unwrap_err();
    assert!(err.contains("decompresses to more than") && err.contains("a zstd bomb"), "{err}");

    // An index that decompresses to more than 4 MiB (a writer's is under 1 MiB).
    let padding = " ".repeat(5 << 20);
    let big = format!("{{\"format\":\"tar+zstd\",\"size\":1,\"sha256\":\"{}\",\"blobs\":[]{padding}}}", "0".repeat(64));
    std::fs::write(dir.path().join("packs/huge-0.json.zst"), zstd::encode_all(big.as_bytes(), 3).unwrap()).unwrap();
    std::fs::write(dir.path().join("packs/huge-0.tar.zst"), b"x").unwrap();
    let err = packs::Local::fetch_packs(&s, "t", &["huge-0".to_string()]).await.err().unwrap().to_string();
    assert!(err.contains("pack index of huge-0: larger than 4194304 bytes"), "{err}");
    // The same uncompressed (the first versions' name) is refused before it is read.
    std::fs::remove_file(dir.path().join("packs/huge-0.json.zst")).unwrap();
    std::fs::write(dir.path().join("packs/huge-0.json"), big.as_bytes()).unwrap();
    let err = packs::Local::fetch_packs(&s, "t", &["huge-0".to_string()]).await.err().unwrap().to_string();
    assert!(err.contains("more than such a document may be (4194304 bytes)"), "{err}");
}
