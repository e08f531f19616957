//! Log lines reach stderr from a thread of their own. A line is still
//! formatted (and timestamped) where it is logged, then handed over in
//! memory; the thread writes whatever queued up in one write. The daemon's
//! loop neither waits on a slow reader of stderr (a pipe to journald)
//! nor makes a system call per line: a mass join logs several lines per
//! spoke. Nothing is dropped: past `QUEUE` lines waiting, a caller waits,
//! as it would on stderr itself.

use std::{
    io::Write,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread, at most.
const QUEUE: usize = 1 << 16;

enum Msg {
    Line(Vec<u8>),
    /// Write out everything before this, then stop.
    Stop,
}

/// The `MakeWriter` for tracing: each event's text goes to the thread.
#[derive(Clone)]
pub struct Lines(SyncSender<Msg>);

/// Stops the thread when dropped, after it wrote every line queued.
pub struct Flush {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// A writer for stderr on a thread of its own; `None` if no thread could
/// be started (then log straight to stderr).
pub fn stderr() -> Option<(Lines, Flush)> {
    let (tx, rx) = sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("lvn-log".into())
        .spawn(move || write_all(&rx, &mut std::io::stderr().lock()))
        .ok()?;
    Some((
        Lines(tx.clone()),
        Flush {
            tx,
            thread: Some(thread),
        },
    ))
}

/// Write lines as they come, flushing whenever none is waiting.
fn write_all(rx: &Receiver<Msg>, out: &mut impl Write) {
    let mut buf = std::io::BufWriter::with_capacity(64 << 10, out);
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        while let Some(m) = next {
            match m {
                Msg::Line(l) => {
                    let _ = buf.write_all(&l);
                }
                Msg::Stop => {
                    let _ = buf.flush();
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = buf.flush();
    }
    let _ = buf.flush();
}

impl Drop for Flush {
    fn drop(&mut self) {
        if self.tx.send(Msg::Stop).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

/// One event's text, sent when tracing is done with it.
pub struct Line {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        // The thread stopped (the process is ending): straight to stderr.
        if let Err(std::sync::mpsc::SendError(Msg::Line(l))) = self.tx.send(Msg::Line(line)) {
            let _ = std::io::stderr().write_all(&l);
        }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            tx: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_arrives_in_order_before_the_stop() {
        let (tx, rx) = sync_channel(4);
        let writer = std::thread::spawn(move || {
            let mut out = Vec::new();
            write_all(&rx, &mut out);
            out
        });
        let lines = Lines(tx.clone());
        for i in 0..100 {
            let mut l = lines.make_writer();
            writeln!(l, "line {i}").unwrap();
        }
        tx.send(Msg::Stop).unwrap();
        let out = String::from_utf8(writer.join().unwrap()).unwrap();
        let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, want);
    }
}
