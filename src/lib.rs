//! lvn: a lightweight overlay network on the kernel's own encapsulation.
//!
//! `config` reads the topology file, `reconcile` is the pure planner,
//! `datapath` observes and changes the kernel, `probe` learns endpoints
//! from keepalives and `daemon` runs it all; `naming` holds the rules for
//! what lvn calls things in the kernel, which all of them share.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod naming;
pub mod probe;
pub mod reconcile;
