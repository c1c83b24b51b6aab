//! What happens when things go wrong mid-backup: the tool is SIGKILLed, the object store connection
//! is reset mid-upload, the API server restarts. Never a committed corrupt backup.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubectl_backup_e2e::control_plane::ControlPlane;
use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fault_proxy::{Fault, FaultProxy};
use kubectl_backup_e2e::fixtures::{
    Run, Tools, ctrl_c, namespace, plugin_path, random_configmaps, small_configmaps, unique,
};
use kubectl_backup_e2e::stores::s3_env;

fn env() -> (SharedEnv, Tools) {
    let env = SharedEnv::load().expect("shared environment");
    let tools = Tools::new(&env.cluster);
    (env, tools)
}

/// A proxy with `fault` in front of the shared S3 server, and the tools with a new location of
/// prefix `prefix` reached through it.
fn through_proxy(env: &SharedEnv, tools: &Tools, fault: Fault, prefix: &str) -> (FaultProxy, Tools) {
    let proxy = FaultProxy::start(env.s3.port, fault).unwrap();
    let mut t = tools.clone();
    t.env = s3_env(proxy.port());
    t.location = Some(env.s3.location(&unique(prefix)));
    (proxy, t)
}

/// The same tools and location, straight to the S3 server.
fn direct(env: &SharedEnv, t: &Tools) -> Tools {
    let mut direct = t.clone();
    direct.env = env.s3.env.clone();
    direct
}

fn files_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A run slow enough to be interrupted: 3 requests a second, one at a time.
const SLOW: [&str; 6] = ["--qps", "3", "--burst", "1", "--concurrency", "1"];

