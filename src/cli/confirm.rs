//! `lvn apply --confirm DURATION` and `lvn confirm`: the `commit confirmed`
//! habit of router operators. The apply waits in the foreground on a unix
//! socket (`<run-dir>/<network>.confirm.sock`, mode 0600); `lvn confirm`
//! from another shell keeps the change. Without it within the window, or
//! on Ctrl-C or SIGTERM, the apply goes back: a plan from the kernel as it
//! is to the node's last good file (kept by the last successful apply).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::session::Session;
use crate::{
    config,
    daemon::{self, short},
    datapath::kernel::Kernel,
};

/// How long either side waits for the other's line.
const LINE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn socket_path(run_dir: &Path, network: &str) -> PathBuf {
    run_dir.join(format!("{network}.confirm.sock"))
}

/// The last good file of the session's network, as a session to go back to.
fn previous(s: &Session) -> Result<Session> {
    let network = &s.topo.network.name;
    let path = daemon::good_path(&s.state_dir, network);
    let text = daemon::load_good(&s.state_dir, network)
        .map_err(|e| anyhow!("reading the last good file: {e}"))?
        .ok_or_else(|| {
            anyhow!(
                "--confirm goes back to the file the last `lvn apply` applied, and there is none ({} does not exist): run `lvn apply` without --confirm once",
                path.display()
            )
        })?;
    let topo = config::parse(&path, &text)
        .map_err(|e| anyhow!("the last good file cannot be gone back to:\n{e}"))?;
    topo.node(&s.node)?;
    Ok(Session {
        topo,
        text,
        node: s.node.clone(),
        state_dir: s.state_dir.clone(),
    })
}

/// Listen for `lvn confirm`; refuse if another apply already waits.
async fn listen(path: &Path) -> Result<UnixListener> {
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "another `lvn apply --confirm` is waiting for confirmation ({})",
            path.display()
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Removes the socket file however the wait ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What ended the wait.
enum Ended {
    Confirmed,
    Revert(String),
}

/// `lvn apply --confirm WINDOW`: apply, wait for `lvn confirm`, else go
/// back. Exit 0 when confirmed, 1 when reverted.
pub async fn apply_confirmed(
    s: Session,
    run_dir: &Path,
    window: Duration,
    json: bool,
) -> Result<ExitCode> {
    let back = previous(&s)?;
    // Ctrl-C and SIGTERM from here on revert, during the apply too (a
    // signal arriving before the wait is taken up by it).
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let path = socket_path(run_dir, &s.topo.network.name);
    let listener = listen(&path).await?;
    let _cleanup = Cleanup(path.clone());
    let new_sha = daemon::text_hash(&s.text);
    let old_sha = daemon::text_hash(&back.text);
    let mut dp = Kernel::connect().context("opening netlink")?;
    let ended = match s.apply_on(&mut dp, false, json).await {
        Ok(true) => {
            eprintln!(
                "Applied sha256 {}. Keep it with `lvn confirm` within {window:?} (same --config, --node and --run-dir); without it, or on Ctrl-C, lvn goes back to sha256 {}.",
                short(&new_sha),
                short(&old_sha)
            );
            let deadline = tokio::time::Instant::now() + window;
            loop {
                tokio::select! {
                    c = listener.accept() => match c {
                        Ok((stream, _)) => {
                            if answer(stream, &s.node, &new_sha).await {
                                break Ended::Confirmed;
                            }
                        }
                        Err(e) => eprintln!("warning: accepting `lvn confirm`: {e}"),
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        break Ended::Revert(format!("no `lvn confirm` within {window:?}"));
                    }
                    _ = int.recv() => break Ended::Revert("interrupted".into()),
                    _ = term.recv() => break Ended::Revert("SIGTERM".into()),
                }
            }
        }
        Ok(false) => Ended::Revert("the kernel still differs after the apply".into()),
        Err(e) => Ended::Revert(format!("the apply failed: {e:#}")),
    };
    match ended {
        Ended::Confirmed => {
            s.keep(false);
            eprintln!("Confirmed: keeping sha256 {}.", short(&new_sha));
            Ok(ExitCode::SUCCESS)
        }
        Ended::Revert(why) => {
            eprintln!(
                "{why}: going back to sha256 {} (the last good file).",
                short(&old_sha)
            );
            let ok = back.apply_on(&mut dp, false, json).await?;
            if back.scope() != s.scope() {
                // The new file's network or device is not the old one's:
                // remove what it made.
                s.apply_on(&mut dp, true, json).await?;
            }
            if !ok {
                bail!("going back left the kernel different from the last good file");
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Answer one `lvn confirm` client: true if it confirmed this node.
async fn answer(stream: UnixStream, node: &str, sha: &str) -> bool {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r);
    let Ok(Ok(_)) = tokio::time::timeout(LINE_TIMEOUT, r.read_line(&mut line)).await else {
        return false;
    };
    let (reply, ok) = match line.trim().strip_prefix("confirm ") {
        Some(n) if n == node => (format!("confirmed {sha}\n"), true),
        Some(n) => (
            format!("error: this apply is for node '{node}', not '{n}' (use the same --node)\n"),
            false,
        ),
        None => ("error: expected `confirm NODE`\n".to_string(), false),
    };
    let _ = tokio::time::timeout(LINE_TIMEOUT, w.write_all(reply.as_bytes())).await;
    ok
}

/// `lvn confirm`: keep what a waiting `lvn apply --confirm` applied.
pub async fn confirm(run_dir: &Path, network: &str, node: &str) -> Result<ExitCode> {
    let path = socket_path(run_dir, network);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        anyhow!(
            "no `lvn apply --confirm` is waiting for network {network} ({}: {e})",
            path.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    tokio::time::timeout(
        LINE_TIMEOUT,
        w.write_all(format!("confirm {node}\n").as_bytes()),
    )
    .await
    .context("sending the confirmation")??;
    let mut line = String::new();
    tokio::time::timeout(LINE_TIMEOUT, BufReader::new(r).read_line(&mut line))
        .await
        .context("waiting for the apply's answer")??;
    match line.trim().strip_prefix("confirmed ") {
        Some(sha) => {
            println!("Confirmed: network {network} keeps sha256 {}.", short(sha));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("{}", line.trim());
            Ok(ExitCode::from(1))
        }
    }
}
