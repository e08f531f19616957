//! The state file's journal: a change to a few peers is appended to
//! `<state-dir>/<network>.journal`, one JSON record a line, instead of
//! rewriting the whole state file (`<network>.json`, ~14 MB at 100,000
//! peers). The state file is the snapshot; the journal continues it. Both
//! are compacted into a new snapshot when the journal grows larger than the
//! snapshot, when the network is renamed, after a failed write, and when
//! the daemon stops.
//!
//! ```text
//! {"generation":7}                       the snapshot this journal continues
//! {"peer":{"name":"alice","endpoint":"198.51.100.2:40059","counter":3,"last_seen_unix":1,"up":true}}
//! {"forget":"bob"}                       no longer declared
//! {"head":{"network":"n","node":"hub1","counter":0,"auth":"none","pending":"ab12.."}}
//! ```
//!
//! A compaction writes the snapshot (with the next generation) before it
//! starts a new journal, each by rename: a crash between the two leaves a
//! journal of the old generation, whose records the snapshot already holds,
//! and it is ignored. A record cut short by a crash during an append, or
//! any line that does not read, is reported with its `file:line` and
//! skipped; every other record is kept, and the next write compacts.
//!
//! [`Store`] runs on a blocking thread, off the daemon's loop, and keeps
//! its own copy of what the files hold: the loop hands it only what
//! changed ([`Save::Delta`]), so building a save costs what it changes.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::state::{Saved, SavedPeer, path, save_good, write_atomic};

pub fn journal_path(state_dir: &Path, network: &str) -> PathBuf {
    state_dir.join(format!("{network}.journal"))
}

/// What one save carries from the controller to the [`Store`].
#[derive(Debug, Clone)]
pub enum Save {
    /// Everything: the state file is written whole (the first save of a
    /// run, after a reload that changed the network, after a failure).
    Whole(Saved),
    /// The head (everything but `learned`, which is empty) and the peers
    /// that changed since the last save; `None`: forget the peer.
    Delta(Saved, Vec<(String, Option<SavedPeer>)>),
}

impl Save {
    /// The last good file's text, when this save brings one.
    pub fn good(&self) -> Option<&str> {
        match self {
            Save::Whole(s) | Save::Delta(s, _) => s.good.as_deref(),
        }
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// First line: the generation of the snapshot this journal continues.
    Generation(u64),
    /// A peer's state, as the snapshot's `learned` has it.
    Peer {
        name: String,
        #[serde(flatten)]
        state: SavedPeer,
    },
    /// A peer no longer declared.
    Forget(String),
    /// Everything but `learned` changed (a reload, a confirmation).
    Head(Saved),
}

impl Saved {
    /// Everything but the peers and the last good file's text (not a
    /// clone of the whole: that would cost every peer).
    fn head(&self) -> Saved {
        Saved {
            network: self.network.clone(),
            node: self.node.clone(),
            learned: Default::default(),
            counter: self.counter,
            auth: self.auth.clone(),
            primary: self.primary.clone(),
            pending: self.pending.clone(),
            rejected: self.rejected.clone(),
            good: None,
            generation: 0,
        }
    }

    fn set_head(&mut self, head: Saved) {
        let learned = std::mem::take(&mut self.learned);
        let (good, generation) = (self.good.take(), self.generation);
        *self = Saved {
            learned,
            good,
            generation,
            ..head
        };
    }

    /// Take a save as the files would: what a restart would read after it.
    pub fn apply(&mut self, save: Save) {
        let good = save.good().map(std::sync::Arc::from);
        match save {
            Save::Whole(s) => *self = Saved { good: None, ..s },
            Save::Delta(head, changed) => {
                self.set_head(head);
                for (name, p) in changed {
                    self.apply_peer(name, p);
                }
            }
        }
        if good.is_some() {
            self.good = good;
        }
    }

    fn apply_peer(&mut self, name: String, p: Option<SavedPeer>) {
        match p {
            Some(p) => {
                self.learned.insert(name, p);
            }
            None => {
                self.learned.remove(&name);
            }
        }
    }
}

/// What the files on disk are, beside what they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnDisk {
    pub snapshot_bytes: u64,
    pub journal_bytes: u64,
    /// Something to mend (a bad or torn line, a stale journal): the next
    /// write compacts.
    pub compact: bool,
    /// What was wrong with the journal, each as `file:line: what`.
    pub problems: Vec<String>,
}