/// Starts `kubectl-backup create` slowly ([`SLOW`]) so it can be interrupted.
fn slow_create(tools: &Tools, location: &str, name: &str) -> std::process::Child {
    Command::new(plugin_path())
        .args(["create", name, "--location", location])
        .args(SLOW)
        .env("KUBECONFIG", &tools.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kubectl-backup")
}

#[test]
fn sigkill_mid_backup_leaves_nothing_listed_and_a_rerun_succeeds() {
    let (env, tools) = env();
    let ns = unique("kill");
    tools.create(&namespace(&ns)).ok();
    tools.create(&small_configmaps(&ns, 300)).ok();
    let dir = env.scratch.join(unique("kill"));
    let location = format!("file://{}", dir.display());
    let mut t = tools.clone();
    t.location = Some(location.clone());
    let name = unique("b");
    let backup_dir = dir.join("backups").join(&name);

    let mut child = slow_create(&tools, &location, &name);
    wait_until("the in-progress marker", Duration::from_secs(60), || backup_dir.join("in-progress.json").exists());
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    // Not listed as a backup; described as in progress; nothing committed.
    let listed = t.backup(&["list", "-o", "json"]).ok().json();
    assert!(listed["items"].as_array().unwrap().is_empty(), "{listed}");
    assert!(!backup_dir.join("metadata.json").exists());
    let d = t.backup(&["describe", &name, "-o", "json"]).ok().json();
    assert_eq!(d["status"]["phase"], "InProgress");
    // A restore-side read of it is refused (it does not exist as a backup).
    let dl = t.backup(&["download", &name, "-f", dir.join("x.tar.zst").to_str().unwrap()]);
    assert_ne!(dl.code, 0);

    // A rerun with the same name succeeds and cleans up the leftovers.
    let b = t.backup(&["create", &name, "-n", &ns, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "Completed");
    assert_eq!(b["status"]["resources"]["configmaps"], 301);
    // The commit, its archive and contents file, and the run's log (written after the commit).
    let files = files_of(&backup_dir);
    assert_eq!(files.len(), 4, "leftovers remain: {files:?}");
    assert!(
        files.contains(&"metadata.json".to_string())
            && files.contains(&"log.txt".to_string())
            && files.iter().any(|f| f.starts_with("archive-") && f.ends_with(".tar.zst"))
            && files.iter().any(|f| f.starts_with("contents-") && f.ends_with(".jsonl.zst")),
        "{files:?}"
    );
    t.backup(&["download", &name, "-f", dir.join("ok.tar.zst").to_str().unwrap()]).ok();

    // delete removes the leftovers of an interrupted run too.
    let other = unique("b");
    let mut child = slow_create(&tools, &location, &other);
    let other_dir = dir.join("backups").join(&other);
    wait_until("the in-progress marker", Duration::from_secs(60), || other_dir.join("in-progress.json").exists());
    child.kill().unwrap();
    child.wait().unwrap();
    let del = t.backup(&["delete", &other, "--yes"]).ok();
    assert!(del.stdout.contains("leftover"), "{}", del.stdout);
    assert!(files_of(&other_dir).is_empty(), "{:?}", files_of(&other_dir));
    tools.delete_namespace(&ns);
}

/// Whether the run whose directory is `dir` has been listing for 1.5 s (its in-progress marker
/// written that long ago), as a poll for [`ctrl_c`].
fn listing(dir: &Path) -> impl FnMut() -> bool + '_ {
    let mut marked: Option<Instant> = None;
    move || {
        if dir.join("in-progress.json").exists() {
            marked.get_or_insert_with(Instant::now);
        }
        marked.is_some_and(|m| m.elapsed() > Duration::from_millis(1500))
    }
}

/// A first Ctrl-C ends a backup cleanly whatever it backs up: its LISTs end, nothing is committed,
/// what it wrote (the archive uploaded so far, the in-progress marker) is removed, and the plugin
/// exits 130. A restore stopped the same way creates no further object. (Before, only runs with
/// volume data had the handler: a plain run was killed, its files left for `delete`, or, where
/// SIGINT was ignored, went on to commit.)
#[test]
fn ctrl_c_ends_a_backup_leaving_nothing_and_a_restore_creating_nothing_more() {
    let (env, tools) = env();
    let ns = unique("intr");
    tools.create(&namespace(&ns)).ok();
    tools.create(&small_configmaps(&ns, 300)).ok();
    let dir = env.scratch.join(unique("intr"));
    let mut t = tools.clone();
    t.location = Some(format!("file://{}", dir.display()));

    // The whole cluster's types at 3 LISTs a second: about 15 s of listing.
    let name = unique("b");
    let backup_dir = dir.join("backups").join(&name);
    let args = [&["create", &name][..], &SLOW].concat();
    let (code, stderr, took) =
        ctrl_c(t.backup_command(&args), ("the run listing for 1.5 s", &mut listing(&backup_dir)));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: stopping the backup: its LISTs end"), "{stderr}");
    let why = format!("error: interrupted: backup \"{name}\" was not committed, and what it wrote was removed");
    assert!(stderr.contains(&why), "{stderr}");
    assert!(took < Duration::from_secs(5), "the LISTs went on {took:?} after Ctrl-C");
    assert!(files_of(&backup_dir).is_empty(), "left behind: {:?}", files_of(&backup_dir));
    let listed = t.backup(&["list", "-o", "json"]).ok().json();
    assert!(listed["items"].as_array().unwrap().is_empty(), "{listed}");

    // An incremental run stops the same way, and releases its lease: nothing holds up the
    // collector, which removes the packs it wrote, referenced by no backup.
    let inc = unique("b");
    let inc_dir = dir.join("backups").join(&inc);
    let args = [&["create", &inc, "--incremental"][..], &SLOW].concat();
    let (code, stderr, took) = ctrl_c(t.backup_command(&args), ("the run listing for 1.5 s", &mut listing(&inc_dir)));
    assert_eq!(code, Some(130), "{stderr}");
    let why = format!(
        "error: interrupted: backup \"{inc}\" was not committed; the packs it wrote are removed by the next garbage collection"
    );
    assert!(stderr.contains(&why), "{stderr}");
    assert!(took < Duration::from_secs(5), "the LISTs went on {took:?} after Ctrl-C");
    assert!(files_of(&inc_dir).is_empty(), "left behind: {:?}", files_of(&inc_dir));
    assert!(files_of(&dir.join("leases")).is_empty(), "the lease was kept: {:?}", files_of(&dir.join("leases")));

    // The restore: 301 ConfigMaps at 3 a second, stopped once a few exist in the copy.
    let full = unique("b");
    let b = t.backup(&["create", &full, "-n", &ns, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["resources"]["configmaps"], 301, "{b}");
    let copy = unique("copy");
    let count = || {
        let cms = tools.get_json(&["configmaps", "-n", &copy]);
        cms["items"].as_array().map_or(0, Vec::len)
    };
    let mapping = format!("--namespace-mapping={ns}:{copy}");
    let mut begun = || count() >= 5;
    let args = [&["restore", &full, &mapping][..], &SLOW].concat();
    let (code, stderr, took) = ctrl_c(t.backup_command(&args), ("five ConfigMaps restored", &mut begun));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: stopping the restore"), "{stderr}");
    assert!(stderr.contains("error: interrupted: the restore stopped; what it created so far stays"), "{stderr}");
    assert!(took < Duration::from_secs(5), "the restore went on {took:?} after Ctrl-C");
    let created = count();
    assert!((5..100).contains(&created), "{created} ConfigMaps restored");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(), created, "ConfigMaps were created after the restore ended");
    for n in [&ns, &copy] {
        tools.delete_namespace(n);
    }
}

/// The commit's answer is lost: the store keeps `metadata.json` and the client sees its connection
/// reset (a retry of the put would find the name taken). The run reads the document back, sees its
/// own, and reports the backup it committed, with every file of it kept; before, it failed on the
/// reset and deleted the archive the committed document names. Both kinds of backup commit the
/// same way: a plain one and an incremental one are tried.
#[test]
fn a_commit_whose_answer_is_lost_is_recognised_as_the_runs_own() {
    let (env, tools) = env();
    let ns = unique("lost");
    tools.create(&namespace(&ns)).ok();
    tools.create(&small_configmaps(&ns, 5)).ok();
    for incremental in [false, true] {
        let fault = Fault::LoseAnswer { method: "PUT", path_ends: "/metadata.json", times: 1 };
        let (proxy, t) = through_proxy(&env, &tools, fault, "lost");
        let name = unique("b");
        let mut args = vec!["create", name.as_str(), "-n", ns.as_str(), "-o", "json"];
        if incremental {
            args.push("--incremental");
        }
        let run = t.backup(&args);
        assert_eq!(proxy.resets(), 1, "the proxy did not lose the commit's answer (incremental: {incremental})");
        assert_eq!(run.code, 0, "incremental: {incremental}: {} {}", run.stdout, run.stderr);
        let b = run.json();
        assert_eq!(b["status"]["phase"], "Completed", "{b}");
        assert_eq!(b["status"]["resources"]["configmaps"], 6, "{b}");
        drop(proxy);
        // Through the real server: listed, and restorable whole into a new namespace (every
        // body's SHA-256 checked before the first write).
        let direct = direct(&env, &t);
        let listed = direct.backup(&["list", "-o", "json"]).ok().json();
        assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
        let to = unique("lostr");
        let r =
            direct.backup(&["restore", &name, "--namespace-mapping", &format!("{ns}:{to}"), "-o", "json"]).ok().json();
        assert_eq!(r["status"]["phase"], "Completed", "incremental: {incremental}: {r}");
        assert_eq!(tools.kubectl(&["get", "configmaps", "-n", &to, "-o", "name"]).ok().stdout.lines().count(), 6);
        tools.delete_namespace(&to);
    }
    tools.delete_namespace(&ns);
}

/// The store goes out of reach for 50 s from the moment an incremental backup commits: its commit
/// and its lease's heartbeats wait, then go through. By then a collection elsewhere may have seen
/// the lease as stale (no beat for 60 s), listed the committed backups without this one, and gone
/// on to remove a pack it references. So once the commit returns the run tests its lease again,
/// undoes the commit and says why; nothing is listed, and the same name then commits.
#[test]
fn a_commit_that_outlasts_its_lease_is_undone() {
    let (env, tools) = env();
    let ns = unique("slow");
    tools.create(&namespace(&ns)).ok();
    tools.create(&small_configmaps(&ns, 5)).ok();
    let fault = Fault::StallFrom { method: "PUT", path_ends: "/metadata.json", secs: 50 };
    let (proxy, t) = through_proxy(&env, &tools, fault, "slow");
    let name = unique("b");
    let run = t.backup(&["create", &name, "-n", &ns, "--incremental", "-o", "json"]);
    assert_eq!(proxy.resets(), 1, "the proxy never stalled the commit");
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("lease on the packs went unrefreshed for")
            && run.stderr.contains("commit")
            && run.stderr.contains("the backup is not kept"),
        "{}",
        run.stderr
    );
    drop(proxy);
    let direct = direct(&env, &t);
    assert_undone_and_committed_again(&direct, &name, &ns);
    tools.delete_namespace(&ns);
}

