//! lvn: a lightweight overlay network on the kernel's own encapsulation.
//!
//! `config` reads the topology file, `reconcile` is the pure planner,
//! `datapath` observes and changes the kernel.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod probe;
pub mod reconcile;
