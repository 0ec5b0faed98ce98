//! `p2pctl`: operate a p2pd node and publish releases (the commands live in the `p2pctl`
//! crate; the binary is built here so that the node's tests and the testnet build it with
//! `p2pd`).

fn main() {
    p2pctl::main();
}
