//! The raw quinn baseline for the data plane: one connection, one stream, N bytes from memory
//! to memory over loopback, quinn's default transport settings, rustls with its default
//! crypto provider (aws-lc-rs) and cipher-suite order. The TLS configs are the data plane's
//! (`net::tls`: libp2p's certificate, rustls's defaults), so the handshake and cipher
//! match p2pd's; after the handshake, nothing of p2pd runs.
//!
//! `quinn_raw [--mib N] [--runs R] [--json]`: prints each run and the median, in MiB/s and
//! Gbit/s. `benches/swarm.sh` compares p2pd's two-node fetch against it in the same run.

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::sync::Arc;
use std::time::Instant;

const ALPN: &[u8] = b"quinn-raw";

/// Size of the buffer the sender writes again and again (quinn's `perf` uses the same idea).
const WRITE_BYTES: usize = 1 << 20;

/// Bytes per read on the receiving side.
const READ_BYTES: usize = 1 << 20;

fn main() -> anyhow::Result<()> {
    let mut mib: u64 = 1024;
    let mut runs = 3;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().unwrap_or_default().parse()?,
            "--runs" => runs = args.next().unwrap_or_default().parse()?,
            "--json" => json = true,
            "-h" | "--help" => {
                println!("quinn_raw [--mib N] [--runs R] [--json]");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(mib > 0 && runs > 0, "--mib and --runs must be above 0");
    let mut speeds = Vec::new();
    for run in 1..=runs {
        let secs = transfer(mib << 20)?;
        let mib_s = mib as f64 / secs;
        if !json {
            println!(
                "run {run}: {mib} MiB in {secs:.3} s = {mib_s:.0} MiB/s = {:.2} Gbit/s",
                mib_s * 8.0 * 1.048_576 / 1000.0
            );
        }
        speeds.push(mib_s);
    }
    speeds.sort_by(f64::total_cmp);
    let median = speeds[speeds.len() / 2];
    if json {
        println!(
            "{{\"mib\":{mib},\"runs\":{runs},\"median_mib_s\":{median:.1},\"runs_mib_s\":{speeds:?}}}"
        );
    } else {
        println!(
            "median: {median:.0} MiB/s = {:.2} Gbit/s",
            median * 8.0 * 1.048_576 / 1000.0
        );
    }
    Ok(())
}

/// An endpoint with the data plane's socket buffers (quinn's `perf` tool raises them too).
fn endpoint(server: Option<quinn::ServerConfig>) -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
    net::quic::raise_udp_buffers(&socket)?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no runtime"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )?)
}

/// Sends `bytes` over a fresh connection; returns the seconds from the first byte written to
/// the last byte read. Like quinn's `perf` server and client (two processes), each side runs
/// on its own thread with its own single-threaded runtime.
fn transfer(bytes: u64) -> anyhow::Result<f64> {
    let server_key = libp2p::identity::Keypair::generate_ed25519();
    let server_peer = server_key.public().to_peer_id();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || -> anyhow::Result<(u64, Instant)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut tls = net::tls::server_config(&server_key)?;
            tls.alpn_protocols = vec![ALPN.to_vec()];
            let config =
                quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
            let server = endpoint(Some(config))?;
            addr_tx.send(server.local_addr()?)?;
            let conn = server
                .accept()
                .await
                .ok_or_else(|| anyhow::anyhow!("no connection"))?
                .await?;
            let mut recv = conn.accept_uni().await?;
            let mut got = 0u64;
            while let Some(chunk) = recv.read_chunk(READ_BYTES, true).await? {
                got += chunk.bytes.len() as u64;
            }
            let done = Instant::now();
            conn.close(0u32.into(), b"done");
            server.wait_idle().await;
            anyhow::Ok((got, done))
        })
    });
    let addr = addr_rx.recv()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = rt.block_on(async move {
        let client_key = libp2p::identity::Keypair::generate_ed25519();
        let mut tls = net::tls::client_config(&client_key, server_peer)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let client = endpoint(None)?;
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        let conn = client.connect_with(config, addr, "raw")?.await?;
        let buf = Bytes::from(vec![0x5a; WRITE_BYTES]);
        let mut send = conn.open_uni().await?;
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(WRITE_BYTES as u64) as usize;
            send.write_chunk(buf.slice(..n)).await?;
            left -= n as u64;
        }
        send.finish()?;
        // Stay until the receiver has everything (it closes the connection).
        let _ = conn.closed().await;
        client.wait_idle().await;
        anyhow::Ok(start)
    })?;
    let (got, done) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    anyhow::ensure!(got == bytes, "received {got} of {bytes} bytes");
    Ok(done.duration_since(start).as_secs_f64())
}
