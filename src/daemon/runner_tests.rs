//! The runner with the fake kernel: the loop stays responsive while a
//! reconcile is running, because the reconcile runs beside it.

use std::time::{Duration, Instant};

use super::{Options, runner, status};
use crate::{
    datapath::{ApplyReport, Datapath, DatapathError, Scope, fake::FakeKernel},
    reconcile::{Observed, Plan},
};

/// The fake kernel, taking `delay` for every apply (a kernel with 100,000
/// entries to write, or one that is slow to answer).
struct Slow {
    kernel: FakeKernel,
    delay: Duration,
}

impl Datapath for Slow {
    async fn observe(&mut self, scope: &Scope) -> Result<Observed, DatapathError> {
        self.kernel.observe(scope).await
    }

    async fn apply(&mut self, scope: &Scope, plan: &Plan) -> Result<ApplyReport, DatapathError> {
        tokio::time::sleep(self.delay).await;
        self.kernel.apply(scope, plan).await
    }

    fn ifindex(&self, device: &str) -> Option<u32> {
        self.kernel.ifindex(device)
    }
}

const TOPOLOGY: &str = r#"[network]
name = "slow"
overlay = "100.64.0.0/24"
port = 4789
vni = 7

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1:4789"

[nodes.alice]
address = "100.64.0.2"
"#;

#[tokio::test]
async fn a_slow_reconcile_does_not_hold_up_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("topology.toml");
    std::fs::write(&config, TOPOLOGY).unwrap();
    let opts = Options {
        config,
        node: "hub1".into(),
        key_file: dir.path().join("private.key"),
        state_dir: dir.path().join("state"),
        run_dir: dir.path().join("run"),
        resync: Duration::from_secs(30),
        metrics: None,
    };
    let path = status::socket_path(&opts.run_dir, "slow");
    let dp = Slow {
        kernel: FakeKernel::default(),
        delay: Duration::from_secs(3),
    };
    let client = async {
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ask = || async {
            let t = Instant::now();
            let s = tokio::time::timeout(Duration::from_secs(1), status::query(&path)).await;
            (s, t.elapsed())
        };
        let during = ask().await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        (during, ask().await)
    };
    tokio::select! {
        r = runner::run(opts, dp, None) => panic!("the runner stopped: {r:?}"),
        ((during, took), (after, _)) = client => {
            let during = during.expect("status answered within 1 s").expect("status");
            assert!(took < Duration::from_secs(1), "{took:?}");
            assert!(!during.reconcile.ok, "the first reconcile is still running");
            let after = after.expect("status answered").expect("status");
            assert!(after.reconcile.ok, "the reconcile came back: {:?}", after.reconcile);
        }
    }
}
