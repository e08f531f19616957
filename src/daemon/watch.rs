//! Live reload: watch the config file's directory, not the file, so atomic
//! renames, `git pull` and a Kubernetes ConfigMap's `..data` symlink swap
//! are all seen, and react only to events on the file itself or on
//! `..data`: a log file or an editor's swap file beside it changes nothing.

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
    let name = config.file_name().map(ToOwned::to_owned);
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
            && ev.paths.iter().any(|p| concerns(p, name.as_deref()))
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

/// Whether a change to `path` may change the topology file `name`.
fn concerns(path: &Path, name: Option<&std::ffi::OsStr>) -> bool {
    let Some(file) = path.file_name() else {
        return false;
    };
    Some(file) == name || file == KUBERNETES_DATA
}

/// The symlink a Kubernetes ConfigMap volume swaps atomically.
const KUBERNETES_DATA: &str = "..data";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_watch_reacts_only_to_the_topology_file() {
        let name = Some(std::ffi::OsStr::new("topology.toml"));
        assert!(concerns(Path::new("/etc/lvn/topology.toml"), name));
        assert!(concerns(Path::new("/etc/lvn/..data"), name));
        assert!(!concerns(Path::new("/etc/lvn/hub.log"), name));
        assert!(!concerns(Path::new("/etc/lvn/.topology.toml.swp"), name));
        assert!(!concerns(Path::new("/etc/lvn/..data_tmp"), name));
        assert!(!concerns(Path::new("/"), name));
    }
}
