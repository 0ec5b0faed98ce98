//! The p2pd testnet: real `p2pd` processes on loopback in several sites, with an emulated WAN
//! between the sites, driven by scenario files.
//!
//! * [`scenario`]: the scenario TOML and the lower bound computed from its caps.
//! * [`wan`]: the UDP relay that shapes and counts cross-site traffic.
//! * [`fleet`]: starting nodes, publishing, waiting for completion, checking exports.
//! * [`report`]: the tables printed after a run.
//! * [`rogue`]: a hostile peer for tests (corrupt chunks, forged manifests, broken frames).
//! * [`sim`]: the deterministic fleet-scale simulator (`testnet sim`), driving the product's
//!   planner for thousands of endpoints beside the baselines and the lower bound.
//!
//! `cargo run --release -p testnet -- demo` runs the demo; `-- run SCENARIO.toml` any
//! scenario.

pub mod fleet;
pub mod report;
pub mod rogue;
pub mod scenario;
pub mod sim;
pub mod view;
pub mod wan;