/// An undone backup is neither listed nor left as an interrupted run's files (an incremental
/// backup's own files are its commit document and, with volumes, their data: volumes.rs
/// `an_undone_commit_takes_the_volume_data_the_movers_uploaded_with_it`), and the same name then
/// commits; returns that backup.
fn assert_undone_and_committed_again(t: &Tools, name: &str, ns: &str) -> serde_json::Value {
    let listed = t.backup(&["list", "-o", "json"]).ok();
    let items = listed.json();
    assert!(items["items"].as_array().unwrap().is_empty(), "an undone backup is listed: {items}");
    assert!(!listed.stderr.contains(name), "an undone backup left files: {}", listed.stderr);
    let again = t.backup(&["create", name, "-n", ns, "--incremental", "-o", "json"]).ok().json();
    assert_eq!(again["status"]["phase"], "Completed", "{again}");
    again
}

/// An incremental backup of a new namespace of 5 ConfigMaps through a proxy with `fault`, which
/// must hold the commit: meanwhile every pack file of the location is removed straight from the
/// S3 server (at least the run's data and contents packs). Returns the proxy, the tools through it,
/// the namespace, the backup's name and the finished run.
fn packs_removed_during_the_commit(
    env: &SharedEnv,
    tools: &Tools,
    fault: Fault,
    prefix: &str,
) -> (FaultProxy, Tools, String, String, Run) {
    use kubectl_backup_core::store::{Store, StoreOptions};

    let ns = unique(prefix);
    tools.create(&namespace(&ns)).ok();
    tools.create(&small_configmaps(&ns, 5)).ok();
    let (proxy, t) = through_proxy(env, tools, fault, prefix);
    let name = unique("b");
    let run = {
        let (t, name, ns) = (t.clone(), name.clone(), ns.clone());
        std::thread::spawn(move || t.backup(&["create", &name, "-n", &ns, "--incremental", "-o", "json"]))
    };
    wait_until("the commit to be held", Duration::from_secs(120), || proxy.resets() == 1);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let options = StoreOptions { credentials: env.s3.env.clone(), ..Default::default() };
    let store = Store::open_url(t.location.as_deref().unwrap(), &options).unwrap();
    let removed = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let packs = object_store::path::Path::from("packs");
        let files: Vec<_> = store.objects().list(Some(&packs)).map_ok(|m| m.location).try_collect().await.unwrap();
        for f in &files {
            store.objects().delete(f).await.unwrap();
        }
        files.len()
    });
    assert!(removed >= 2, "the run had uploaded {removed} pack file(s) by its commit");
    (proxy, t, ns, name, run.join().unwrap())
}

