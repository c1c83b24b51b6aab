//! Volume data (`--include-volumes`) on a real node: the project's image runs as mover Pods that
//! read a PersistentVolumeClaim's files to the S3 store through presigned URLs and write them back
//! into a new claim before the workloads that use it start. The claim is a hostPath
//! PersistentVolume (static provisioning; the node has no CSI driver). The checks compare what a
//! Pod sees in the volume, before and after: paths, types, modes, owners, mtimes, link counts,
//! SHA-256 of every file, symlink targets, and the holes of a sparse file.
//!
//! `./tests/run.sh --test volumes` runs just these.

use std::time::{Duration, Instant};

use serde_json::Value;

use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{Tools, ctrl_c, eventually, service_account_kubeconfig, unique, wait_until};
use kubectl_backup_e2e::node::{NodeCluster, busybox_image, start_one as start};

/// A hostPath PersistentVolume of class `manual`, kept when released (what static provisioning
/// looks like). Its data lives in `dir` on the host.
fn persistent_volume(name: &str, dir: &std::path::Path) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: manual
  hostPath: {{path: "{dir}", type: DirectoryOrCreate}}
"#,
        dir = dir.display()
    )
}

/// A namespace with claim `data` bound to `pv`, and a Deployment that says at start whether the
/// data is there (what a restore must guarantee: data first, then workloads).
fn workspace(ns: &str, pv: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: {ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: {pv}
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: {ns}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        command: [sh, -c, 'if [ -f /data/c/numbers.txt ]; then echo DATA-PRESENT; else echo DATA-MISSING; fi; exec sleep 100000']
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes:
      - name: data
        persistentVolumeClaim: {{claimName: data}}
"#
    )
}

/// 200 MiB of random files in nested directories, a compressible file with a set mtime, a
/// symlink, a dangling symlink, a hard link, a 64 MiB sparse file with one 4 KiB block of data,
/// a 0600 file owned by uid 1000 and a 0750 directory.
const WRITE: &str = r#"set -e
cd /data
mkdir -p a/b c
i=0
while [ $i -lt 50 ]; do head -c 4194304 /dev/urandom > a/f$i; i=$((i+1)); done
seq 1 200000 > c/numbers.txt
touch -t 202001020304.05 c/numbers.txt
ln -s a/f1 link
ln -s missing dangling
ln a/f2 c/hard
dd if=/dev/urandom of=sparse bs=4096 count=1 seek=16383 2>/dev/null
echo secret > private
chown 1000:1000 private
chmod 0600 private
chmod 0750 a/b
echo written"#;

/// One line per path: type, mode, owner, and for files size, link count, mtime and SHA-256; for
/// symlinks the target. Then the sparse file's allocated blocks.
const INVENTORY: &str = r#"cd /data
find . | sort | while read f; do
  case "$(stat -c %F "$f")" in
    "regular file"|"regular empty file") echo "$f|$(stat -c '%F|%a|%u|%g|%s|%h|%Y' "$f")|$(sha256sum < "$f" | cut -d' ' -f1)";;
    "symbolic link") echo "$f|$(stat -c '%F|%u|%g' "$f")|$(readlink "$f")";;
    *) echo "$f|$(stat -c '%F|%a|%u|%g' "$f")";;
  esac
done
echo "SPARSE-BLOCKS $(stat -c %b sparse)""#;

/// Runs `script` in a busybox Pod with claim `data` mounted at /data and returns its output.
fn in_pod(c: &NodeCluster, ns: &str, busybox: &str, script: &str) -> String {
    let name = unique("sh");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "sh", "image": busybox, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        }
    });
    c.t.pipe(&["create", "-f", "-"], &pod.to_string()).ok();
    // A failed read (an API server slow under load) is "not yet": the wait has its own limit.
    let phase = || c.t.kubectl(&["get", "pod", &name, "-n", ns, "-o", "jsonpath={.status.phase}"]).stdout;
    let ended = wait_until(Duration::from_secs(180), || matches!(phase().as_str(), "Succeeded" | "Failed"));
    let logs = c.t.kubectl(&["logs", "-n", ns, &name]).stdout;
    assert!(ended && phase() == "Succeeded", "pod {ns}/{name} ({}): {logs}\n{}", phase(), c.why(ns));
    c.t.kubectl(&["delete", "pod", "-n", ns, &name, "--wait=true"]).ok();
    logs
}

fn bound(t: &Tools, ns: &str) -> bool {
    t.kubectl(&["get", "pvc", "data", "-n", ns, "-o", "jsonpath={.status.phase}"]).stdout == "Bound"
}

/// The restored app's first words: whether the data was there when it started.
fn app_saw(c: &NodeCluster, ns: &str) -> String {
    c.wait_rollout(ns, "app");
    let mut out = String::new();
    eventually("the app's log", Duration::from_secs(30), || {
        out = c.t.kubectl(&["logs", "-n", ns, "deployment/app"]).stdout;
        !out.is_empty()
    });
    out
}

/// The start of a node test: the project's image and busybox on the node, and a namespace
/// `PREFIX-…` with claim `data` bound to a fresh hostPath volume and the app Deployment using it.
/// Returns (image, busybox, namespace).
fn bound_workspace(c: &NodeCluster, prefix: &str) -> (String, String, String) {
    let image = c.build_and_import_image().expect("the backup-webhook image");
    let busybox = busybox_image().expect("the busybox image");
    let ns = unique(prefix);
    let pv = format!("{ns}-a");
    c.t.apply(&persistent_volume(&pv, &c.dir.join(&pv))).ok();
    c.t.apply(&workspace(&ns, &pv, &busybox)).ok();
    eventually("the claim bound", Duration::from_secs(60), || bound(&c.t, &ns));
    (image, busybox, ns)
}

/// What is left of mover Pods and plan Secrets in `ns`.
fn movers_left(t: &Tools, ns: &str) -> Vec<String> {
    let mut left = t.names(&["pods", "-n", ns, "-l", "kubectl-backup.dev/mover"]);
    left.extend(t.names(&["secrets", "-n", ns, "-l", "kubectl-backup.dev/mover"]));
    left
}

