//! Log lines reach stderr from a thread of their own. A line is still
//! formatted (and timestamped) where it is logged, then handed over in
//! memory; the thread writes whatever queued up in one write. The daemon's
//! loop neither waits on a slow reader of stderr (a pipe to journald)
//! nor makes a system call per line (a mass join logs several lines per
//! spoke): the thread is woken only when the queue stops being empty.
//! Nothing is dropped: past `WAITING` bytes queued, a caller waits, as it
//! would on stderr itself.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes waiting for the writer thread, at most (about 100,000 lines).
const WAITING: usize = 16 << 20;

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// Write out what waits, then stop.
    stop: bool,
    /// The thread stopped: write straight to stderr.
    gone: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Something to write (signalled when the queue stops being empty, not
    /// per line: a line costs no system call while the thread is busy).
    ready: Condvar,
    /// Room in the queue again.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` for tracing: each event's text goes to the thread.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

/// Stops the thread when dropped, after it wrote every line queued.
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer for stderr on a thread of its own; `None` if no thread could
/// be started (then log straight to stderr).
pub fn stderr() -> Option<(Lines, Flush)> {
    let shared = Arc::new(Shared::default());
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("lvn-log".into())
        .spawn(move || write_all(&s, &mut std::io::stderr().lock()))
        .ok()?;
    Some((
        Lines(shared.clone()),
        Flush {
            shared,
            thread: Some(thread),
        },
    ))
}

/// Write whatever queued up, in one write each time, until stopped.
fn write_all(shared: &Shared, out: &mut impl Write) {
    let mut chunk = Vec::new();
    loop {
        let stop = {
            let mut q = shared.lock();
            while q.bytes.is_empty() && !q.stop {
                q = shared.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::swap(&mut chunk, &mut q.bytes);
            q.gone = q.stop;
            q.stop
        };
        shared.room.notify_all();
        let _ = out.write_all(&chunk);
        let _ = out.flush();
        chunk.clear();
        if stop {
            return;
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One event's text, queued when tracing is done with it.
pub struct Line {
    shared: Arc<Shared>,
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
        let mut q = self.shared.lock();
        while q.bytes.len() >= WAITING && !q.gone {
            q = self
                .shared
                .room
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if q.gone {
            // The process is ending.
            drop(q);
            let _ = std::io::stderr().write_all(&self.buf);
            return;
        }
        let first = q.bytes.is_empty();
        q.bytes.extend_from_slice(&self.buf);
        drop(q);
        if first {
            self.shared.ready.notify_one();
        }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            shared: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_arrives_in_order_before_the_stop() {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let writer = std::thread::spawn(move || {
            let mut out = Vec::new();
            write_all(&s, &mut out);
            out
        });
        let lines = Lines(shared.clone());
        for i in 0..1000 {
            let mut l = lines.make_writer();
            writeln!(l, "line {i}").unwrap();
        }
        let flush = Flush {
            shared,
            thread: None,
        };
        drop(flush);
        let out = String::from_utf8(writer.join().unwrap()).unwrap();
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, want);
    }
}