/// A pack an incremental backup references goes while the run commits: what a collection that
/// ignored the run's lease would do. The run checks every pack it references once the commit
/// returned, finds one gone, and undoes the commit with every file of it, naming the pack; the
/// same name then commits. The commit is held 8 s at the proxy (well inside the lease) while the
/// test removes the packs straight from the S3 server.
#[test]
fn a_pack_removed_while_the_commit_is_in_flight_undoes_the_commit() {
    let (env, tools) = env();
    let fault = Fault::StallFrom { method: "PUT", path_ends: "/metadata.json", secs: 8 };
    let (proxy, t, ns, name, run) = packs_removed_during_the_commit(&env, &tools, fault, "gonepack");
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("which backup \"{name}\" references, was removed while it ran"))
            && run.stderr.contains("the backup is not kept (run it again)"),
        "{}",
        run.stderr
    );
    drop(proxy);
    let direct = direct(&env, &t);
    let again = assert_undone_and_committed_again(&direct, &name, &ns);
    assert_eq!(again["status"]["resources"]["configmaps"], 6, "{again}");
    tools.delete_namespace(&ns);
}

/// The same, and the store refuses the undo: every delete is reset before it reaches the server
/// (object_store deletes from S3, even one key, with a bulk `POST /<bucket>?delete`).
/// The run says the undo failed and that the backup is listed but may not restore, naming what to
/// do; it is listed, `delete` removes it whole, and the name commits again.
#[test]
fn an_undo_the_store_refuses_is_reported_and_the_backup_left_listed_for_delete() {
    let (env, tools) = env();
    let fault = Fault::StallRefusing {
        method: "PUT",
        path_ends: "/metadata.json",
        secs: 8,
        refuse: "POST",
        refuse_path_ends: "/backups",
    };
    let (proxy, t, ns, name, run) = packs_removed_during_the_commit(&env, &tools, fault, "noundo");
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "which backup \"{name}\" references, was removed while it ran, and undoing its commit failed ("
        )) && run.stderr.contains("the backup is listed but may not restore; delete it and run it again"),
        "{}",
        run.stderr
    );
    drop(proxy);
    let direct = direct(&env, &t);
    let listed = direct.backup(&["list", "-o", "json"]).ok().json();
    let names: Vec<&str> =
        listed["items"].as_array().unwrap().iter().filter_map(|b| b["metadata"]["name"].as_str()).collect();
    assert_eq!(names, [name.as_str()], "{listed}");
    direct.backup(&["delete", &name, "--yes"]).ok();
    assert_undone_and_committed_again(&direct, &name, &ns);
    tools.delete_namespace(&ns);
}

