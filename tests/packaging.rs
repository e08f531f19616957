//! The systemd unit and the Debian package (issue 5).
//!
//! - `systemd-analyze verify` accepts packaging/lvn.service, and rejects
//!   broken copies of it, so the check means something.
//! - The unit agrees with lvn: directories, environment, flags.
//! - packaging/build-deb makes a package (with this test build's binary, to
//!   stay fast) holding the binary, the unit, the man page, completions and
//!   an example /etc/lvn/topology.toml, and a DEP-5 copyright file naming
//!   both licences (MIT or Apache-2.0); dpkg installs it into a clean root,
//!   the installed lvn checks the installed example, and dpkg removes and
//!   purges it again.
//!
//! Needs systemd (systemd-analyze), man-db, dpkg-dev, binutils and cargo-deb:
//! scripts/test installs them. The package test needs root, as the whole
//! suite does. What verify cannot see (the hardened unit running under a
//! real systemd) is packaging/check-unit-in-vm's job.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const LVN: &str = env!("CARGO_BIN_EXE_lvn");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn unit_text() -> String {
    read(&repo("packaging/lvn.service"))
}

fn output(cmd: &mut Command, hint: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?}: {e}; {hint}",
            cmd.get_program().to_string_lossy()
        )
    })
}

/// Run a command that must succeed; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd, "is it installed? (sudo ./scripts/test installs it)");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// lvn itself, without any LVN_* settings of the caller's environment.
fn lvn(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_clear();
    c
}

fn require_root() {
    let status = read(Path::new("/proc/self/status"));
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "installing a package with dpkg needs root: run `sudo ./scripts/test`"
    );
}

/// The values of `Key=` in a unit file, in order (comments skipped).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// `systemd-analyze verify` on the text of a copy of lvn.service, written
/// into `dir`, with ExecStart's /usr/bin/lvn replaced by `bin` (verify
/// requires the program to exist) and man pages looked up in `manpath` only
/// (for Documentation=man:lvn(1)). Passing means exit 0 *and* nothing said
/// about the unit: verify reports many mistakes, such as an unknown key or
/// an invalid value, only as a warning ("..., ignoring") and exits 0.
fn verify(dir: &Path, unit: &str, bin: &Path, manpath: &Path) -> Result<(), String> {
    let exec = "ExecStart=/usr/bin/lvn ";
    assert!(
        unit.lines().filter(|l| l.starts_with(exec)).count() == 1,
        "the unit has one `{exec}...` line"
    );
    let unit = unit.replace(exec, &format!("ExecStart={} ", bin.display()));
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("lvn.service");
    fs::write(&path, unit).unwrap();
    let out = output(
        Command::new("systemd-analyze")
            .args(["verify", "--recursive-errors=no"])
            .arg(&path)
            .env("MANPATH", manpath),
        "it comes with Debian's systemd package (sudo ./scripts/test installs it)",
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let about_unit: Vec<&str> = said.lines().filter(|l| l.contains("lvn.service")).collect();
    if out.status.success() && about_unit.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{said}", out.status))
    }
}

/// The unit with the first line that starts with `good` starting with `bad`
/// instead (comments mention settings too: they are left alone).
fn break_line(unit: &str, good: &str, bad: &str) -> String {
    let mut done = false;
    let lines: Vec<String> = unit
        .lines()
        .map(|l| match l.strip_prefix(good) {
            Some(rest) if !done => {
                done = true;
                format!("{bad}{rest}")
            }
            _ => l.to_string(),
        })
        .collect();
    assert!(done, "the unit has a line starting with `{good}`");
    lines.join("\n") + "\n"
}

