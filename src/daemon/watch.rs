//! Live reload: watch the config file's directory, not the file, so atomic
//! renames, editors' swap files, `git pull` and a Kubernetes ConfigMap's
//! `..data` symlink swap are all seen.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time before a burst of events becomes one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

pub fn watch(config: &Path, tx: mpsc::Sender<&'static str>) -> Result<notify::RecommendedWatcher> {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
        {
            let _ = raw_tx.send(());
        }
    })
    .context("starting the config watcher")?;
    w.watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Collect the burst, then reload once.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {}
            if tx.send("file changed").await.is_err() {
                break;
            }
        }
    });
    Ok(w)
}