#[test]
fn a_volume_is_backed_up_by_a_mover_pod_and_restored_before_its_workloads_with_owners_links_and_holes() {
    let (_one, c) = start("volumes");
    let t0 = Instant::now();
    let image = c.build_and_import_image().expect("the backup-webhook image");
    let busybox = busybox_image().expect("the busybox image");
    let ns = unique("vol");
    let pv = format!("{ns}-a");
    let pv_dir = c.dir.join(&pv);
    c.t.apply(&persistent_volume(&pv, &pv_dir)).ok();
    c.t.apply(&workspace(&ns, &pv, &busybox)).ok();
    eventually("the claim bound", Duration::from_secs(60), || bound(&c.t, &ns));
    assert_eq!(in_pod(&c, &ns, &busybox, WRITE).trim(), "written");
    let before = in_pod(&c, &ns, &busybox, INVENTORY);
    for line in
        ["./private|regular file|600|1000|1000|7|1|", "./link|symbolic link|0|0|a/f1", "./a/b|directory|750|0|0"]
    {
        assert!(before.contains(line), "{line:?} not in the inventory:\n{before}");
    }
    assert!(
        before.contains("|2|") && before.contains("./c/numbers.txt|regular file|644|0|0|1288895|1|1577934245|"),
        "{before}"
    );
    let sparse_blocks = |inv: &str| -> u64 {
        inv.lines().find_map(|l| l.strip_prefix("SPARSE-BLOCKS ")).expect("sparse blocks").trim().parse().unwrap()
    };
    assert!(sparse_blocks(&before) <= 16, "the source's sparse file is not sparse: {before}");
    // The app runs while the volume is backed up (the mover is placed on its node).
    c.wait_rollout(&ns, "app");
    eprintln!("[volumes] 200 MiB written {:.1?} after the start", t0.elapsed());

    // Back up: one mover Pod reads the claim, mounted read-only, while the app runs, at most
    // 40 MiB/s (`--mover-bandwidth`): the 200 MiB of files take 5 s at least. Meanwhile `describe`
    // shows the bytes moved (the mover's progress, read from its log by the plugin).
    let backup = unique("b");
    let mover = format!("--mover-image={image}");
    let paced = "--mover-bandwidth=40Mi";
    let started = Instant::now();
    let create = {
        let args = ["create", &backup, "-n", &ns, "--include-volumes", &mover, paced].map(String::from);
        let t = c.t.clone();
        std::thread::spawn(move || t.backup(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok())
    };
    let mut seen = Vec::new();
    while !create.is_finished() {
        let d = c.t.backup(&["describe", &backup, "-o", "json"]);
        if d.code == 0
            && let Some(v) = d.json()["status"]["progress"].get("volumeData").cloned()
        {
            seen.push(v);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    create.join().expect("the backup");
    let took = started.elapsed();
    eprintln!("[volumes] backed up in {took:.1?}, {:.1?} after the start; progress seen: {seen:?}", t0.elapsed());
    assert!(took >= Duration::from_secs(5), "200 MiB of files read faster than 40 MiB/s: {took:?}");
    let claim = format!("{ns}/data");
    assert!(
        seen.iter().any(|v| {
            let (done, total) = (v["bytesDone"].as_u64().unwrap_or(0), v["bytesTotal"].as_u64().unwrap_or(0));
            v["claim"] == claim.as_str() && done > 0 && done <= total && total > 200 << 20 && total < 280 << 20
        }),
        "describe never showed the volume's bytes moved of its total: {seen:?}"
    );
    let b = c.t.backup(&["describe", &backup, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "Completed", "{b}");
    let volumes = b["status"]["volumes"].as_array().expect("status.volumes");
    assert_eq!(volumes.len(), 1, "{b}");
    let v = &volumes[0];
    assert_eq!((v["namespace"].as_str(), v["claim"].as_str()), (Some(ns.as_str()), Some("data")));
    assert_eq!((v["volumeName"].as_str(), v["storageClass"].as_str()), (Some(pv.as_str()), Some("manual")));
    let tree = &v["tree"];
    // 50 random files, numbers.txt, sparse, private (the hard link is a link entry).
    assert_eq!(
        (tree["files"].as_u64(), tree["hardlinks"].as_u64(), tree["symlinks"].as_u64()),
        (Some(53), Some(1), Some(2)),
        "{v}"
    );
    let size = v["size"].as_u64().unwrap();
    assert!(size > 200 << 20 && size < 210 << 20, "random data does not compress: {size} bytes stored");
    let parts: u64 = v["parts"].as_array().unwrap().iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert_eq!(parts, size, "{v}");
    eventually("the mover Pod and its plan Secret gone", Duration::from_secs(60), || movers_left(&c.t, &ns).is_empty());

    // Lose everything: the namespace, the volume and its data. A new empty volume is available.
    c.t.delete_namespace(&ns);
    c.t.kubectl(&["delete", "pv", &pv, "--wait=true"]).ok();
    std::fs::remove_dir_all(&pv_dir).expect("removing the volume's data");
    let fresh = format!("{ns}-b");
    c.t.apply(&persistent_volume(&fresh, &c.dir.join(&fresh))).ok();

    // The preflight: a dry run says what would be written and which StorageClass is missing.
    let preview =
        c.t.backup(&["restore", &backup, "--dry-run", "--storage-class-mapping=manual:fast", "-o", "json"]).ok().json();
    let warnings = preview["status"]["warnings"].to_string();
    assert!(
        warnings.contains(&format!("StorageClass \\\"fast\\\" (of PersistentVolumeClaim {ns}/data) does not exist")),
        "{warnings}"
    );
    let would = preview["status"]["items"].as_array().unwrap().iter().find(|i| i["resource"] == "volume-data").cloned();
    assert_eq!(would.as_ref().map(|i| i["action"].clone()), Some("wouldCreate".into()), "{preview}");
    assert!(c.t.kubectl(&["get", "namespace", &ns]).code != 0, "the dry run created the namespace");

    // Restored at most 40 MiB/s too: 5 s at least for the files.
    let started = Instant::now();
    let restored = c.t.backup(&["restore", &backup, &mover, paced, "-o", "json"]).ok().json();
    let took = started.elapsed();
    eprintln!("[volumes] restored in {took:.1?}, {:.1?} after the start", t0.elapsed());
    assert!(took >= Duration::from_secs(5), "200 MiB of files written faster than 40 MiB/s: {took:?}");
    assert_eq!(restored["status"]["phase"], "Completed", "{restored}");
    let items = restored["status"]["items"].as_array().unwrap();
    let item = |resource: &str| {
        items.iter().find(|i| i["resource"] == resource).unwrap_or_else(|| panic!("no {resource} item: {restored}"))
    };
    assert_eq!(item("volume-data")["action"], "created", "{restored}");
    assert!(item("volume-data")["reason"].as_str().unwrap().starts_with("53 files"), "{restored}");
    // The old volume is not re-created: the claim binds to what the cluster has now.
    assert_eq!(item("persistentvolumes")["action"], "skippedPolicy", "{restored}");
    assert!(c.t.kubectl(&["get", "pv", &pv]).code != 0, "the backed-up PersistentVolume was re-created");
    assert_eq!(c.t.get_json(&["pvc", "data", "-n", &ns])["spec"]["volumeName"], fresh.as_str());
    assert_eq!(app_saw(&c, &ns).trim(), "DATA-PRESENT", "the app started before its data was restored");
    let after = in_pod(&c, &ns, &busybox, INVENTORY);
    assert_eq!(after, before, "the restored volume differs");
    assert!(movers_left(&c.t, &ns).is_empty(), "{:?}", movers_left(&c.t, &ns));

    // The same into a second namespace.
    let copy = unique("copy");
    let third = format!("{ns}-c");
    c.t.apply(&persistent_volume(&third, &c.dir.join(&third))).ok();
    let mapping = format!("--namespace-mapping={ns}:{copy}");
    let r = c.t.backup(&["restore", &backup, &mover, &mapping, "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    assert_eq!(c.t.get_json(&["pvc", "data", "-n", &copy])["spec"]["volumeName"], third.as_str());
    assert_eq!(in_pod(&c, &copy, &busybox, INVENTORY), before, "the copy differs");
    assert_eq!(app_saw(&c, &copy).trim(), "DATA-PRESENT");
    eprintln!("[volumes] test body took {:.1?}", t0.elapsed());
}

/// The in-cluster controller as `kubectl backup install` deploys it on the node (its image, its
/// ServiceAccount and RBAC): a BackupSchedule with `includeVolumes` has its claims read by mover
/// Pods of the webhook's own image (`--mover-image`, set by install), created as the admin's
/// `--volume-identity` — a ServiceAccount bound to a role that may create Pods and Secrets — and
/// the data comes back with the plugin.
#[test]
fn the_installed_controller_backs_up_a_schedules_volume_data_as_the_volume_identity() {
    let (_one, c) = start("incluster-volumes");
    let t0 = Instant::now();
    let (image, busybox, ns) = bound_workspace(&c, "vol");
    let write = "set -e; mkdir -p /data/c; seq 1 1000 > /data/c/numbers.txt; echo hello > /data/greeting; echo written";
    assert_eq!(in_pod(&c, &ns, &busybox, write).trim(), "written");
    c.wait_rollout(&ns, "app");

    // The controller's movers read at most 1 KiB of files a second: the claim's tar stream
    // (4 headers, 3.9 kB of numbers, the end) takes more than 5 s.
    install_with_volume_identity(&c, &image, &["--continuous=false", "--mover-bandwidth=1Ki"]);
    c.wait_rollout("kubectl-backup", "backup-webhook");
    eprintln!("[incluster-volumes] webhook Ready {:.1?} after the start", t0.elapsed());
    // A pre hook, run through pods/exec as the identity too.
    annotate_app(&c, &ns, &[(format!("{PRE}/command"), r#"["sh","-c","echo hook as identity"]"#)]);

    c.t.apply(&format!(
        "apiVersion: kubectl-backup.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: vols, namespace: kubectl-backup}}\nspec:\n  schedule: \"*/5 * * * * *\"\n  includedNamespaces: [{ns}]\n  includeVolumes: true\n"
    ))
    .ok();
    let schedule =
        || c.t.get_json(&["backupschedules.kubectl-backup.dev", "vols", "-n", "kubectl-backup"])["status"].clone();
    let mut s = Value::Null;
    let ran = wait_until(Duration::from_secs(240), || {
        s = schedule();
        s["lastResult"].is_string()
    });
    let pause = r#"{"spec":{"paused":true}}"#;
    c.t.kubectl(&[
        "patch",
        "backupschedules.kubectl-backup.dev",
        "vols",
        "-n",
        "kubectl-backup",
        "--type=merge",
        "-p",
        pause,
    ])
    .ok();
    let log = || c.t.kubectl(&["logs", "-n", "kubectl-backup", "deployment/backup-webhook", "--tail=40"]).stdout;
    assert!(ran, "the schedule did not run: {s}\n{}", log());
    eprintln!("[incluster-volumes] scheduled backup done {:.1?} after the start", t0.elapsed());
    assert_eq!(s["lastResult"], "Completed", "{s}\n{}\n{}", log(), c.why(&ns));
    let backup = s["lastBackup"].as_str().expect("lastBackup").to_string();
    let b = c.t.backup(&["describe", &backup, "-o", "json"]).ok().json();
    let v = &b["status"]["volumes"][0];
    assert_eq!((v["namespace"].as_str(), v["claim"].as_str()), (Some(ns.as_str()), Some("data")), "{b}");
    assert_eq!((v["tree"]["files"].as_u64(), v["tree"]["dirs"].as_u64()), (Some(2), Some(2)), "{v}");
    let ran_ms = v["durationMs"].as_u64().unwrap_or(0);
    assert!(ran_ms >= 5000, "the controller's mover ignored --mover-bandwidth=1Ki: it ran {ran_ms} ms\n{v}");
    assert_eq!(
        (v["hooks"][0]["exitCode"].as_i64(), v["hooks"][0]["output"].as_str()),
        (Some(0), Some("hook as identity")),
        "{v}"
    );
    eventually("the mover Pod and its plan Secret gone", Duration::from_secs(60), || movers_left(&c.t, &ns).is_empty());

    // The data, restored by the plugin into a second namespace.
    let copy = unique("copy");
    let fresh = format!("{ns}-b");
    c.t.apply(&persistent_volume(&fresh, &c.dir.join(&fresh))).ok();
    let mapping = format!("--namespace-mapping={ns}:{copy}");
    let r = c.t.backup(&["restore", &backup, &format!("--mover-image={image}"), &mapping, "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    assert_eq!(in_pod(&c, &copy, &busybox, "cat /data/greeting; wc -l < /data/c/numbers.txt").trim(), "hello\n1000");
    eprintln!("[incluster-volumes] test body took {:.1?}", t0.elapsed());
}

/// A continuous backup whose volume data is still moving at `--continuous-timeout` is not dropped
/// between the claim's hooks: its mover Pod ends at that deadline (its `activeDeadlineSeconds`),
/// the post hook lets the workload go, and the backup is committed PartiallyFailed naming the
/// claim, long before the move would have ended; no mover Pod or plan Secret is left.
#[test]
fn a_continuous_backup_past_its_timeout_ends_its_mover_and_lets_the_workload_go() {
    let (_one, c) = start("volume-timeout");
    let t0 = Instant::now();
    // 200 s of moving at the 1 KiB/s the movers are held to, 10 times the timeout.
    let (image, ns) = frozen_by_hooks(&c);
    // A second claim, bound and unused, after `data` in the order claims are read: its turn comes
    // once the time is up.
    let more = format!("{ns}-m");
    c.t.apply(&persistent_volume(&more, &c.dir.join(&more))).ok();
    let claim = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: more, namespace: {ns}}}\nspec: {{accessModes: [ReadWriteOnce], storageClassName: manual, volumeName: {more}, resources: {{requests: {{storage: 1Gi}}}}}}\n"
    );
    c.t.apply(&claim).ok();
    eventually("the second claim bound", Duration::from_secs(60), || {
        c.t.kubectl(&["get", "pvc", "more", "-n", &ns, "-o", "jsonpath={.status.phase}"]).stdout == "Bound"
    });
    install_with_volume_identity(&c, &image, &["--continuous=false", "--mover-bandwidth=1Ki"]);
    c.wait_rollout("kubectl-backup", "backup-webhook");
    // Continuous backups with volume data, 20 s each and not retried: the Deployment edited as an
    // admin would. At its start the controller backs up the workspace, which has no backup yet.
    let mut d = c.t.get_json(&["deployment", "backup-webhook", "-n", "kubectl-backup"]);
    let args = d["spec"]["template"]["spec"]["containers"][0]["args"].as_array_mut().expect("the webhook's args");
    args.retain(|a| a != "--continuous=false");
    for a in
        ["--continuous=true", "--continuous-include-volumes=true", "--continuous-timeout=20s", "--continuous-retries=0"]
    {
        args.push(a.into());
    }
    c.t.pipe(&["replace", "-f", "-"], &d.to_string()).ok();
    c.wait_rollout("kubectl-backup", "backup-webhook");
    let started = Instant::now();
    eprintln!("[volume-timeout] continuous backups on {:.1?} after the start", t0.elapsed());

    let prefix = format!("{ns}-");
    let mut b = Value::Null;
    let ended = wait_until(Duration::from_secs(150), || {
        let list = c.t.backup(&["list", "-o", "json"]).json();
        let items = list["items"].as_array().cloned().unwrap_or_default();
        b = items
            .into_iter()
            .find(|b| {
                b["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(&prefix))
                    && b["status"]["phase"].as_str().is_some_and(|p| p != "InProgress")
            })
            .unwrap_or(Value::Null);
        !b.is_null()
    });
    let log = || c.t.kubectl(&["logs", "-n", "kubectl-backup", "deployment/backup-webhook", "--tail=40"]).stdout;
    assert!(ended, "no continuous backup of {ns} ended within 150 s (the move takes 200 s)\n{}", log());
    eprintln!("[volume-timeout] backup ended {:.1?} after continuous backups began", started.elapsed());
    assert_eq!(b["status"]["phase"], "PartiallyFailed", "{b}\n{}", log());
    let errors = b["status"]["errors"].to_string();
    let want = format!("the data of PersistentVolumeClaim {ns}/data was not backed up: mover Pod {ns}/");
    assert!(errors.contains(&want) && errors.contains(", its deadline"), "{errors}");
    let later = format!(
        "the data of PersistentVolumeClaim {ns}/more was not backed up: the backup's time limit (20s) was up before it could be begun"
    );
    assert!(errors.contains(&later), "{errors}");
    eventually("the mover Pod and its plan Secret gone", Duration::from_secs(60), || movers_left(&c.t, &ns).is_empty());
    let ls = || c.t.kubectl(&["exec", "-n", &ns, "deployment/app", "--", "ls", "/data"]).ok().stdout;
    let data = ls();
    assert!(data.contains("thawed") && !data.contains("frozen"), "the post hook did not run: {data}");

    // The controller stopped (SIGTERM: the Deployment scaled to 0) while the next backup's mover
    // runs, far from its deadline (the timeout now 10 minutes): before it exits it deletes the
    // mover and runs the post hook, which lets the workload go.
    let mut d = c.t.get_json(&["deployment", "backup-webhook", "-n", "kubectl-backup"]);
    let args = d["spec"]["template"]["spec"]["containers"][0]["args"].as_array_mut().expect("the webhook's args");
    for a in args.iter_mut().filter(|a| *a == "--continuous-timeout=20s") {
        *a = "--continuous-timeout=10m".into();
    }
    c.t.pipe(&["replace", "-f", "-"], &d.to_string()).ok();
    c.wait_rollout("kubectl-backup", "backup-webhook");
    c.t.kubectl(&["-n", &ns, "create", "configmap", "changed", "--from-literal=a=b"]).ok();
    eventually("the next backup's mover running", Duration::from_secs(90), || mover_running(&c, &ns));
    assert!(ls().contains("frozen"), "the pre hook did not run: {}", ls());
    // Its log, followed to its end (the Pod is gone after).
    let log_path = c.dir.join("stopping-webhook.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let follow = ["logs", "-f", "-n", "kubectl-backup", "deployment/backup-webhook"];
    let mut follow = c.t.kubectl_command(&follow).stdout(log_file).spawn().expect("kubectl logs -f");
    std::thread::sleep(Duration::from_secs(2));
    c.t.kubectl(&["scale", "deployment", "backup-webhook", "-n", "kubectl-backup", "--replicas=0"]).ok();
    let stopping = Instant::now();
    eventually("the post hook run", Duration::from_secs(10), || ls().contains("thawed") && !ls().contains("frozen"));
    eprintln!("[volume-timeout] post hook run {:.1?} after the scale-down", stopping.elapsed());
    eventually("the mover gone", Duration::from_secs(60), || movers_left(&c.t, &ns).is_empty());
    eprintln!("[volume-timeout] mover gone {:.1?} after the scale-down", stopping.elapsed());
    let webhooks = || c.t.names(&["pods", "-n", "kubectl-backup", "-l", "app.kubernetes.io/name=backup-webhook"]);
    eventually("the webhook stopped", Duration::from_secs(60), || webhooks().is_empty());
    let _ = follow.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    assert!(log.contains("stopping: ending the runs that move volume data"), "{tail:?}");
    assert!(log.contains("backup-webhook stopped") && !log.contains("did not end in time"), "{tail:?}");
    eprintln!("[volume-timeout] test body took {:.1?}", t0.elapsed());
}

/// The first Ctrl-C during `create --include-volumes` ends the run cleanly: the mover Pod reading
/// the claim is deleted, the claim's post hook runs (the workload a pre hook froze is let go), the
/// backup is not committed and what it wrote is removed, and the plugin exits 130.
#[test]
fn ctrl_c_during_a_volume_backup_ends_the_mover_runs_the_post_hook_and_commits_nothing() {
    let (_one, c) = start("interrupt");
    let t0 = Instant::now();
    // 200 s of moving at 1 KiB/s: the mover is still reading when Ctrl-C comes.
    let (image, ns) = frozen_by_hooks(&c);
    let backup = unique("b");
    let mover = format!("--mover-image={image}");
    let ls = || c.t.kubectl(&["exec", "-n", &ns, "deployment/app", "--", "ls", "/data"]).ok().stdout;
    let files_under = |part: &str| -> Vec<String> {
        let out = std::process::Command::new("find").arg(&c.s3.root).args(["-path", part, "-type", "f"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap()
    };
    let own = format!("*/backups/{backup}/*");
    let args = ["create", &backup, "-n", &ns, "--include-volumes", &mover, "--mover-bandwidth=1Ki"];
    let (code, stderr) = interrupted(&c, &args, &ns, || {
        assert!(ls().contains("frozen"), "the pre hook did not run: {}", ls());
        assert!(!files_under(&own).is_empty(), "nothing written before the volume data");
    });
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr
            .contains("interrupted: stopping the backup: its LISTs end, a mover Pod is ended after its post hooks run"),
        "{stderr}"
    );
    let why = format!("error: interrupted: backup \"{backup}\" was not committed, and what it wrote was removed");
    assert!(stderr.contains(&why), "{stderr}");
    eventually("the mover Pod and its plan Secret gone", Duration::from_secs(30), || movers_left(&c.t, &ns).is_empty());
    let data = ls();
    assert!(data.contains("thawed") && !data.contains("frozen"), "the post hook did not run: {data}");
    assert!(c.t.backup(&["describe", &backup]).code != 0, "backup {backup} was committed");
    assert!(files_under(&own).is_empty(), "left in the store: {:?}", files_under(&own));

    // A restore stopped the same way: backed up in full, then restored into another namespace at
    // 1 KiB/s and sent SIGINT while its mover writes. The mover goes, and no further group is
    // begun: the Deployment, which comes after its claim's data, is not created.
    let done = unique("b");
    let r = c.t.backup(&["create", &done, "-n", &ns, "--include-volumes", &mover, "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    let copy = unique("copy");
    let fresh = format!("{ns}-b");
    c.t.apply(&persistent_volume(&fresh, &c.dir.join(&fresh))).ok();
    let mapping = format!("--namespace-mapping={ns}:{copy}");
    let args = ["restore", &done, &mover, &mapping, "--mover-bandwidth=1Ki"];
    let (code, stderr) = interrupted(&c, &args, &copy, || {});
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("error: interrupted: the restore stopped; what it created so far stays"), "{stderr}");
    eventually("the restore's mover gone", Duration::from_secs(60), || movers_left(&c.t, &copy).is_empty());
    let app = c.t.kubectl(&["get", "deployment", "app", "-n", &copy]);
    assert!(app.code != 0, "the stopped restore went on to the workloads: {}", app.stdout);
    assert_eq!(c.t.get_json(&["pvc", "data", "-n", &copy])["spec"]["volumeName"], fresh.as_str());
    eprintln!("[interrupt] test body took {:.1?}", t0.elapsed());
}

/// The start of a test of a move held up: [`bound_workspace`] whose claim holds 200 KiB of random
/// bytes (200 s at 1 KiB/s), and whose app's Pod has a pre hook that freezes it (`/data/frozen`)
/// and a post hook that lets it go (removes that, writes `/data/thawed`). Returns (image, namespace).
fn frozen_by_hooks(c: &NodeCluster) -> (String, String) {
    let (image, busybox, ns) = bound_workspace(c, "vol");
    let write = "set -e; head -c 204800 /dev/urandom > /data/blob; echo written";
    assert_eq!(in_pod(c, &ns, &busybox, write).trim(), "written");
    c.wait_rollout(&ns, "app");
    annotate_app(
        c,
        &ns,
        &[
            (format!("{PRE}/command"), r#"["sh","-c","touch /data/frozen"]"#),
            (format!("{POST}/command"), r#"["sh","-c","rm /data/frozen && touch /data/thawed"]"#),
        ],
    );
    (image, ns)
}

/// Whether a mover Pod runs in `ns`.
fn mover_running(c: &NodeCluster, ns: &str) -> bool {
    let pods = c.t.get_json(&["pods", "-n", ns, "-l", kubectl_backup_core::volume::MOVER_LABEL]);
    pods["items"].as_array().is_some_and(|p| p.iter().any(|p| p["status"]["phase"] == "Running"))
}

/// `kubectl backup ARGS`, sent SIGINT (Ctrl-C) once a mover Pod runs in `ns` and `meanwhile` has
/// checked what it checks; its exit code and standard error once it ended (within 60 s).
fn interrupted(c: &NodeCluster, args: &[&str], ns: &str, meanwhile: impl FnOnce()) -> (Option<i32>, String) {
    let mut meanwhile = Some(meanwhile);
    let mut ready = || {
        let running = mover_running(c, ns);
        if let Some(check) = meanwhile.take_if(|_| running) {
            check();
        }
        running
    };
    let (code, stderr, _) = ctrl_c(c.t.backup_command(args), ("the mover Pod running", &mut ready));
    (code, stderr)
}

/// `kubectl backup install` of `image` with `flags`, storing to the node cluster's S3 server, its
/// mover Pods acting as ServiceAccount kubectl-backup/mover, bound to what moving volume data
/// needs (docs/volumes.md).
fn install_with_volume_identity(c: &NodeCluster, image: &str, flags: &[&str]) {
    let identity = "--volume-identity=system:serviceaccount:kubectl-backup:mover";
    c.install(image, &[&[identity], flags].concat());
    // The identity the admin names, with what moving volume data needs (docs/volumes.md).
    c.t.apply(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: mover, namespace: kubectl-backup}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubectl-backup-mover}
rules:
- {apiGroups: [""], resources: [persistentvolumeclaims], verbs: [get]}
- {apiGroups: [""], resources: [pods], verbs: [get, list, create, delete]}
- {apiGroups: [""], resources: [secrets], verbs: [create, delete]}
- {apiGroups: [""], resources: [pods/exec], verbs: [get, create]}
- {apiGroups: [""], resources: [pods/log], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubectl-backup-mover}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubectl-backup-mover}
subjects: [{kind: ServiceAccount, name: mover, namespace: kubectl-backup}]
"#,
    )
    .ok();
}

/// In an encrypted location, a volume's parts are encrypted too, to a key of the volume's own that
/// the backup keeps sealed to the location's recipients (the mover never sees them): every part in
/// the store is an age file; a restore without the identity is refused before anything is created;
/// with it, the files come back.
#[test]
fn encrypted_volume_data_is_stored_as_age_files_and_restored_with_the_identity() {
    let (_one, c) = start("encrypted-volumes");
    let (image, busybox, ns) = bound_workspace(&c, "vol");
    let write =
        "set -e; mkdir -p /data/c; seq 1 100000 > /data/c/numbers.txt; echo secret > /data/greeting; echo written";
    assert_eq!(in_pod(&c, &ns, &busybox, write).trim(), "written");
    c.wait_rollout(&ns, "app");
    let key = c.dir.join("team.key");
    let out = std::process::Command::new("age-keygen").arg("-o").arg(&key).output().expect("age-keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&key).unwrap();
    let public = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().trim().to_string();

    let backup = unique("b");
    let mover = format!("--mover-image={image}");
    c.t.backup(&["create", &backup, "-n", &ns, "--include-volumes", &mover, "--encrypt-to", &public]).ok();
    let b = c.t.backup(&["describe", &backup, "-o", "json"]).ok().json();
    let v = &b["status"]["volumes"][0];
    assert_eq!(v["key"]["encryption"]["recipients"], serde_json::json!([public]), "{v}");
    let own = v["parts"][0]["encryption"]["recipients"][0].as_str().expect("the parts' recipient").to_string();
    assert!(own.starts_with("age1") && own != public, "{v}");
    // Every part in the store (s3s-fs keeps objects as files) is an age file.
    let parts: Vec<std::path::PathBuf> = std::process::Command::new("find")
        .arg(&c.s3.root)
        .args(["-name", "volume-*.tar.zst", "-type", "f"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(std::path::PathBuf::from).collect())
        .unwrap();
    assert_eq!(parts.len(), v["parts"].as_array().unwrap().len(), "{parts:?}");
    for p in &parts {
        let head = std::fs::read(p).unwrap();
        assert!(head.starts_with(b"age-encryption.org/v1\n"), "{} is not an age file", p.display());
    }

    // Without the identity: refused before anything is created.
    let copy = unique("copy");
    let mapping = format!("--namespace-mapping={ns}:{copy}");
    let r = c.t.backup(&["restore", &backup, &mover, &mapping]);
    assert!(r.code != 0 && r.stderr.contains("pass --identity FILE"), "{}", r.stderr);
    assert!(c.t.kubectl(&["get", "namespace", &copy]).code != 0, "the refused restore created the namespace");
    // With it: the data comes back.
    let fresh = format!("{ns}-b");
    c.t.apply(&persistent_volume(&fresh, &c.dir.join(&fresh))).ok();
    let identity = format!("--identity={}", key.display());
    let r = c.t.backup(&["restore", &backup, &mover, &mapping, &identity, "-o", "json"]).ok().json();
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    assert_eq!(in_pod(&c, &copy, &busybox, "cat /data/greeting; wc -l < /data/c/numbers.txt").trim(), "secret\n100000");
}

/// An incremental backup with volume data whose commit is undone takes its volume data with it.
/// The commit is held 8 s at a proxy in front of the node's store (well inside the run's lease),
/// and meanwhile the test removes every pack, what a collection that ignored the lease would do.
/// Once the commit returns the run finds a pack it references gone and undoes the commit, the
/// way `kubectl backup delete` removes a backup: the volume parts the movers uploaded go too
/// (before, only the commit document went, and the parts stayed behind).
#[test]
fn an_undone_commit_takes_the_volume_data_the_movers_uploaded_with_it() {
    use kubectl_backup_e2e::fault_proxy::{Fault, FaultProxy};

    let (_one, c) = start("undone-volumes");
    let (image, busybox, ns) = bound_workspace(&c, "vol");
    assert_eq!(in_pod(&c, &ns, &busybox, "echo kept > /data/greeting; echo written").trim(), "written");
    c.wait_rollout(&ns, "app");
    // The proxy listens where the movers reach the store: the host's end of the node network.
    let endpoint = |env: &[(String, String)]| {
        env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL").map(|(_, v)| v.clone()).expect("AWS_ENDPOINT_URL")
    };
    let store_url = endpoint(&c.s3.info.env);
    let host: std::net::Ipv4Addr = store_url.trim_start_matches("http://").split(':').next().unwrap().parse().unwrap();
    let fault = Fault::StallFrom { method: "PUT", path_ends: "/metadata.json", secs: 8 };
    let proxy = FaultProxy::start_on(host, c.s3.info.port, fault).unwrap();
    let mut t = c.t.clone();
    for (k, v) in &mut t.env {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://{host}:{}", proxy.port());
        }
    }
    let backup = unique("b");
    let create = {
        let args =
            ["create", &backup, "-n", &ns, "--incremental", "--include-volumes", &format!("--mover-image={image}")]
                .map(String::from);
        std::thread::spawn(move || t.backup(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    eventually("the commit to be held", Duration::from_secs(300), || proxy.resets() == 1);
    let files_under = |part: &str| -> Vec<std::path::PathBuf> {
        let out = std::process::Command::new("find").arg(&c.s3.root).args(["-path", part, "-type", "f"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(std::path::PathBuf::from).collect()).unwrap()
    };
    let own = format!("*/backups/{backup}/*");
    let parts: Vec<_> = files_under(&own).into_iter().filter(|p| p.to_string_lossy().contains("/volume-")).collect();
    assert!(!parts.is_empty(), "no volume part was uploaded by the commit: {:?}", files_under(&own));
    let packs = files_under("*/packs/*");
    assert!(packs.len() >= 2, "{packs:?}");
    for p in &packs {
        std::fs::remove_file(p).unwrap();
    }
    let run = create.join().unwrap();
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("which backup \"{backup}\" references, was removed while it ran"))
            && run.stderr.contains("the backup is not kept (run it again)"),
        "{}",
        run.stderr
    );
    assert!(files_under(&own).is_empty(), "the undone backup left files: {:?}", files_under(&own));
    drop(proxy);
    let listed = c.t.backup(&["list", "-o", "json"]).ok();
    assert!(listed.json()["items"].as_array().unwrap().is_empty(), "{}", listed.stdout);
    assert!(!listed.stderr.contains(&backup), "{}", listed.stderr);
}

/// The shared control plane (no node): a claim bound to a volume, and a user who may read
/// everything in the namespace but not create Pods.
#[test]
fn a_user_who_may_not_create_pods_gets_the_volume_reported_not_skipped() {
    let env = SharedEnv::load().expect("shared environment");
    let admin = Tools::new(&env.cluster).with_store(&env.s3, &unique("vol-rbac"));
    let ns = unique("vol-rbac");
    let pv = format!("{ns}-pv");
    let dir = env.scratch.join(&pv);
    admin.apply(&persistent_volume(&pv, &dir)).ok();
    admin.apply(&workspace(&ns, &pv, "busybox")).ok();
    eventually("the claim bound", Duration::from_secs(60), || bound(&admin, &ns));
    admin
        .apply(&format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {ns}-reader}}
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ns}-reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ns}-reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]
"#
        ))
        .ok();
    let kubeconfig = service_account_kubeconfig(&admin, &env.cluster, &env.scratch, &ns, "reader");
    let reader = admin.as_user(&kubeconfig);
    let backup = unique("b");
    let r = reader.backup(&["create", &backup, "-n", &ns, "--include-volumes", "--mover-image=unused:1"]);
    let b = admin.backup(&["describe", &backup, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "PartiallyFailed", "{b}\n{}", r.stderr);
    let errors: Vec<&str> = b["status"]["errors"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let want = format!(
        "the data of PersistentVolumeClaim {ns}/data was not backed up: cannot create the mover Pod in namespace {ns:?}"
    );
    assert!(errors.iter().any(|e| e.starts_with(&want) && e.contains("forbidden")), "{errors:?}");
    assert!(b["status"].get("volumes").is_none(), "{b}");
    assert!(admin.names(&["pods", "-n", &ns, "-l", "kubectl-backup.dev/mover"]).is_empty());
    assert!(r.code != 0, "a partly failed backup exits 0: {}", r.stderr);

    // A bandwidth that is none, or not a quantity: refused, naming the flag, before anything is written.
    for (value, why) in [("0", "\"0\" is no bandwidth"), ("fast", "cannot read \"fast\" as bytes per second")] {
        let name = unique("b");
        let bandwidth = format!("--mover-bandwidth={value}");
        let r = admin.backup(&["create", &name, "-n", &ns, "--include-volumes", &bandwidth]);
        let flag = format!("invalid value '{value}' for '--mover-bandwidth <QUANTITY>': {why}");
        assert!(r.code == 2 && r.stderr.contains(&flag), "{}", r.stderr);
        assert!(admin.backup(&["describe", &name]).code != 0, "backup {name} was written");
    }

    // A local directory cannot be reached by Pods: refused before anything is written.
    let local = env.scratch.join(unique("local"));
    let plain = Tools::new(&env.cluster);
    let to_local = format!("file://{}", local.display());
    let r = plain.backup(&["create", &unique("b"), "-n", &ns, "--include-volumes", "--location", &to_local]);
    assert!(r.code != 0 && r.stderr.contains("cannot reach a local directory"), "{}", r.stderr);
    assert!(!local.join("backups").exists(), "something was written to {}", local.display());
    admin.delete_namespace(&ns);
    admin.kubectl(&["delete", "pv", &pv]).ok();
    admin.kubectl(&["delete", "clusterrole,clusterrolebinding", &format!("{ns}-reader")]).ok();
}

/// Sets annotations on the app's running Pod; returns its name.
fn annotate_app(c: &NodeCluster, ns: &str, annotations: &[(String, &str)]) -> String {
    let pod = c.t.names(&["pods", "-n", ns, "-l", "app=app"]).pop().expect("the app's Pod");
    let mut args = vec!["annotate".to_string(), "--overwrite".into(), "-n".into(), ns.into(), format!("pod/{pod}")];
    args.extend(annotations.iter().map(|(k, v)| format!("{k}={v}")));
    c.t.kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    pod
}

const PRE: &str = "pre.hook.backup.kubectl-backup.dev";
const POST: &str = "post.hook.backup.kubectl-backup.dev";

#[test]
fn hooks_run_in_the_workload_around_the_read_and_a_failing_one_fails_or_partly_fails_the_backup() {
    let (_one, c) = start("hooks");
    let (image, busybox, ns) = bound_workspace(&c, "hooks");
    c.wait_rollout(&ns, "app");
    let mover = format!("--mover-image={image}");

    // The pre hook writes a marker the mover must see; the post hook removes it again.
    let pod = annotate_app(
        &c,
        &ns,
        &[
            (format!("{PRE}/command"), r#"["sh","-c","echo frozen > /data/hook-marker; echo pre ran"]"#),
            (format!("{POST}/command"), r#"["sh","-c","rm -f /data/hook-marker; echo post ran"]"#),
        ],
    );
    let backup = unique("b");
    c.t.backup(&["create", &backup, "-n", &ns, "--include-volumes", &mover]).ok();
    let b = c.t.backup(&["describe", &backup, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "Completed", "{b}");
    let hooks = b["status"]["volumes"][0]["hooks"].as_array().expect("hooks recorded");
    let seen: Vec<(&str, i64, &str)> = hooks
        .iter()
        .map(|h| (h["when"].as_str().unwrap(), h["exitCode"].as_i64().unwrap(), h["output"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("pre", 0, "pre ran"), ("post", 0, "post ran")], "{b}");
    let text = c.t.backup(&["describe", &backup]).ok().stdout;
    assert!(
        text.contains(&format!(
            "pre hook [\"sh\", \"-c\", \"echo frozen > /data/hook-marker; echo pre ran\"] in {pod}/app: exit code 0"
        )) && text.contains("| post ran"),
        "{text}"
    );
    assert_eq!(in_pod(&c, &ns, &busybox, "ls /data"), "", "the post hook did not run after the read");
    // The backup holds what the volume was between the hooks.
    let copy = unique("copy");
    let other = format!("{ns}-b");
    c.t.apply(&persistent_volume(&other, &c.dir.join(&other))).ok();
    c.t.backup(&["restore", &backup, &mover, &format!("--namespace-mapping={ns}:{copy}")]).ok();
    assert_eq!(in_pod(&c, &copy, &busybox, "cat /data/hook-marker").trim(), "frozen");

    // A pre hook that fails, on-error Fail (the default): no backup, and why; the post hook ran.
    let failing = r#"["sh","-c","echo cannot freeze >&2; exit 3"]"#;
    annotate_app(&c, &ns, &[(format!("{PRE}/command"), failing)]);
    in_pod(&c, &ns, &busybox, "echo x > /data/hook-marker");
    let failed = unique("b");
    let r = c.t.backup(&["create", &failed, "-n", &ns, "--include-volumes", &mover]);
    let want = format!(
        "Pre hook [\"sh\", \"-c\", \"echo cannot freeze >&2; exit 3\"] in Pod {ns}/{pod} (container app) exited with code 3: cannot freeze (on-error: Fail)"
    );
    assert!(r.code != 0 && r.stderr.contains(&want), "{}\n{}", r.stdout, r.stderr);
    let d = c.t.backup(&["describe", &failed]);
    assert!(d.code != 0 && d.stderr.contains("not found") && !d.stderr.contains("left files"), "{}", d.stderr);
    assert_eq!(in_pod(&c, &ns, &busybox, "ls /data"), "", "the post hook did not run after the failed pre hook");

    // The same with on-error Continue: the data is backed up, the backup is PartiallyFailed and says why.
    annotate_app(&c, &ns, &[(format!("{PRE}/on-error"), "Continue")]);
    let partial = unique("b");
    let r = c.t.backup(&["create", &partial, "-n", &ns, "--include-volumes", &mover]);
    assert!(r.code != 0, "a partly failed backup exits 0");
    let b = c.t.backup(&["describe", &partial, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "PartiallyFailed", "{b}");
    let errors = b["status"]["errors"].to_string();
    assert!(errors.contains("exited with code 3: cannot freeze (on-error: Continue)"), "{errors}");
    assert_eq!(b["status"]["volumes"][0]["hooks"][0]["exitCode"], 3, "{b}");
    assert_eq!(b["status"]["volumes"][0]["tree"]["files"], 0, "{b}");
}

/// The CSI snapshotter's part, played by the test (a test double: no CSI driver runs here). For
/// each VolumeSnapshot not ready: a dynamic one gets a VolumeSnapshotContent with a new handle; a
/// pre-provisioned one gets its content's handle; both are marked ready and bound. A
/// pre-provisioned content gets its handle and `readyToUse` (after a finalizer when its deletion
/// policy is Delete, as the sidecar's); one being deleted with that finalizer has its handle
/// "deleted from the storage system" (pushed to `deleted`) and the finalizer removed.
fn snapshot_controller(
    t: Tools,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    deleted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    const FINALIZER: &str = "test.csi.kubectl-backup.dev/snapshot";
    use std::sync::atomic::Ordering;
    let status = |what: &str, ns: Option<&str>, body: Value| {
        let mut args = vec!["patch", what, "--subresource=status", "--type=merge", "-p"];
        let body = body.to_string();
        args.push(&body);
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        // Failures are retried on the next round, as a controller would.
        t.kubectl(&args);
    };
    let get = |args: &[&str]| -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend(["-o", "json"]);
        serde_json::from_str(&t.kubectl(&a).stdout).unwrap_or(Value::Null)
    };
    while !stop.load(Ordering::Relaxed) {
        let contents = get(&["volumesnapshotcontents.snapshot.storage.k8s.io"]);
        for c in contents["items"].as_array().into_iter().flatten() {
            let handle = c["spec"]["source"]["snapshotHandle"].as_str().or(c["status"]["snapshotHandle"].as_str());
            let (Some(name), Some(handle)) = (c["metadata"]["name"].as_str(), handle) else {
                continue;
            };
            let what = format!("volumesnapshotcontent.snapshot.storage.k8s.io/{name}");
            let ours = c["metadata"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|f| f == FINALIZER));
            if c["metadata"]["deletionTimestamp"].is_string() {
                if ours {
                    // Retain: the object goes, the snapshot stays.
                    if c["spec"]["deletionPolicy"] == "Delete" {
                        deleted.lock().unwrap().push(handle.to_string());
                    }
                    t.kubectl(&["patch", &what, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
                }
                continue;
            }
            if c["spec"]["deletionPolicy"] == "Delete" && !ours {
                let body = serde_json::json!({"metadata": {"finalizers": [FINALIZER]}}).to_string();
                t.kubectl(&["patch", &what, "--type=merge", "-p", &body]);
            }
            if c["status"]["readyToUse"] != true {
                status(&what, None, serde_json::json!({"status": {"snapshotHandle": handle, "readyToUse": true}}));
            }
        }
        let list = get(&["volumesnapshots.snapshot.storage.k8s.io", "-A"]);
        for s in list["items"].as_array().into_iter().flatten() {
            if s["status"]["readyToUse"] == true {
                continue;
            }
            let (ns, name, uid) = (
                s["metadata"]["namespace"].as_str().unwrap(),
                s["metadata"]["name"].as_str().unwrap(),
                s["metadata"]["uid"].as_str().unwrap(),
            );
            let class = s["spec"]["volumeSnapshotClassName"].as_str().unwrap_or_default();
            let (content, handle) = match s["spec"]["source"]["volumeSnapshotContentName"].as_str() {
                Some(content) => {
                    let c = get(&["volumesnapshotcontents.snapshot.storage.k8s.io", content]);
                    let Some(handle) = c["spec"]["source"]["snapshotHandle"].as_str() else { continue };
                    (content.to_string(), handle.to_string())
                }
                None => {
                    let content = format!("snapcontent-{uid}");
                    let claim = s["spec"]["source"]["persistentVolumeClaimName"].as_str().unwrap();
                    // Already there after a failed round: fine.
                    t.pipe(
                        &["create", "-f", "-"],
                        &serde_json::json!({
                        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                        "metadata": {"name": content, "finalizers": [FINALIZER]},
                        "spec": {"deletionPolicy": "Delete", "driver": CSI_DRIVER, "volumeSnapshotClassName": class,
                                 "source": {"volumeHandle": format!("vol-{ns}-{claim}")},
                                 "volumeSnapshotRef": {"namespace": ns, "name": name, "uid": uid}}})
                        .to_string(),
                    );
                    (content, format!("snap-{uid}"))
                }
            };
            status(
                &format!("volumesnapshotcontent.snapshot.storage.k8s.io/{content}"),
                None,
                serde_json::json!({"status": {"snapshotHandle": handle, "readyToUse": true, "restoreSize": 1073741824}}),
            );
            status(
                &format!("volumesnapshot.snapshot.storage.k8s.io/{name}"),
                Some(ns),
                serde_json::json!({"status": {"boundVolumeSnapshotContentName": content, "readyToUse": true, "restoreSize": "1Gi"}}),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

const CSI_DRIVER: &str = "test.csi.kubectl-backup.dev";

/// A StorageClass of the test driver and a default VolumeSnapshotClass for it; a PersistentVolume
/// of that class; a StorageClass of another driver with no VolumeSnapshotClass.
fn csi_classes(suffix: &str, pv_dir: &std::path::Path) -> String {
    format!(
        r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: csi-{suffix}}}
provisioner: {CSI_DRIVER}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: plain-{suffix}}}
provisioner: other.example.org
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-snap-{suffix}
  annotations: {{snapshot.storage.kubernetes.io/is-default-class: "true"}}
driver: {CSI_DRIVER}
deletionPolicy: Delete
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: csi-{suffix}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: csi-{suffix}
  hostPath: {{path: "{dir}", type: DirectoryOrCreate}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: plain-{suffix}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: plain-{suffix}
  hostPath: {{path: "{dir}-plain", type: DirectoryOrCreate}}
"#,
        dir = pv_dir.display()
    )
}

/// `--volume-method snapshot` at the API level, with the real external-snapshotter CRDs (1.20
/// ignores their CEL `x-kubernetes-validations`, a 1.25 feature: they are not enforced here) and
/// the test's snapshot controller. Its own control plane: the CRDs would change what other tests'
/// cluster-wide backups find.
#[test]
fn csi_snapshots_are_taken_recorded_and_restored_as_the_claims_data_source() {
    let c = kubectl_backup_e2e::fixtures::OwnCluster::start("csi");
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/crds/snapshot.storage.k8s.io");
    // kubectl's client-side validation knows the 1.20 schema, which lacks the field; the server drops it.
    c.t.kubectl(&["apply", "--validate=false", "-f", crds]).ok();
    for crd in ["volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"] {
        kubectl_backup_e2e::fixtures::wait_crd(&c.t, &format!("{crd}.snapshot.storage.k8s.io"));
    }
    let suffix = unique("t");
    c.t.apply(&csi_classes(&suffix, &c.dir.join("pv"))).ok();
    let ns = unique("csi");
    c.t.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: csi-{suffix}
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: other, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: plain-{suffix}
  resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
    .ok();
    eventually("the claims bound", Duration::from_secs(60), || {
        bound(&c.t, &ns) && c.t.get_json(&["pvc", "other", "-n", &ns])["status"]["phase"] == "Bound"
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deleted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let controller = {
        let (t, stop, deleted) = (c.t.clone(), stop.clone(), deleted.clone());
        std::thread::spawn(move || snapshot_controller(t, stop, deleted))
    };

    // "other" is of a driver with no VolumeSnapshotClass: the error names it, and the backup holds
    // the rest (PartiallyFailed).
    let backup = unique("b");
    let r = c.t.backup(&["create", &backup, "-n", &ns, "--volume-method", "snapshot"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let b = c.t.backup(&["describe", &backup, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "PartiallyFailed", "{b}");
    let want = format!(
        "the data of PersistentVolumeClaim {ns}/other was not backed up: no VolumeSnapshotClass has driver \"other.example.org\" (the provisioner of StorageClass \"plain-{suffix}\")"
    );
    assert_eq!(b["status"]["errors"], serde_json::json!([want]), "{b}");
    let volumes = b["status"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{b}");
    let v = &volumes[0];
    assert_eq!((v["claim"].as_str(), v["format"].as_str()), (Some("data"), Some("csi-snapshot")), "{b}");
    let handle = v["snapshot"]["handle"].as_str().expect("a snapshot handle").to_string();
    assert!(handle.starts_with("snap-"), "{v}");
    let class = format!("csi-snap-{suffix}");
    assert_eq!(
        (v["snapshot"]["driver"].as_str(), v["snapshot"]["class"].as_str()),
        (Some(CSI_DRIVER), Some(class.as_str()))
    );
    assert!(v.get("parts").is_none_or(|p| p.as_array().unwrap().is_empty()), "{v}");
    // The snapshot outlives the VolumeSnapshot: its content is kept (Retain), labelled with the
    // backup, and is what deleting the backup deletes.
    assert!(c.t.names(&["volumesnapshots.snapshot.storage.k8s.io", "-n", &ns]).is_empty());
    let kept = c.t.get_json(&[
        "volumesnapshotcontents.snapshot.storage.k8s.io",
        "-l",
        &format!("kubectl-backup.dev/snapshot-of={backup}"),
    ]);
    let kept = kept["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        (kept[0]["spec"]["deletionPolicy"].as_str(), kept[0]["status"]["snapshotHandle"].as_str()),
        (Some("Retain"), Some(handle.as_str()))
    );
    assert_eq!(v["snapshot"]["content"], kept[0]["metadata"]["name"], "{v}");
    let text = c.t.backup(&["describe", &backup]).ok().stdout;
    assert!(
        text.contains(&format!("{ns}/data: CSI snapshot {handle} (driver {CSI_DRIVER}, VolumeSnapshotClass {class})")),
        "{text}"
    );

    // The preflight names a VolumeSnapshotClass the target cluster lacks.
    c.t.kubectl(&["delete", "volumesnapshotclass.snapshot.storage.k8s.io", &class]).ok();
    let preview = c.t.backup(&["restore", &backup, "--dry-run", "-o", "json"]).ok().json();
    let warnings = preview["status"]["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "VolumeSnapshotClass \\\"{class}\\\" (of PersistentVolumeClaim {ns}/data) does not exist in the target cluster"
        )),
        "{warnings}"
    );
    c.t.apply(&csi_classes(&suffix, &c.dir.join("pv"))).ok();

    // Restore into a new namespace: snapshot re-created from the handle, claim provisioned from it.
    let copy = unique("copy");
    let restored =
        c.t.backup(&["restore", &backup, &format!("--namespace-mapping={ns}:{copy}"), "-o", "json"]).ok().json();
    assert_eq!(restored["status"]["phase"], "Completed", "{restored}");
    let pvc = c.t.get_json(&["pvc", "data", "-n", &copy]);
    let source = &pvc["spec"]["dataSource"];
    assert_eq!(
        (source["apiGroup"].as_str(), source["kind"].as_str()),
        (Some("snapshot.storage.k8s.io"), Some("VolumeSnapshot")),
        "{pvc}"
    );
    assert!(pvc["spec"].get("volumeName").is_none(), "{pvc}");
    let snapshot =
        c.t.get_json(&["volumesnapshot.snapshot.storage.k8s.io", source["name"].as_str().unwrap(), "-n", &copy]);
    let content =
        snapshot["spec"]["source"]["volumeSnapshotContentName"].as_str().expect("pre-provisioned").to_string();
    let content = c.t.get_json(&["volumesnapshotcontent.snapshot.storage.k8s.io", &content]);
    assert_eq!(content["spec"]["source"]["snapshotHandle"], handle.as_str(), "{content}");
    assert_eq!(
        (content["spec"]["deletionPolicy"].as_str(), content["spec"]["driver"].as_str()),
        (Some("Retain"), Some(CSI_DRIVER))
    );
    eventually("the re-created snapshot ready", Duration::from_secs(30), || {
        c.t.get_json(&["volumesnapshot.snapshot.storage.k8s.io", source["name"].as_str().unwrap(), "-n", &copy])["status"]
            ["readyToUse"]
            == true
    });

    // While the restored snapshot uses it, the backup's snapshot is not deleted, nor the backup.
    let restored_content = content["metadata"]["name"].as_str().unwrap().to_string();
    let r = c.t.backup(&["delete", &backup, "-y"]);
    assert!(
        r.code != 0
            && r.stderr.contains(&format!(
                "VolumeSnapshotContent {restored_content} (a restored snapshot?) uses the same snapshot"
            )),
        "{}",
        r.stderr
    );
    assert!(deleted.lock().unwrap().is_empty());
    c.t.delete_namespace(&copy);
    c.t.kubectl(&["delete", "volumesnapshotcontent.snapshot.storage.k8s.io", &restored_content]).ok();

    // Deleting the backup deletes its snapshot in the storage system first (its content set to
    // deletionPolicy Delete, which the snapshotter acts on), then the backup.
    let r = c.t.backup(&["delete", &backup, "-y"]).ok();
    assert!(r.stdout.contains(&format!("deleted CSI snapshot {handle} of backup \"{backup}\"")), "{}", r.stdout);
    assert_eq!(*deleted.lock().unwrap(), vec![handle.clone()], "the snapshot was not deleted in the storage system");
    assert!(c.t.names(&["volumesnapshotcontents.snapshot.storage.k8s.io"]).is_empty());
    assert!(c.t.backup(&["describe", &backup]).stderr.contains("not found"));

    // Someone who may not create VolumeSnapshotContents: the backup is kept, and says why; with
    // --keep-snapshots it is deleted and its snapshot left alone.
    let second = unique("b");
    c.t.backup(&["create", &second, "-n", &ns, "--volume-method", "snapshot"]);
    let b = c.t.backup(&["describe", &second, "-o", "json"]).ok().json();
    let kept = b["status"]["volumes"][0]["snapshot"]["handle"].as_str().expect("a handle").to_string();
    let bob = c.t.as_user(&c.cp.info.user("bob").kubeconfig);
    let r = bob.backup(&["delete", &second, "-y"]);
    assert!(
        r.code != 0
            && r.stderr.contains(&format!("backup \"{second}\" is kept: cannot delete CSI snapshot {kept}"))
            && r.stderr.contains("User \"bob\" cannot get resource \"volumesnapshotcontents\""),
        "{}",
        r.stderr
    );
    assert_eq!(c.t.backup(&["describe", &second, "-o", "json"]).ok().json()["metadata"]["name"], second.as_str());
    let r = bob.backup(&["delete", &second, "-y", "--keep-snapshots"]).ok();
    assert!(r.stderr.contains("CSI snapshot(s) of backup") && r.stderr.contains("--keep-snapshots"), "{}", r.stderr);
    assert!(c.t.backup(&["describe", &second]).stderr.contains("not found"));
    assert_eq!(deleted.lock().unwrap().len(), 1, "--keep-snapshots deleted a snapshot");

    // Expiry by the installed controller (its ServiceAccount and RBAC): the snapshot of an expired
    // backup is deleted, then the backup.
    let webhook = c.webhook("kubectl-backup", &["--continuous=false", "--gc-interval=2s"]);
    let expiring = unique("b");
    // What create prints: the backup may be expired and swept before anything else reads it.
    let r = c.t.backup(&["create", &expiring, "-n", &ns, "--volume-method", "snapshot", "--ttl", "1s", "-o", "json"]);
    let b: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let expired = b["status"]["volumes"][0]["snapshot"]["handle"].as_str().expect("a handle").to_string();
    let gone =
        wait_until(Duration::from_secs(90), || c.t.backup(&["describe", &expiring]).stderr.contains("not found"));
    assert!(gone, "the expired backup was not deleted\n{}", webhook.log());
    eventually("the expired backup's snapshot deleted", Duration::from_secs(30), || {
        deleted.lock().unwrap().last() == Some(&expired)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    controller.join().unwrap();
}