/// Replay `<network>.journal` onto the snapshot `s`. Lines that do not
/// read are reported (`file:line`) and skipped; a journal of another
/// generation than the snapshot's was left by a compaction cut short, and
/// its records are already in the snapshot.
pub(super) fn replay(state_dir: &Path, network: &str, s: &mut Saved) -> Result<OnDisk, String> {
    let p = journal_path(state_dir, network);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::default()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let mut on = OnDisk {
        journal_bytes: bytes.len() as u64,
        ..OnDisk::default()
    };
    let torn = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // The last piece is empty when the file ends with a newline.
    let count = lines.len() - usize::from(!torn);
    for (i, line) in lines.into_iter().take(count).enumerate() {
        let at = i + 1;
        if line.is_empty() {
            continue;
        }
        let record = match serde_json::from_slice::<Record>(line) {
            Ok(r) => r,
            Err(e) => {
                let what = if torn && at == count {
                    "a record cut short (a crash during a write?)".to_string()
                } else {
                    format!("not a journal record: {e}")
                };
                on.problems
                    .push(format!("{}:{at}: {what}; skipped", p.display()));
                continue;
            }
        };
        match record {
            Record::Generation(g) if at == 1 => {
                if g != s.generation {
                    on.problems.push(format!(
                        "{}:1: generation {g}, not the state file's {}: left by a compaction cut short, its records are in the state file; ignored",
                        p.display(),
                        s.generation
                    ));
                    on.compact = true;
                    return Ok(on);
                }
            }
            Record::Generation(_) => on.problems.push(format!(
                "{}:{at}: a generation after the first line; skipped",
                p.display()
            )),
            Record::Peer { name, state } => s.apply_peer(name, Some(state)),
            Record::Forget(name) => s.apply_peer(name, None),
            Record::Head(h) => s.set_head(h),
        }
    }
    // A last line that read but has no newline is whole; the next append
    // must not run on from it.
    on.compact |= torn || !on.problems.is_empty();
    Ok(on)
}

/// The state files of one network, written off the loop. Owns a copy of
/// what the files hold together.
pub struct Store {
    dir: PathBuf,
    disk: Saved,
    on: OnDisk,
    /// The journal, open for appending (of `disk.network`, this
    /// generation).
    journal: Option<File>,
}

impl Store {
    /// The files of `disk` (as [`super::state::load_all`] read them).
    pub fn new(dir: PathBuf, disk: Saved, on: OnDisk) -> Store {
        Store {
            dir,
            disk,
            on,
            journal: None,
        }
    }

    /// Write `save`: appended to the journal, or compacted into a new
    /// snapshot. After an error the next write compacts.
    pub fn write(&mut self, save: Save) -> std::io::Result<()> {
        let r = self.try_write(save);
        if r.is_err() {
            self.on.compact = true;
            self.journal = None;
        }
        r
    }

    fn try_write(&mut self, save: Save) -> std::io::Result<()> {
        if let Some(text) = save.good() {
            save_good(&self.dir, &save_network(&save), text)?;
        }
        let (head, changed) = match save {
            Save::Whole(s) => {
                self.disk = Saved {
                    good: None,
                    generation: self.disk.generation,
                    ..s
                };
                return self.compact();
            }
            Save::Delta(head, changed) => (head, changed),
        };
        let renamed = head.network != self.disk.network;
        let mut buf = Vec::new();
        if head.head() != self.disk.head() {
            line(&mut buf, &Record::Head(head.head()))?;
            self.disk.set_head(head);
        }
        for (name, p) in changed {
            let r = match &p {
                Some(state) => Record::Peer {
                    name: name.clone(),
                    state: state.clone(),
                },
                None => Record::Forget(name.clone()),
            };
            line(&mut buf, &r)?;
            self.disk.apply_peer(name, p);
        }
        // Generation 0 is a file of an earlier version (or none): such a
        // version may write it again, without a generation, after this
        // one's journal; a journal continues only a snapshot of its own.
        let unnumbered = self.disk.generation == 0;
        if renamed
            || unnumbered
            || self.on.compact
            || self.on.journal_bytes + buf.len() as u64 > self.on.snapshot_bytes
        {
            return self.compact();
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.append(&buf)
    }

    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let p = journal_path(&self.dir, &self.disk.network);
        if self.on.journal_bytes == 0 {
            self.on.journal_bytes = self.start_journal()?;
        }
        let f = match &mut self.journal {
            Some(f) => f,
            None => self
                .journal
                .insert(OpenOptions::new().append(true).open(&p)?),
        };
        f.write_all(buf)?;
        f.sync_data()?;
        self.on.journal_bytes += buf.len() as u64;
        Ok(())
    }

    /// A new journal of this generation, holding only its first line, in
    /// place of any other (by rename); returns its size.
    fn start_journal(&mut self) -> std::io::Result<u64> {
        self.journal = None;
        let mut first = Vec::new();
        line(&mut first, &Record::Generation(self.disk.generation))?;
        let p = journal_path(&self.dir, &self.disk.network);
        write_atomic(&self.dir, &p, &first)?;
        Ok(first.len() as u64)
    }

    /// Everything into a new snapshot of the next generation, then an
    /// empty journal of that generation.
    pub fn compact(&mut self) -> std::io::Result<()> {
        self.journal = None;
        self.disk.generation = self.disk.generation.wrapping_add(1);
        let mut json = serde_json::to_string_pretty(&self.disk)?;
        json.push('\n');
        write_atomic(
            &self.dir,
            &path(&self.dir, &self.disk.network),
            json.as_bytes(),
        )?;
        self.on = OnDisk {
            snapshot_bytes: json.len() as u64,
            journal_bytes: self.start_journal()?,
            ..OnDisk::default()
        };
        Ok(())
    }
}

fn save_network(s: &Save) -> String {
    match s {
        Save::Whole(s) | Save::Delta(s, _) => s.network.clone(),
    }
}

fn line(buf: &mut Vec<u8>, r: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *buf, r)?;
    buf.push(b'\n');
    Ok(())
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
