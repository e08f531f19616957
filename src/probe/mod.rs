//! Keepalives: NAT reflexive address discovery, binding keepalive, liveness.
//!
//! `wire.rs` is the message format, `hub.rs` and `spoke.rs` are pure state
//! machines (`now` passed in, actions returned), `verify.rs` is the tag and
//! counter check both share, `auth.rs` derives pair keys and tags,
//! `keyfile.rs` reads and writes private keys, and `io.rs` holds the
//! sockets: keepalives travel inside the VXLAN tunnel, so they keep
//! open the very NAT binding the data uses, and the hub learns that binding.

pub mod auth;
pub mod failover;
pub mod hub;
pub mod io;
pub mod keyfile;
pub mod pmtu;
pub mod spoke;
pub mod verify;
pub mod wire;

pub use auth::{PairKey, PrivateKey, PublicKey, pair_key};

#[cfg(test)]
mod tests;
