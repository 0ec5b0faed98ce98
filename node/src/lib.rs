//! The p2pd daemon: what runs the other crates together on a node.
//!
//! The parts it drives live in their own crates: `store` (what is on disk), `net` (the
//! network and the fetches), `api` (the control API's types and client), with the rules in
//! `protocol` and `scheduler`. The binaries are `src/bin/p2pd` (the daemon; `p2pd run` is
//! its `daemon` module: signals, clean shutdown, the status publisher) and `src/bin/p2pctl.rs`
//! (a `main` calling the `p2pctl` crate).
//!
//! # Layout
//!
//! * [`config`]: the TOML configuration and the commented default `p2pd init` writes.
//! * [`publish`]: a publish in two steps (stage the chunks and the manifest to sign, commit
//!   the signed envelope through the network's gate), and the staged sessions.
//! * [`activate`]: installing completed releases into the target directory inside the
//!   install window (atomic `current` switch, apply command, rollback, records).
//! * [`retention`]: `[store] keep_versions`, removing older versions and compacting.
//! * [`rollout`]: what the installer and the status ask of a release's rollout (target,
//!   holds, requirements, ring gates), gathered for `scheduler::rollout`'s one decision.
//! * [`server`]: the control API's handlers (thin adapters over `api`'s types) and the
//!   metrics and dashboard listener; [`metrics`] and [`dashboard`] are what it serves there.
//!
//! Errors are typed here; only the binaries use `anyhow`.

pub mod activate;
pub mod config;
pub mod dashboard;
pub mod metrics;
pub mod publish;
pub mod retention;
pub mod rollout;
pub mod server;