#[test]
fn connection_resets_mid_upload_are_retried_or_fail_cleanly() {
    let (env, tools) = env();
    let ns = unique("reset");
    tools.create(&namespace(&ns)).ok();
    // ~16 MiB of incompressible data: a multipart upload of two 8 MiB parts.
    tools.create(&random_configmaps(&ns, 32, 512 * 1024)).ok();

    // 1. Two resets mid-upload, then the network recovers: a committed backup that verifies.
    let (proxy, t) = through_proxy(&env, &tools, Fault::ResetFirst { after_bytes: 3 << 20, times: 2 }, "reset");
    let name = unique("b");
    let run = t.backup(&["create", &name, "-n", &ns, "-o", "json"]);
    assert!(proxy.resets() >= 1, "the proxy never reset a connection");
    assert_eq!(run.code, 0, "retries did not recover: {}", run.stderr);
    let b = run.json();
    assert_eq!(b["status"]["resources"]["configmaps"], 33);
    assert!(b["status"]["archive"]["size"].as_u64().unwrap() > 8 << 20, "archive too small to need a multipart upload");
    // Download through the real server (no proxy) verifies the SHA-256 of every byte.
    let file = env.scratch.join(format!("{name}.tar.zst"));
    direct(&env, &t).backup(&["download", &name, "-f", file.to_str().unwrap()]).ok();
    drop(proxy);

    // 2. Every connection reset: the backup fails, names the store, and nothing is listed.
    let (_proxy, t) = through_proxy(&env, &tools, Fault::ResetAlways { after_bytes: 1 << 20 }, "dead");
    let name = unique("b");
    let start = Instant::now();
    let run = t.backup(&["create", &name, "-n", &ns]);
    assert_eq!(run.code, 1, "expected a clear failure: {} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("s3://backups"), "the error does not name the store: {}", run.stderr);
    assert!(start.elapsed() < Duration::from_secs(300), "took {:?}", start.elapsed());
    let direct = direct(&env, &t);
    let listed = direct.backup(&["list", "-o", "json"]).ok().json();
    assert!(listed["items"].as_array().unwrap().is_empty(), "a failed backup is listed: {listed}");
    let d = direct.backup(&["describe", &name]);
    assert_ne!(d.code, 0, "a failed backup can be described: {}", d.stdout);
    tools.delete_namespace(&ns);
}

/// The store refuses the archive's upload from its start while a LIST of several pages is under
/// way: the archive side stops while collect holds a page and the next page's read runs beside it
/// (the read-ahead in `list_bodies`). The run stops that LIST, drops the read, and fails naming
/// the store's refusal, not its own stopped channel; nothing is listed.
#[test]
fn a_store_refusing_the_upload_stops_a_list_mid_way_and_is_the_error_reported() {
    let (env, tools) = env();
    let ns = unique("refuse");
    tools.create(&namespace(&ns)).ok();
    // Two pages of ConfigMaps (a page is 500); the first alone (~11 MB, incompressible) fills
    // every buffer between collect and the upload (2 batches, 4 chunks of 1 MiB).
    tools.create(&random_configmaps(&ns, 520, 16 * 1024)).ok();
    // Every POST of the archive (CreateMultipartUpload, and CompleteMultipartUpload) is reset.
    let (proxy, mut t) = through_proxy(&env, &tools, Fault::Refuse { method: "POST", path_ends: ".tar.zst" }, "refuse");
    t.env.push(("KUBECTL_BACKUP_LOG".into(), "warn,kubectl_backup_core::collect=debug".into()));
    let name = unique("b");
    let start = Instant::now();
    let run = t.backup(&["create", &name, "-n", &ns]);
    assert_eq!(run.code, 1, "expected the upload to fail: {} {}", run.stdout, run.stderr);
    assert!(proxy.resets() >= 1, "the proxy never refused the archive's upload");
    // The LIST of ConfigMaps stopped with its next page read beside it.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("the archive side stopped: this LIST ends, its next page's read dropped")
                && l.contains("configmaps")),
        "the ConfigMaps' LIST did not stop on the archive side stopping: {}",
        run.stderr
    );
    // The error reported is the store's (the upload of the archive), not the channel's.
    let error = run.stderr.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join("\n");
    assert!(
        error.contains("s3://backups") && error.contains(".tar.zst?uploads"),
        "the error does not name the upload's start: {}",
        run.stderr
    );
    assert!(!error.to_lowercase().contains("closed"), "a stopped channel was reported instead of the store: {error}");
    assert!(start.elapsed() < Duration::from_secs(120), "took {:?}", start.elapsed());
    let listed = direct(&env, &t).backup(&["list", "-o", "json"]).ok().json();
    assert!(listed["items"].as_array().unwrap().is_empty(), "a failed backup is listed: {listed}");
    tools.delete_namespace(&ns);
}

