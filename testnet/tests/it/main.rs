//! The testnet's integration tests, one binary: real `p2pd` processes on loopback, and the
//! fleet simulator. One binary links once, and its tests share the machine's cores (two at
//! a time by default) without a pause between files. The control-plane figures are measured
//! in `tests/control.rs`, a binary of its own, where no other fleet shares the CPU.

mod hostile;
mod membership;
mod month;
mod patches;
mod report;
mod rollout;
mod rollout_sim;
mod schedule;
mod sim;
mod swarm;
