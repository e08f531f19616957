//! CLI polish: version with the git commit, man page and completions
//! generated from the CLI definition.

use std::process::Command;

fn lvn(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lvn"))
        .args(args)
        .output()
        .expect("run lvn");
    assert!(
        out.status.success(),
        "lvn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn version_names_the_commit() {
    let v = lvn(&["--version"]);
    assert!(
        v.starts_with(&format!("lvn {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    if head.status.success() {
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(v.contains(&format!("git {commit}")), "{v} lacks {commit}");
    }
}

#[test]
fn man_page_and_completions_cover_every_command() {
    let man = lvn(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH lvn"),
        "{}",
        &man[..man.len().min(200)]
    );
    let bash = lvn(&["completions", "bash"]);
    let zsh = lvn(&["completions", "zsh"]);
    for cmd in [
        "check", "plan", "apply", "down", "schema", "run", "status", "genkey", "pubkey",
    ] {
        assert!(man.contains(cmd), "man page lacks {cmd}");
        assert!(bash.contains(cmd), "bash completion lacks {cmd}");
        assert!(zsh.contains(cmd), "zsh completion lacks {cmd}");
    }
    assert!(bash.contains("complete -F"), "not a bash completion script");
}

/// Defect 3.12: `--resync 18446744073709551615s` panicked (Instant
/// overflow) and `--resync 0` spun; both are refused like the file's
/// out-of-range durations, before anything runs.
#[test]
fn resync_out_of_range_is_refused_not_a_panic_or_a_spin() {
    for bad in ["0", "0s", "500ms", "18446744073709551615s", "25h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lvn"))
            .args([
                "run",
                "--config",
                "/nonexistent/topology.toml",
                "--resync",
                bad,
            ])
            .output()
            .expect("run lvn");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--resync {bad}: {err}");
        assert!(
            err.contains("out of range") || err.contains("not a duration"),
            "--resync {bad}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