#[test]
fn apiserver_restart_mid_backup_completes_or_fails_clearly() {
    let (env, _) = env();
    let dir = env.scratch.join(unique("restart"));
    let mut cp = ControlPlane::start(&dir.join("cluster")).expect("second control plane");
    let tools = Tools::new(&cp.info);
    let mut expected = 0;
    for i in 0..20 {
        let ns = format!("load-{i:02}");
        tools.create(&namespace(&ns)).ok();
        tools.create(&small_configmaps(&ns, 20)).ok();
        expected += 21; // + kube-root-ca.crt
    }
    let location = format!("file://{}", dir.join("store").display());
    let name = "during-restart";
    let marker = dir.join("store/backups").join(name).join("in-progress.json");
    let child = Command::new(plugin_path())
        .args([
            "create",
            name,
            "--location",
            &location,
            "--qps",
            "4",
            "--burst",
            "1",
            "--concurrency",
            "2",
            "-o",
            "json",
        ])
        .env("KUBECONFIG", &cp.info.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the backup to start", Duration::from_secs(60), || marker.exists());
    std::thread::sleep(Duration::from_secs(2));
    cp.stop_apiserver();
    std::thread::sleep(Duration::from_secs(3));
    cp.start_apiserver().expect("restarting kube-apiserver");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut t = Tools::new(&cp.info);
    t.location = Some(location);
    match out.status.code() {
        Some(0) => {
            let b: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(b["status"]["phase"], "Completed");
            let cms = b["status"]["resources"]["configmaps"].as_u64().unwrap();
            assert!(cms >= expected, "{cms} configmaps, expected at least {expected}");
        }
        Some(3) => {
            let b: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(b["status"]["phase"], "PartiallyFailed");
            assert!(!b["status"]["errors"].as_array().unwrap().is_empty());
        }
        other => {
            // A clear failure: non-zero, a message naming the API server problem, nothing committed.
            assert!(stderr.contains("error:"), "unclear failure {other:?}: {stderr}");
            let listed = t.backup(&["list", "-o", "json"]).ok().json();
            assert!(listed["items"].as_array().unwrap().is_empty());
            return;
        }
    }
    // Whatever was committed verifies byte for byte.
    t.backup(&["download", name, "-f", dir.join("x.tar.zst").to_str().unwrap()]).ok();
    cp.check_alive().unwrap();
}

/// 410 Gone is a fault injected on the client side: the first continue token the backup sends is
/// rewritten to point at revision 1, which the test has compacted away, so the real API server
/// answers "continue parameter is too old" (a real 410 from the real server). Everything else
/// passes through untouched.
mod expired_continue {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hyper::{Request, Response, StatusCode, Uri};

    pub static INJECTED: AtomicBool = AtomicBool::new(false);
    pub static GONE: AtomicUsize = AtomicUsize::new(0);

    /// Rewrites the first `continue=` token to revision 1 (keeping its start key).
    pub fn expire_first_token<B>(mut req: Request<B>) -> Request<B> {
        let Some(query) = req.uri().query() else { return req };
        let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let Some(token) = pairs.iter_mut().find(|(k, _)| k == "continue").map(|(_, v)| v) else { return req };
        if INJECTED.swap(true, Ordering::SeqCst) {
            return req;
        }
        let mut decoded: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.as_bytes()).expect("continue token is base64"))
                .expect("continue token is JSON");
        decoded["rv"] = 1.into();
        *token = URL_SAFE_NO_PAD.encode(decoded.to_string());
        let path = req.uri().path().to_string();
        let uri: Uri = format!("{path}?{}", serde_urlencoded::to_string(&pairs).unwrap()).parse().unwrap();
        *req.uri_mut() = uri;
        req
    }

    pub fn count_gone<B>(resp: Response<B>) -> Response<B> {
        if resp.status() == StatusCode::GONE {
            GONE.fetch_add(1, Ordering::SeqCst);
        }
        resp
    }
}