/// A man page directory holding `lvn man`'s page, for Documentation=.
fn man_dir(root: &Path) -> PathBuf {
    let dir = root.join("man");
    fs::create_dir_all(dir.join("man1")).unwrap();
    let page = ok(lvn(Path::new(LVN)).arg("man"));
    fs::write(dir.join("man1/lvn.1"), page).unwrap();
    dir
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let man = man_dir(tmp.path());
    let unit = unit_text();
    if let Err(e) = verify(&tmp.path().join("ok"), &unit, Path::new(LVN), &man) {
        panic!("systemd-analyze verify packaging/lvn.service: {e}");
    }

    // The same check fails on broken copies, each in one line: so a passing
    // verify above is worth something. (A misspelt capability name is one
    // thing verify lets pass silently: unit_agrees_with_lvn checks those.)
    let broken = [
        ("Type=notify", "Type=notiffy"),
        ("ProtectSystem=strict", "ProtectSytem=strict"),
        (
            "SystemCallFilter=@system-service",
            "SystemCallFilter=@system-servce",
        ),
        ("StateDirectory=lvn", "StateDirectory=/var/lib/lvn"),
        (
            "RestrictAddressFamilies=AF_UNIX",
            "RestrictAddressFamilies=AF_UNIKS",
        ),
        ("[Service]", "[Servce]"),
    ];
    for (i, (good, bad)) in broken.iter().enumerate() {
        let copy = break_line(&unit, good, bad);
        let dir = tmp.path().join(format!("broken{i}"));
        assert!(
            verify(&dir, &copy, Path::new(LVN), &man).is_err(),
            "verify accepted the unit with `{good}` broken into `{bad}`"
        );
    }
    let missing = tmp.path().join("no-such-lvn");
    assert!(
        verify(&tmp.path().join("nobin"), &unit, &missing, &man).is_err(),
        "verify accepted an ExecStart program that does not exist"
    );
    let no_man = tmp.path().join("no-man");
    fs::create_dir_all(&no_man).unwrap();
    assert!(
        verify(&tmp.path().join("noman"), &unit, Path::new(LVN), &no_man).is_err(),
        "verify accepted Documentation=man:lvn(1) without the man page"
    );
}

#[test]
fn unit_agrees_with_lvn() {
    let unit = unit_text();
    let one = |key: &str| -> String {
        let v = values(&unit, key);
        assert_eq!(v.len(), 1, "one {key}= in the unit: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecStart"), "/usr/bin/lvn run $LVN_RUN_ARGS");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("EnvironmentFile"), "-/etc/default/lvn");

    // systemd's directories are lvn's defaults.
    let help = ok(lvn(Path::new(LVN)).arg("--help"));
    assert_eq!(one("RuntimeDirectory"), "lvn");
    assert!(help.contains("[default: /run/lvn]"), "{help}");
    assert_eq!(one("StateDirectory"), "lvn");
    assert!(help.contains("[default: /var/lib/lvn]"), "{help}");

    let caps = |key: &str| -> BTreeSet<String> {
        one(key).split_whitespace().map(str::to_string).collect()
    };
    let want: BTreeSet<String> = ["CAP_NET_ADMIN", "CAP_NET_RAW"].map(String::from).into();
    assert_eq!(caps("CapabilityBoundingSet"), want);
    assert_eq!(caps("AmbientCapabilities"), want);

    // lvn writes per-device sysctls under /proc/sys/net: with
    // ProtectKernelTunables on, that path must stay writable.
    if values(&unit, "ProtectKernelTunables")
        .iter()
        .any(|v| v == "yes")
    {
        let rw = values(&unit, "ReadWritePaths").join(" ");
        assert!(
            rw.split_whitespace().any(|p| p == "/proc/sys/net"),
            "ProtectKernelTunables=yes needs ReadWritePaths=/proc/sys/net, got {rw:?}"
        );
    }

    // Every variable /etc/default/lvn documents is one lvn (or the unit)
    // reads, and its example run flags parse.
    let default = read(&repo("packaging/lvn.default"));
    let mut run_args = None;
    for line in default.lines() {
        let line = line.trim_start_matches('#');
        let Some((var, value)) = line.split_once('=') else {
            continue;
        };
        if !var.starts_with("LVN_") || var.contains(' ') {
            continue;
        }
        match var {
            // The log filter, read by lvn's logger (not a flag).
            "LVN_LOG" => {}
            "LVN_RUN_ARGS" => {
                assert!(one("ExecStart").contains("$LVN_RUN_ARGS"));
                run_args = Some(value.trim_matches('"').to_string());
            }
            _ => assert!(
                help.contains(&format!("[env: {var}=]")),
                "packaging/lvn.default mentions {var}, which lvn --help does not list"
            ),
        }
    }
    let run_args = run_args.expect("packaging/lvn.default shows LVN_RUN_ARGS");
    ok(lvn(Path::new(LVN))
        .arg("run")
        .args(run_args.split_whitespace())
        .arg("--help"));
}

/// The text of a DEP-5 stand-alone `License: NAME` paragraph, its
/// continuation lines unfolded (" ." is an empty line).
fn license_paragraph(copyright: &str, name: &str) -> Option<String> {
    let start = copyright.find(&format!("\n\nLicense: {name}\n"))?;
    let body = copyright[start..].lines().skip(3);
    let text: Vec<&str> = body
        .take_while(|l| l.starts_with(' '))
        .map(|l| if l == " ." { "" } else { &l[1..] })
        .collect();
    Some(text.join("\n"))
}

