//! The bad-input corpus: every file in `tests/fixtures/invalid/` must be
//! rejected by `lvn check` with exactly the errors its header announces.
//!
//! A fixture starts with comment lines:
//!
//! ```toml
//! # What the case is about (free text).
//! # node: carol                      <- optional, passed as --node
//! # expect: 7:11: lies outside the overlay
//! ```
//!
//! `# expect: LINE:COL: TEXT` means stderr has a line starting with
//! `<path>:LINE:COL: ` whose message contains TEXT. A file may have several
//! `# expect:` lines; together they must account for every line on stderr,
//! and stderr must list the errors in file order. Nothing may be printed on
//! stdout and the exit code must be 1.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The corpus must not silently shrink (or vanish after a bad move).
const MIN_FIXTURES: usize = 25;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `*.toml` files directly inside `dir`, sorted by name.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Run the lvn binary with a clean environment: `LVN_NODE`/`LVN_CONFIG`
/// would change which node or file is used, the log filters could add
/// lines to stderr.
fn lvn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lvn"))
        .args(args)
        .env_remove("LVN_NODE")
        .env_remove("LVN_CONFIG")
        .env_remove("LVN_LOG")
        .env_remove("RUST_LOG")
        .current_dir(manifest_dir())
        .output()
        .expect("running the lvn binary")
}

#[derive(Debug)]
struct Expect {
    line: usize,
    col: usize,
    text: String,
}

#[derive(Debug)]
struct Fixture {
    path: PathBuf,
    node: Option<String>,
    expects: Vec<Expect>,
}

impl Fixture {
    /// Read the leading comment block of `path`.
    fn read(path: &Path) -> Result<Fixture, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let mut node = None;
        let mut expects = Vec::new();
        for line in text.lines().take_while(|l| l.starts_with('#')) {
            if let Some(rest) = line.strip_prefix("# node:") {
                if node.replace(rest.trim().to_string()).is_some() {
                    return Err("more than one `# node:` line".into());
                }
            } else if let Some(rest) = line.strip_prefix("# expect:") {
                expects.push(parse_expect(rest.trim_start()).ok_or_else(|| {
                    format!("malformed line {line:?}, expected `# expect: LINE:COL: message`")
                })?);
            }
        }
        if expects.is_empty() {
            return Err("no `# expect: LINE:COL: message` line in the leading comments".into());
        }
        Ok(Fixture {
            path: path.to_path_buf(),
            node,
            expects,
        })
    }

    /// `--config FILE [--node NAME]`.
    fn args(&self) -> Vec<&str> {
        let mut args = vec!["--config", self.path.to_str().expect("UTF-8 path")];
        if let Some(n) = &self.node {
            args.extend(["--node", n.as_str()]);
        }
        args
    }

    /// Every problem with the output of one lvn run on this fixture.
    fn problems(&self, out: &Output) -> Vec<String> {
        let mut problems = Vec::new();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) {
            problems.push(format!("{}, expected exit status 1", out.status));
        }
        if !stdout.is_empty() {
            problems.push(format!("stdout is not empty: {stdout:?}"));
        }
        let prefix = format!("{}:", self.path.display());
        let errors: Vec<(usize, usize, &str)> = stderr
            .lines()
            .filter(|l| !l.is_empty())
            .filter_map(|l| match l.strip_prefix(&prefix).and_then(parse_located) {
                Some(e) => Some(e),
                None => {
                    problems.push(format!("stderr line is not `{prefix}LINE:COL: ...`: {l:?}"));
                    None
                }
            })
            .collect();
        for x in &self.expects {
            let found = errors
                .iter()
                .any(|&(l, c, m)| l == x.line && c == x.col && m.contains(&x.text));
            if !found {
                problems.push(format!("no error `{}:{}: ...{}...`", x.line, x.col, x.text));
            }
        }
        for &(l, c, m) in &errors {
            let expected = self
                .expects
                .iter()
                .any(|x| l == x.line && c == x.col && m.contains(&x.text));
            if !expected {
                problems.push(format!("unexpected error `{l}:{c}: {m}`"));
            }
        }
        if !errors.is_sorted_by_key(|&(l, c, _)| (l, c)) {
            problems.push("errors are not in file order".into());
        }
        if !problems.is_empty() {
            problems.push(format!("stderr was:\n{}", indent(&stderr)));
        }
        problems
    }
}