#[test]
fn an_expired_continue_token_relists_and_archives_each_object_once() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use kubectl_backup_core::kube_client::{Cluster, Throttle};
    use kubectl_backup_core::model::{BackupSpec, Filters, Phase};
    use kubectl_backup_core::store::{Store, StoreOptions};

    // An own control plane: compacting etcd must not expire other tests' continue tokens.
    let (env, _) = env();
    let dir = env.scratch.join(unique("gone"));
    let cp = ControlPlane::start(&dir.join("cluster")).expect("own control plane");
    let tools = Tools::new(&cp.info);
    let ns = "paged";
    tools.create(&namespace(ns)).ok();
    // Three pages of 500.
    let count = 1_100;
    tools.create(&small_configmaps(ns, count)).ok();
    // Compact etcd up to now: revision 1 is gone.
    let etcdctl = |args: &[&str]| {
        Command::new("etcdctl").arg(format!("--endpoints={}", cp.info.etcd_endpoint)).args(args).output().unwrap()
    };
    let status = etcdctl(&["endpoint", "status", "-w", "json"]);
    assert!(status.status.success(), "etcdctl endpoint status: {}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_u64().expect("etcd revision");
    let compacted = etcdctl(&["compact", &revision.to_string()]);
    // "required revision has been compacted" when the API server's compactor got there first.
    let stderr = String::from_utf8_lossy(&compacted.stderr);
    assert!(compacted.status.success() || stderr.contains("compacted"), "etcdctl compact: {stderr}");

    let store_dir = dir.join("store");
    let name = "relisted";
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let backup = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&cp.info.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let server = config.cluster_url.to_string();
        let client = kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&tower::util::MapRequestLayer::new(expired_continue::expire_first_token))
            .with_layer(&tower::util::MapResponseLayer::new(expired_continue::count_gone))
            .build();
        let cluster = Cluster { client, server, throttle: Throttle::new(1000, 2000, 4), discovery: None };
        let store = Store::open_url(&format!("file://{}", store_dir.display()), &StoreOptions::default()).unwrap();
        let spec = BackupSpec {
            filters: Filters {
                included_namespaces: vec![ns.to_string()],
                included_resources: vec!["configmaps".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        kubectl_backup_core::backup::run(&cluster, &store, name, spec, Arc::new(kubectl_backup_core::progress::Quiet))
            .await
            .expect("backup")
    });
    assert!(expired_continue::INJECTED.load(Ordering::SeqCst), "no continue token was sent: nothing was paged");
    assert_eq!(expired_continue::GONE.load(Ordering::SeqCst), 1, "the API server did not answer 410 Gone");
    assert_eq!(backup.status.phase, Phase::Completed, "{:?}", backup.status.errors);
    // + kube-root-ca.crt
    assert_eq!(backup.status.resources.get("configmaps"), Some(&(count as u64 + 1)), "{:?}", backup.status.resources);
    let archive = store_dir.join("backups").join(name).join(&backup.status.archive.as_ref().unwrap().key);
    let entries: Vec<String> = kubectl_backup_e2e::fixtures::tar_entries(&archive)
        .into_iter()
        .filter(|e| e.starts_with(&format!("resources/configmaps/namespaces/{ns}/")))
        .collect();
    let mut unique_entries = entries.clone();
    unique_entries.dedup();
    assert_eq!(entries.len(), count + 1, "archived configmaps");
    assert_eq!(unique_entries.len(), entries.len(), "an object was archived twice");
}