/// /usr/share/doc/lvn/copyright: machine-readable (DEP-5), every file MIT
/// or Apache-2.0, each licence with its own paragraph.
fn check_copyright(copyright: &str) {
    assert!(
        copyright.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        ),
        "{copyright}"
    );
    assert!(
        copyright
            .contains("\n\nFiles: *\nCopyright: the lvn developers\nLicense: MIT or Apache-2.0\n"),
        "{copyright}"
    );
    let mit = license_paragraph(copyright, "MIT").expect("a License: MIT paragraph");
    assert!(mit.starts_with("Permission is hereby granted"), "{mit}");
    let apache =
        license_paragraph(copyright, "Apache-2.0").expect("a License: Apache-2.0 paragraph");
    assert!(
        apache.starts_with("Licensed under the Apache License, Version 2.0"),
        "{apache}"
    );
    assert!(
        apache.contains("/usr/share/common-licenses/Apache-2.0"),
        "{apache}"
    );
}

/// The crate's licence, its licence files and the package's copyright file
/// say the same thing.
#[test]
fn licence_is_mit_or_apache_everywhere() {
    assert_eq!(env!("CARGO_PKG_LICENSE"), "MIT OR Apache-2.0");
    let copyright = read(&repo("packaging/debian/copyright"));
    check_copyright(&copyright);
    let mit = read(&repo("LICENSE-MIT"));
    let (holder, text) = mit
        .split_once("\n\n")
        .expect("LICENSE-MIT: a copyright line first");
    assert_eq!(holder, "Copyright (c) the lvn developers");
    assert_eq!(
        license_paragraph(&copyright, "MIT").as_deref(),
        Some(text.trim_end())
    );
    let apache = read(&repo("LICENSE-APACHE"));
    assert!(apache.contains("Apache License\n"), "LICENSE-APACHE");
    assert!(
        apache.contains("Version 2.0, January 2004"),
        "LICENSE-APACHE"
    );
    assert!(
        apache.trim_end().ends_with("END OF TERMS AND CONDITIONS"),
        "LICENSE-APACHE"
    );
}

/// The paths in a .deb, as `dpkg-deb -c` lists them ("./usr/bin/lvn").
fn deb_paths(deb: &Path) -> BTreeSet<String> {
    ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_end_matches('/').to_string())
        .collect()
}

/// A root dpkg can install into: an empty database, and /bin/sh with the
/// libraries it needs, for the maintainer scripts dpkg runs chrooted there.
fn clean_root(root: &Path) {
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "bin", "dev"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    fs::write(root.join("var/lib/dpkg/available"), "").unwrap();
    // The scripts redirect to /dev/null; a plain file takes the writes.
    fs::write(root.join("dev/null"), "").unwrap();
    let sh = fs::canonicalize("/bin/sh").unwrap();
    fs::copy(&sh, root.join("bin/sh")).unwrap();
    for line in ok(Command::new("ldd").arg(&sh)).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let lib = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|s| s.starts_with('/'));
        if let Some(lib) = lib {
            let dest = root.join(lib.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(lib, &dest).unwrap();
        }
    }
    ok(Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", "true"]));
}

/// dpkg acting on `root` only: its database, its files, its own log. The
/// package's Depends (libc6) are not in the clean root, hence
/// --force-depends; --path-include undoes any path-exclude of this host's
/// dpkg.cfg.d (minimal images drop man pages and docs).
fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("dpkg.log").display()))
        .args(["--force-depends", "--path-include=*"]);
    c
}

