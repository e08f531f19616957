//! `lvn diff OLD NEW`: golden outputs of the fleet-wide plan for typical
//! changes (regenerate with `LVN_BLESS=1 cargo test --test diff`), exit
//! codes, and the JSON shape.

use std::{path::PathBuf, process::Command};

const BASE: &str = r#"[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
vni = 4242

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.alice]
address = "100.64.1.2"
endpoint = "203.0.113.7:4789"

[nodes.bob]
address = "100.64.1.3"
endpoint = "192.0.2.3"

[nodes.carol]
address = "100.64.1.4"
"#;

const HUB2: &str =
    "\n[nodes.hub2]\nrole = \"hub\"\naddress = \"100.64.0.2\"\nendpoint = \"198.51.100.2\"\n";

fn files(name: &str, old: &str, new: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (o, n) = (dir.path().join("old.toml"), dir.path().join("new.toml"));
    std::fs::write(&o, old).unwrap();
    std::fs::write(&n, new).unwrap();
    let _ = name;
    (dir, o, n)
}

/// Run `lvn diff` with `args`; (exit code, stdout, stderr with the temp dir
/// replaced by DIR).
fn lvn_diff(old: &PathBuf, new: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lvn"))
        .arg("diff")
        .arg(old)
        .arg(new)
        .args(args)
        .env_remove("LVN_NODE")
        .output()
        .expect("run lvn diff");
    let dir = old.parent().unwrap().to_string_lossy().into_owned();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&dir, "DIR"),
        String::from_utf8_lossy(&out.stderr).replace(&dir, "DIR"),
    )
}

fn golden(name: &str, old: &str, new: &str, want_code: i32) {
    let (_dir, o, n) = files(name, old, new);
    let (code, out, err) = lvn_diff(&o, &n, &["--detailed-exitcode"]);
    assert_eq!(code, want_code, "{name}: {out}{err}");
    let text = format!("$ lvn diff OLD NEW --detailed-exitcode  # exit {code}\n{out}{err}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("diff-{name}.txt"));
    if std::env::var_os("LVN_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: LVN_BLESS=1 to create it", path.display()));
    assert_eq!(
        text, want,
        "golden diff-{name} differs (LVN_BLESS=1 to accept)"
    );
}

#[test]
fn diff_endpoint_changed() {
    let new = BASE.replace("endpoint = \"192.0.2.3\"", "endpoint = \"192.0.2.33\"");
    golden("endpoint-changed", BASE, &new, 2);
}

#[test]
fn diff_spoke_added() {
    let new = format!("{BASE}\n[nodes.dave]\naddress = \"100.64.1.5\"\nendpoint = \"192.0.2.5\"\n");
    golden("spoke-added", BASE, &new, 2);
}

#[test]
fn diff_spoke_removed() {
    let new = BASE.replace(
        "\n[nodes.bob]\naddress = \"100.64.1.3\"\nendpoint = \"192.0.2.3\"\n",
        "",
    );
    assert_ne!(new, BASE);
    golden("spoke-removed", BASE, &new, 2);
}

#[test]
fn diff_hub_added_moves_spokes() {
    golden("hub-added", BASE, &format!("{BASE}{HUB2}"), 2);
}

#[test]
fn diff_vni_changed_recreates_every_device() {
    golden(
        "vni-changed",
        BASE,
        &BASE.replace("vni = 4242", "vni = 4243"),
        2,
    );
}

#[test]
fn diff_invalid_new_prints_only_errors() {
    let (_dir, o, n) = files(
        "invalid",
        BASE,
        &BASE.replace("vni = 4242", "vni = \"x\"\nport = 0"),
    );
    let (code, out, err) = lvn_diff(&o, &n, &["--detailed-exitcode"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out, "", "nothing else printed");
    assert!(err.contains("DIR/new.toml:"), "{err}");
    // Both files are checked.
    let (_dir, o, n) = files("invalid2", "[network\n", "[nodes]\n");
    let (code, _, err) = lvn_diff(&o, &n, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("DIR/old.toml:") && err.contains("DIR/new.toml:"),
        "{err}"
    );
}

#[test]
fn diff_no_change_exits_0() {
    let (_dir, o, n) = files("same", BASE, BASE);
    let (code, out, _) = lvn_diff(&o, &n, &["--detailed-exitcode"]);
    assert_eq!(code, 0);
    assert_eq!(out, "0 nodes change: 0 to add, 0 to change, 0 to remove.\n");
}

#[test]
fn diff_json_and_node_filter() {
    let new = BASE.replace("endpoint = \"192.0.2.3\"", "endpoint = \"192.0.2.33\"");
    let (_dir, o, n) = files("json", BASE, &new);
    let (code, out, err) = lvn_diff(&o, &n, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["nodes"], 1);
    assert_eq!(v["summary"]["change"], 1);
    assert_eq!(v["nodes"][0]["node"], "hub1");
    assert_eq!(v["nodes"][0]["changes"][0]["action"], "change");
    assert_eq!(v["nodes"][0]["changes"][0]["kind"], "fdb");
    assert_eq!(v["nodes"][0]["summary"]["change"], 1);
    let out = Command::new(env!("CARGO_BIN_EXE_lvn"))
        .args(["--node", "alice", "diff"])
        .arg(&o)
        .arg(&n)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0 nodes change: 0 to add, 0 to change, 0 to remove.\n"
    );
    let (_, md, _) = lvn_diff(&o, &n, &["--markdown"]);
    assert!(md.contains("| `hub1` | hub |"), "{md}");
    assert!(md.contains("```diff\n~ fdb"), "{md}");
}

/// The ready CI job in examples/ci runs as documented: in a git repository,
/// against the target branch, with `lvn` on PATH.
#[test]
fn the_example_ci_job_posts_the_fleet_plan() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("topology.toml"), BASE).unwrap();
    git(&["add", "topology.toml"]);
    git(&["commit", "-q", "-m", "fleet"]);
    let changed = BASE.replace("endpoint = \"192.0.2.3\"", "endpoint = \"192.0.2.33\"");
    std::fs::write(dir.path().join("topology.toml"), changed).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_lvn"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ci/lvn-diff.sh");
    let out = Command::new("sh")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("TARGET", "main")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(dir.path().join("lvn-diff.md")).unwrap();
    assert!(
        report.contains("1 node change: 0 to add, 1 to change, 0 to remove."),
        "{report}"
    );
    assert!(
        report.contains("~ fdb 02:4c:64:40:01:03 dst 192.0.2.33"),
        "{report}"
    );
}
