//! The p2pd node: the daemon `p2pd` and the operator tool `p2pctl`.
//!
//! This crate holds every effect of the system (files, sockets, tasks, the clock); decisions
//! live in `protocol` and `chunking` and are called from here.
//!
//! # Layout
//!
//! * [`config`]: the TOML configuration and the commented default `p2pd init` writes.
//! * [`identity`]: ed25519 keys on disk (node identity, publisher keys), PKCS#8 PEM, 0600.
//! * [`store`]: append-only pack files indexed in redb; atomic, crash-safe publish sessions.
//! * [`ingest`]: scanning a tree to publish and streaming it through the chunking pipeline.
//! * [`publish`]: a publish in two steps (stage the chunks and the manifest to sign, commit
//!   the signed envelope through the network's gate), and the staged sessions.
//! * [`release`]: re-verifying and exporting stored releases.
//! * [`activate`]: installing completed releases into the target directory inside the
//!   install window (atomic `current` switch, apply command, rollback, records).
//! * [`api`]: the control API's JSON types, typed states and error codes end to end
//!   (`FetchState`, `InstallState`, `ErrorCode` → `cli::ExitCode`); [`server`] serves them,
//!   [`client`] calls them.
//! * [`net`]: the libp2p control plane, the quinn data plane and the fetcher.
//! * [`daemon`]: `p2pd run`, signal handling and clean shutdown.
//! * [`cli`]: helpers shared by the two binaries (logging, exit codes, formatting).

pub mod activate;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod metrics;
pub mod publish;
pub mod server;
