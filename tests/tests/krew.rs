//! The krew plugin manifest (`krew-manifest.yaml`) and the release script that fills it
//! (`scripts/release.sh`): the manifest has the shape krew accepts, and the sha256 the script writes
//! is the archive's, whose `bin` is the working plugin.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use kubectl_backup_e2e::fixtures::plugin_path;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Plugin {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    version: String,
    homepage: String,
    short_description: String,
    description: String,
    caveats: String,
    platforms: Vec<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    selector: Selector,
    uri: String,
    sha256: String,
    bin: String,
    files: Vec<FileOperation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    match_labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    from: String,
    to: String,
}

impl Platform {
    fn os_arch(&self) -> (String, String) {
        let label = |k: &str| self.selector.match_labels.get(k).cloned().unwrap_or_default();
        (label("os"), label("arch"))
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn parse(path: &Path) -> Plugin {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not a krew Plugin: {e}", path.display()))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// This machine as krew names it.
fn host() -> (String, String) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (os.to_string(), arch.to_string())
}

fn archive_name(os: &str, arch: &str) -> String {
    format!("kubectl-backup_{VERSION}_{os}_{arch}.tar.gz")
}

/// Everything krew and our release process need from a manifest.
fn assert_valid(p: &Plugin) {
    assert_eq!(p.api_version, "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(p.kind, "Plugin");
    assert_eq!(p.metadata.name, "backup", "the plugin is `kubectl backup`");
    assert_eq!(p.spec.version, format!("v{VERSION}"), "krew versions are v + the workspace version");
    assert!(p.spec.homepage.starts_with("https://github.com/kubectl-backup/"), "{}", p.spec.homepage);
    assert!(!p.spec.short_description.is_empty() && p.spec.short_description.len() <= 60);
    assert!(p.spec.description.len() > p.spec.short_description.len());
    // The central index has another `backup`: the caveats say where this one comes from.
    assert!(p.spec.caveats.contains("kubectl krew index add kubectl-backup"), "{}", p.spec.caveats);
    assert!(p.spec.caveats.contains("kubectl-backup/backup"), "{}", p.spec.caveats);

    let wanted: BTreeSet<(String, String)> = ["linux", "darwin"]
        .iter()
        .flat_map(|os| ["amd64", "arm64"].iter().map(move |arch| (os.to_string(), arch.to_string())))
        .collect();
    let got: BTreeSet<(String, String)> = p.spec.platforms.iter().map(Platform::os_arch).collect();
    assert_eq!(got, wanted);
    assert_eq!(p.spec.platforms.len(), wanted.len(), "a platform is listed twice");
    for pl in &p.spec.platforms {
        let (os, arch) = pl.os_arch();
        assert_eq!(pl.selector.match_labels.len(), 2, "{os}/{arch}: only os and arch select a platform");
        assert_eq!(
            pl.uri,
            format!(
                "https://github.com/kubectl-backup/kubectl-backup/releases/download/v{VERSION}/{}",
                archive_name(&os, &arch)
            ),
            "{os}/{arch}"
        );
        assert!(is_sha256(&pl.sha256), "{os}/{arch}: sha256 {:?} is not 64 lowercase hex digits", pl.sha256);
        assert_eq!(pl.bin, "kubectl-backup", "{os}/{arch}");
        let from: BTreeSet<&str> = pl.files.iter().map(|f| f.from.as_str()).collect();
        assert_eq!(from, BTreeSet::from(["kubectl-backup", "LICENSE"]), "{os}/{arch}: files");
        assert!(pl.files.iter().all(|f| f.to == "."), "{os}/{arch}: files go to the plugin's root");
    }
}

#[test]
fn the_krew_manifest_has_the_shape_krew_accepts() {
    assert_valid(&parse(&repo().join("krew-manifest.yaml")));
    let license = std::fs::read_to_string(repo().join("LICENSE")).expect("a LICENSE at the root (krew ships it)");
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
}

#[test]
fn the_release_script_fills_the_sha256_of_the_archive_it_packs() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(repo().join("scripts/release.sh"))
        .arg("--binary")
        .arg(plugin_path())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("running scripts/release.sh");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "release.sh failed:\n{stderr}");

    let (os, arch) = host();
    let archive = out.path().join(archive_name(&os, &arch));
    assert!(archive.exists(), "no {} in {:?}:\n{stderr}", archive.display(), std::fs::read_dir(out.path()).unwrap());
    let sum = Command::new("sha256sum").arg(&archive).output().expect("sha256sum");
    let sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap_or_default().to_string();
    assert!(is_sha256(&sum), "sha256sum printed {sum:?}");

    let original = parse(&repo().join("krew-manifest.yaml"));
    let filled = parse(&out.path().join("krew-manifest.yaml"));
    assert_valid(&filled);
    for pl in &filled.spec.platforms {
        let before = original.spec.platforms.iter().find(|o| o.os_arch() == pl.os_arch()).expect("same platforms");
        if pl.os_arch() == (os.clone(), arch.clone()) {
            assert_eq!(pl.sha256, sum, "the manifest's sha256 for {os}/{arch} is not the archive's");
            assert!(pl.uri.ends_with(&format!("/{}", archive_name(&os, &arch))));
        } else {
            assert_eq!(pl.sha256, before.sha256, "{:?} was not built but its sha256 changed", pl.os_arch());
        }
    }
    // It says what it could not build.
    assert!(stderr.contains("not built"), "{stderr}");

    // The archive holds what `files` and `bin` name, at its root, and the binary is the plugin.
    let list = Command::new("tar").arg("-tzf").arg(&archive).output().expect("tar");
    let entries: BTreeSet<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_string).collect();
    assert!(entries.contains("kubectl-backup") && entries.contains("LICENSE"), "{entries:?}");
    let unpacked = out.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let untar = Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&unpacked).status().expect("tar");
    assert!(untar.success());
    let version =
        Command::new(unpacked.join("kubectl-backup")).arg("--version").output().expect("the packed binary runs");
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("kubectl-backup {VERSION}"));
}