fn dpkg_status(root: &Path) -> String {
    let out = output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["-s", "lvn"]),
        "",
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn debian_package_installs_into_a_clean_root_and_checks_its_example() {
    require_root();
    let deb_version = output(
        Command::new("cargo").args(["deb", "--version"]),
        "is cargo on PATH?",
    );
    assert!(
        deb_version.status.success(),
        "cargo-deb is missing: `cargo install cargo-deb --locked` (sudo ./scripts/test does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");

    // The package as packaging/build-deb makes it, with this build's binary
    // in a scratch target directory instead of a release build.
    ok(Command::new(repo("packaging/build-deb"))
        .args(["--fast", "-o"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", tmp.path().join("target"))
        .env("LVN_DEB_BINARY", LVN));
    let debs: Vec<PathBuf> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "one package in {}: {debs:?}",
        out_dir.display()
    );
    let deb = &debs[0];

    // Contents.
    let paths = deb_paths(deb);
    for want in [
        "./usr/bin/lvn",
        "./lib/systemd/system/lvn.service",
        "./usr/share/man/man1/lvn.1.gz",
        "./etc/lvn/topology.toml",
        "./etc/default/lvn",
        "./usr/share/bash-completion/completions/lvn",
        "./usr/share/zsh/vendor-completions/_lvn",
        "./usr/share/fish/vendor_completions.d/lvn.fish",
        "./usr/share/lvn/topology.schema.json",
        "./usr/share/doc/lvn/copyright",
    ] {
        assert!(
            paths.contains(want),
            "{want} not in the package: {paths:#?}"
        );
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("./usr/lib/systemd")),
        "the unit belongs in /lib/systemd/system only (Debian 12): {paths:#?}"
    );

    // Control: fields, conffiles, maintainer scripts.
    let fields = ok(Command::new("dpkg-deb").arg("-f").arg(deb).args([
        "Package",
        "Architecture",
        "Depends",
    ]));
    assert!(fields.contains("Package: lvn\n"), "{fields}");
    assert!(fields.contains("Depends: libc6"), "{fields}");
    let control = tmp.path().join("control");
    ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    let conffiles: BTreeSet<String> = read(&control.join("conffiles"))
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        conffiles,
        ["/etc/default/lvn", "/etc/lvn/topology.toml"]
            .map(String::from)
            .into()
    );
    for script in ["postinst", "prerm", "postrm"] {
        let mode = fs::metadata(control.join(script))
            .unwrap_or_else(|e| panic!("{script} in the package: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is executable");
    }

    // The copyright file is the repository's DEP-5 file, both licences in it.
    let extracted = tmp.path().join("extracted");
    ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&extracted));
    let copyright = read(&extracted.join("usr/share/doc/lvn/copyright"));
    check_copyright(&copyright);
    assert_eq!(copyright, read(&repo("packaging/debian/copyright")));

    // Install into a clean root.
    let root = tmp.path().join("root");
    clean_root(&root);
    ok(dpkg(&root).arg("-i").arg(deb));
    let status = dpkg_status(&root);
    assert!(status.contains("Status: install ok installed"), "{status}");
    let verify_out = ok(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--verify", "lvn"]));
    assert_eq!(verify_out, "", "dpkg --verify: installed files differ");
    assert!(status.contains(" /etc/lvn/topology.toml "), "{status}");
    assert!(status.contains(" /etc/default/lvn "), "{status}");

    // The installed files: the unit is the repository's, and passes verify
    // against the installed binary and man page.
    let installed_unit = read(&root.join("lib/systemd/system/lvn.service"));
    assert_eq!(installed_unit, unit_text());
    let bin = root.join("usr/bin/lvn");
    if let Err(e) = verify(
        &tmp.path().join("verify"),
        &installed_unit,
        &bin,
        &root.join("usr/share/man"),
    ) {
        panic!("systemd-analyze verify on the installed unit: {e}");
    }
    let page = ok(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man1/lvn.1.gz")));
    assert!(page.contains(".TH lvn 1"), "{page}");
    ok(Command::new("bash")
        .arg("-n")
        .arg(root.join("usr/share/bash-completion/completions/lvn")));

    // The installed lvn accepts the installed example.
    let example = root.join("etc/lvn/topology.toml");
    let checked = ok(lvn(&bin).arg("check").arg("--config").arg(&example));
    assert!(checked.contains(": ok ("), "{checked}");
    let text = read(&example);
    assert!(
        text.starts_with("#:schema /usr/share/lvn/topology.schema.json\n"),
        "{text}"
    );

    // A local edit of a conffile survives reinstalling; removing keeps the
    // conffiles, purging takes them.
    fs::write(&example, format!("{text}# edited here\n")).unwrap();
    ok(dpkg(&root).arg("-i").arg(deb));
    assert!(read(&example).ends_with("# edited here\n"));
    ok(dpkg(&root).args(["-r", "lvn"]));
    assert!(!bin.exists(), "dpkg -r removed /usr/bin/lvn");
    assert!(example.exists(), "dpkg -r keeps conffiles");
    assert!(dpkg_status(&root).contains("Status: deinstall ok config-files"));
    ok(dpkg(&root).args(["--purge", "lvn"]));
    assert!(!example.exists(), "dpkg --purge removes conffiles");
    assert!(!root.join("etc/default/lvn").exists());
}
