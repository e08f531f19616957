use std::path::Path;

use super::*;
use crate::daemon::state::{load, load_all};

fn peer(port: u16) -> SavedPeer {
    SavedPeer {
        endpoint: format!("198.51.100.2:{port}").parse().unwrap(),
        counter: u64::from(port),
        last_seen_unix: 1_800_000_000,
        up: true,
        public_key: None,
    }
}

/// A hub's state with `n` peers p0.. .
fn hub(n: u16) -> Saved {
    let mut s = Saved {
        network: "n".into(),
        node: "hub1".into(),
        auth: Some("none".into()),
        ..Saved::default()
    };
    for i in 0..n {
        s.learned.insert(format!("p{i}"), peer(40000 + i));
    }
    s
}

fn head(s: &Saved) -> Saved {
    Saved {
        learned: Default::default(),
        ..s.clone()
    }
}

fn store(dir: &Path) -> Store {
    let (disk, on) = load_all(dir, "n").unwrap();
    Store::new(dir.to_path_buf(), disk, on)
}

/// What was saved, without the generation (the files' business).
fn held(dir: &Path) -> Saved {
    Saved {
        generation: 0,
        ..load(dir, "n").unwrap()
    }
}

fn journal(dir: &Path) -> String {
    std::fs::read_to_string(journal_path(dir, "n")).unwrap_or_default()
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn a_change_to_one_peer_is_appended_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    let mut want = hub(50);
    st.write(Save::Whole(want.clone())).unwrap();
    let snapshot = inode(&path(d.path(), "n"));
    assert_eq!(journal(d.path()), "{\"generation\":1}\n");

    want.learned.insert("p3".into(), peer(50000));
    want.learned.remove("p4");
    want.learned.insert("new".into(), peer(50001));
    let changed = vec![
        ("p3".to_string(), Some(peer(50000))),
        ("p4".to_string(), None),
        ("new".to_string(), Some(peer(50001))),
    ];
    st.write(Save::Delta(head(&want), changed)).unwrap();
    assert_eq!(inode(&path(d.path(), "n")), snapshot, "snapshot untouched");
    let j = journal(d.path());
    assert_eq!(j.lines().count(), 4, "{j}");
    assert!(j.contains(r#"{"peer":{"name":"p3","endpoint":"198.51.100.2:50000","#));
    assert!(j.contains(r#"{"forget":"p4"}"#));
    assert_eq!(held(d.path()), want);

    // An unchanged head and no peers: nothing written.
    st.write(Save::Delta(head(&want), Vec::new())).unwrap();
    assert_eq!(journal(d.path()), j);
}

#[test]
fn a_changed_head_is_a_record_of_its_own() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    let mut want = hub(20);
    st.write(Save::Whole(want.clone())).unwrap();
    want.pending = Some("ab12".into());
    st.write(Save::Delta(head(&want), Vec::new())).unwrap();
    assert!(journal(d.path()).contains(r#"{"head":{"network":"n","node":"hub1","#));
    assert_eq!(held(d.path()), want);
}

#[test]
fn the_journal_is_compacted_when_it_outgrows_the_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    let mut want = hub(10);
    st.write(Save::Whole(want.clone())).unwrap();
    let snapshot_bytes = std::fs::metadata(path(d.path(), "n")).unwrap().len();
    let mut compactions = 0;
    let mut inode0 = inode(&path(d.path(), "n"));
    for round in 0..40u16 {
        let name = format!("p{}", round % 10);
        want.learned.insert(name.clone(), peer(41000 + round));
        st.write(Save::Delta(
            head(&want),
            vec![(name, Some(peer(41000 + round)))],
        ))
        .unwrap();
        let j = std::fs::metadata(journal_path(d.path(), "n"))
            .unwrap()
            .len();
        assert!(j <= snapshot_bytes + 200, "journal {j} bytes");
        let i = inode(&path(d.path(), "n"));
        if i != inode0 {
            compactions += 1;
            inode0 = i;
            // A new generation, and a journal of it only.
            let g = load(d.path(), "n").unwrap().generation;
            assert_eq!(journal(d.path()), format!("{{\"generation\":{g}}}\n"));
        }
        assert_eq!(held(d.path()), want);
    }
    assert!(
        (2..20).contains(&compactions),
        "{compactions} compactions in 40 one-peer saves"
    );
}

#[test]
fn a_torn_last_record_is_reported_and_the_rest_kept() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    let mut want = hub(30);
    st.write(Save::Whole(want.clone())).unwrap();
    for i in 0..3u16 {
        let name = format!("p{i}");
        want.learned.insert(name.clone(), peer(42000 + i));
        st.write(Save::Delta(
            head(&want),
            vec![(name, Some(peer(42000 + i)))],
        ))
        .unwrap();
    }
    drop(st);
    // A crash in the middle of the next append.
    let jp = journal_path(d.path(), "n");
    let mut f = OpenOptions::new().append(true).open(&jp).unwrap();
    f.write_all(br#"{"peer":{"name":"p9","endpoint":"198.51"#)
        .unwrap();
    drop(f);

    let (s, on) = load_all(d.path(), "n").unwrap();
    assert_eq!(
        Saved { generation: 0, ..s },
        want,
        "every whole record kept"
    );
    assert!(on.compact);
    assert_eq!(on.problems.len(), 1, "{:?}", on.problems);
    assert!(
        on.problems[0].starts_with(&format!("{}:5: a record cut short", jp.display())),
        "{:?}",
        on.problems
    );

    // The next write mends the files: nothing runs on from the torn line.
    let mut st = store(d.path());
    want.learned.insert("p5".into(), peer(42005));
    st.write(Save::Delta(
        head(&want),
        vec![("p5".into(), Some(peer(42005)))],
    ))
    .unwrap();
    let (s, on) = load_all(d.path(), "n").unwrap();
    assert!(on.problems.is_empty(), "{:?}", on.problems);
    assert_eq!(Saved { generation: 0, ..s }, want);
}

#[test]
fn a_bad_line_in_the_middle_is_reported_with_its_line() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    st.write(Save::Whole(hub(5))).unwrap();
    drop(st);
    let jp = journal_path(d.path(), "n");
    let mut f = OpenOptions::new().append(true).open(&jp).unwrap();
    let good = serde_json::to_string(&Record::Peer {
        name: "late".into(),
        state: peer(43000),
    })
    .unwrap();
    writeln!(f, "{{\"peer\":17}}\n{good}").unwrap();
    drop(f);
    let (s, on) = load_all(d.path(), "n").unwrap();
    assert!(
        on.problems.len() == 1 && on.problems[0].starts_with(&format!("{}:2: ", jp.display())),
        "{:?}",
        on.problems
    );
    assert_eq!(s.learned.get("late"), Some(&peer(43000)), "read past it");
}

/// A crash between a compaction's snapshot and its new journal: the old
/// journal's records are in the snapshot, and must not undo newer ones.
#[test]
fn a_journal_of_another_generation_is_ignored() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    let mut want = hub(5);
    st.write(Save::Whole(want.clone())).unwrap();
    st.write(Save::Delta(head(&want), vec![("p1".into(), Some(peer(1)))]))
        .unwrap();
    let stale = journal(d.path());
    want.learned.insert("p1".into(), peer(2));
    st.write(Save::Whole(want.clone())).unwrap();
    std::fs::write(journal_path(d.path(), "n"), stale).unwrap();
    let (s, on) = load_all(d.path(), "n").unwrap();
    assert_eq!(s.learned["p1"], peer(2));
    assert!(on.compact && on.problems[0].contains("generation 1"));
}

/// A state file of an earlier version (no journal, no generation, peers
/// without `up` or keys) still loads, and a journal can continue it.
#[test]
fn an_old_state_file_loads() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        path(d.path(), "n"),
        r#"{
  "network": "n",
  "node": "hub1",
  "learned": {
    "alice": {
      "endpoint": "198.51.100.2:40059",
      "counter": 3,
      "last_seen_unix": 1
    }
  },
  "counter": 0
}
"#,
    )
    .unwrap();
    let s = load(d.path(), "n").unwrap();
    assert_eq!(s.generation, 0);
    let alice = &s.learned["alice"];
    assert!(alice.up && alice.counter == 3 && alice.public_key.is_none());

    let mut st = store(d.path());
    let mut want = s.clone();
    want.learned.insert("bob".into(), peer(40060));
    st.write(Save::Delta(
        head(&s),
        vec![("bob".into(), Some(peer(40060)))],
    ))
    .unwrap();
    assert_eq!(held(d.path()), want);
    // The first write numbered it (a journal continues only a snapshot of
    // its own: an earlier version would write this one again without a
    // generation); the next appends.
    assert_eq!(load(d.path(), "n").unwrap().generation, 1);
    want.learned.insert("carol".into(), peer(40061));
    st.write(Save::Delta(
        head(&s),
        vec![("carol".into(), Some(peer(40061)))],
    ))
    .unwrap();
    assert_eq!(held(d.path()), want);
    assert_eq!(journal(d.path()).lines().count(), 2);

    // That earlier version runs again and writes its own file: the
    // journal is not replayed over it.
    let mut old = want.clone();
    old.generation = 0;
    old.learned.remove("carol");
    let text = serde_json::to_string_pretty(&old).unwrap();
    std::fs::write(path(d.path(), "n"), text).unwrap();
    assert!(!load(d.path(), "n").unwrap().learned.contains_key("carol"));
}

#[test]
fn a_renamed_network_is_written_whole_under_its_new_name() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    let want = hub(3);
    st.write(Save::Whole(want.clone())).unwrap();
    let renamed = Saved {
        network: "m".into(),
        ..head(&want)
    };
    st.write(Save::Delta(renamed, Vec::new())).unwrap();
    let s = load(d.path(), "m").unwrap();
    assert_eq!(s.learned, want.learned);
}

#[test]
fn the_last_good_file_goes_beside_the_state() {
    let d = tempfile::tempdir().unwrap();
    let mut st = store(d.path());
    st.write(Save::Whole(hub(1))).unwrap();
    let with_good = Saved {
        good: Some("[network]\n".into()),
        ..head(&hub(1))
    };
    st.write(Save::Delta(with_good, Vec::new())).unwrap();
    assert_eq!(
        crate::daemon::state::load_good(d.path(), "n")
            .unwrap()
            .as_deref(),
        Some("[network]\n")
    );
    assert!(!journal(d.path()).contains("network]"));
}