/// `LINE:COL: text`.
fn parse_expect(s: &str) -> Option<Expect> {
    let (line, col, text) = parse_located(s)?;
    Some(Expect {
        line,
        col,
        text: text.to_string(),
    })
}

/// `LINE:COL: rest` into its parts; LINE and COL are 1-based.
fn parse_located(s: &str) -> Option<(usize, usize, &str)> {
    let (line, rest) = s.split_once(':')?;
    let (col, rest) = rest.split_once(": ")?;
    let line: usize = line.parse().ok()?;
    let col: usize = col.parse().ok()?;
    (line > 0 && col > 0).then_some((line, col, rest))
}

fn indent(s: &str) -> String {
    s.lines().fold(String::new(), |mut acc, l| {
        let _ = writeln!(acc, "    | {l}");
        acc
    })
}

/// Panic with one section per failing file.
fn report(what: &str, failures: Vec<(PathBuf, Vec<String>)>) {
    if failures.is_empty() {
        return;
    }
    let mut msg = format!("{} file(s) failed {what}:\n", failures.len());
    for (path, problems) in &failures {
        let _ = writeln!(msg, "\n{}:", path.display());
        for p in problems {
            let _ = writeln!(msg, "  - {p}");
        }
    }
    panic!("{msg}");
}

fn invalid_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures/invalid")
}

fn fixture(name: &str) -> Fixture {
    Fixture::read(&invalid_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn check_rejects_every_invalid_fixture_with_the_announced_errors() {
    let files = toml_files(&invalid_dir());
    assert!(
        files.len() >= MIN_FIXTURES,
        "only {} fixtures in {}, expected at least {MIN_FIXTURES}",
        files.len(),
        invalid_dir().display()
    );
    let mut failures = Vec::new();
    for path in files {
        let problems = match Fixture::read(&path) {
            Ok(f) => {
                let mut args = vec!["check"];
                args.extend(f.args());
                f.problems(&lvn(&args))
            }
            Err(e) => vec![e],
        };
        if !problems.is_empty() {
            failures.push((path, problems));
        }
    }
    report("the invalid corpus", failures);
}

#[test]
fn check_accepts_every_example() {
    let files = toml_files(&manifest_dir().join("examples"));
    assert!(!files.is_empty(), "no examples/*.toml to check");
    let mut failures = Vec::new();
    for path in files {
        let out = lvn(&["check", "--config", path.to_str().expect("UTF-8 path")]);
        if !out.status.success() {
            failures.push((
                path,
                vec![format!(
                    "{}, expected exit status 0; stderr:\n{}",
                    out.status,
                    indent(&String::from_utf8_lossy(&out.stderr))
                )],
            ));
        }
    }
    report("`lvn check`", failures);
}

/// `plan` and `apply` load the topology before opening netlink, so an invalid
/// file fails the same way as under `check`, root or not.
#[test]
fn plan_and_apply_fail_at_config_loading() {
    let mut failures = Vec::new();
    for (name, node) in [
        // A broken file: the errors come from loading it.
        ("address-outside-overlay.toml", Some("hub1")),
        // A valid file and an unknown node: the error comes before netlink too.
        ("node-flag-unknown.toml", None),
    ] {
        let mut f = fixture(name);
        if f.node.is_none() {
            f.node = node.map(str::to_string);
        }
        for command in ["plan", "apply"] {
            let mut args = vec![command];
            args.extend(f.args());
            let out = lvn(&args);
            let mut problems = f.problems(&out);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("netlink") {
                problems.push("reached netlink".into());
            }
            if !problems.is_empty() {
                problems.insert(0, format!("`lvn {}`", args.join(" ")));
                failures.push((f.path.clone(), problems));
            }
        }
    }
    report("`lvn plan`/`lvn apply`", failures);
}

#[test]
fn expect_lines_parse() {
    let e = parse_expect("7:11: address 100.65.1.2 lies outside").unwrap();
    assert_eq!((e.line, e.col), (7, 11));
    assert_eq!(e.text, "address 100.65.1.2 lies outside");
    assert!(parse_expect("7: no column").is_none());
    assert!(parse_expect("0:1: line 0").is_none());
    assert!(parse_expect("a:b: letters").is_none());
}