/// A server, or a proxy before it, that answers a LIST asked for in protobuf in JSON all the same
/// (here a request layer on the client's side rewrites the `Accept` to JSON, as such a proxy
/// would): the page is read as JSON, each once, and the backup holds the same bytes as one that
/// asked for JSON.
#[test]
fn a_list_answered_in_json_to_a_protobuf_request_is_read_as_json() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kubectl_backup_core::collect::ListEncoding;
    use kubectl_backup_core::kube_client::{Cluster, Throttle};
    use kubectl_backup_core::model::{BackupSpec, Filters, Phase};
    use kubectl_backup_core::store::{Store, StoreOptions};

    static REWRITTEN: AtomicUsize = AtomicUsize::new(0);
    static LISTS: AtomicUsize = AtomicUsize::new(0);
    fn json_for_protobuf<B>(mut req: hyper::Request<B>) -> hyper::Request<B> {
        let protobuf = kubectl_backup_core::collect::protobuf::PROTOBUF;
        let path = req.uri().path();
        if req.method() == hyper::Method::GET && (path.ends_with("/configmaps") || path.ends_with("/secrets")) {
            LISTS.fetch_add(1, Ordering::SeqCst);
        }
        if req.headers().get(hyper::header::ACCEPT).is_some_and(|a| a.as_bytes() == protobuf.as_bytes()) {
            REWRITTEN.fetch_add(1, Ordering::SeqCst);
            req.headers_mut()
                .insert(hyper::header::ACCEPT, hyper::header::HeaderValue::from_static("application/json"));
        }
        req
    }

    let (env, tools) = env();
    let ns = unique("pb-proxy");
    tools.create(&namespace(&ns)).ok();
    tools.create(&small_configmaps(&ns, 700)).ok();
    let dir = env.scratch.join(unique("pb-proxy"));
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let backup = |name: &str, encoding: ListEncoding, rewrite: bool| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let kubeconfig = kube::config::Kubeconfig::read_from(&env.cluster.kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
            let server = config.cluster_url.to_string();
            let builder = kube::client::ClientBuilder::try_from(config).unwrap();
            let client = match rewrite {
                true => builder.with_layer(&tower::util::MapRequestLayer::new(json_for_protobuf)).build(),
                false => builder.build(),
            };
            let throttle = Throttle::new(1000, 2000, 4).with_list_encoding(encoding);
            let cluster = Cluster { client, server, throttle, discovery: None };
            let store = Store::open_url(&format!("file://{}", dir.display()), &StoreOptions::default()).unwrap();
            let spec = BackupSpec {
                filters: Filters {
                    included_namespaces: vec![ns.clone()],
                    included_resources: vec!["configmaps".into(), "secrets".into()],
                    ..Default::default()
                },
                ..Default::default()
            };
            let b = kubectl_backup_core::backup::run(
                &cluster,
                &store,
                name,
                spec,
                Arc::new(kubectl_backup_core::progress::Quiet),
            )
            .await
            .expect("backup");
            assert_eq!(b.status.phase, Phase::Completed, "{:?}", b.status.errors);
            let archive = dir.join("backups").join(name).join(&b.status.archive.as_ref().unwrap().key);
            let out = dir.join(name);
            std::fs::create_dir_all(&out).unwrap();
            let tar = Command::new("tar").arg("--zstd").arg("-xf").arg(&archive).arg("-C").arg(&out).output().unwrap();
            assert!(tar.status.success(), "{}", String::from_utf8_lossy(&tar.stderr));
            kubectl_backup_e2e::fixtures::tar_entries(&archive)
                .into_iter()
                .map(|e| (e.clone(), std::fs::read(out.join(&e)).unwrap()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
    };
    // The token Secret comes from kube-controller-manager: both backups must see it.
    kubectl_backup_e2e::fixtures::eventually("the token Secret", Duration::from_secs(60), || {
        tools.names(&["secrets", "-n", &ns]).iter().any(|s| s.starts_with("default-token-"))
    });
    let answered_json = backup("answered-json", ListEncoding::Auto, true);
    // Two pages of ConfigMaps and one of Secrets, each asked for once in protobuf.
    assert_eq!(REWRITTEN.load(Ordering::SeqCst), 3, "LISTs asked for in protobuf");
    // Each page read as the JSON it was answered in, not asked for again.
    assert_eq!(LISTS.load(Ordering::SeqCst), 3, "LISTs of configmaps and secrets");
    let asked_json = backup("asked-json", ListEncoding::Json, false);
    assert_eq!(REWRITTEN.load(Ordering::SeqCst), 3);
    let configmaps = answered_json.keys().filter(|k| k.starts_with("resources/configmaps/")).count();
    assert_eq!(configmaps, 700 + 1, "+ kube-root-ca.crt");
    assert!(answered_json == asked_json, "the two backups differ");
    tools.delete_namespace(&ns);
}
