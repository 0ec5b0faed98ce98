//! `p2pctl`'s side of the control API: HTTP/1.1 requests over the daemon's Unix socket.

use crate::ApiErrorBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// How long to wait for the daemon to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for the socket to appear when it does not exist: `p2pd run &` followed
/// at once by a `p2pctl` command races the daemon's first milliseconds, in which it binds
/// the socket (before anything slow; a request then waits in the socket's queue until the
/// daemon answers). A socket file that exists and refuses is a daemon that is gone: no wait.
const STARTUP_WAIT: Duration = Duration::from_secs(1);

/// How often the socket is looked for during [`STARTUP_WAIT`].
const STARTUP_POLL: Duration = Duration::from_millis(25);

/// Largest answer read into memory (a release listing of a big store, a big release's tree).
const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "p2pd is not running: nothing listens on {0} (start it with `p2pd run --config FILE`, or pass --socket)"
    )]
    NotRunning(PathBuf),
    /// The socket exists but may not be used.
    #[error("{0}: permission denied; run p2pctl as the daemon's user or group")]
    PermissionDenied(PathBuf),
    /// The path given as the socket is something else (a directory, a file).
    #[error(
        "{0} is {1}, not p2pd's control socket: pass the socket itself (control.socket in p2pd.toml, such as DATA_DIR/control.sock)"
    )]
    NotASocket(PathBuf, &'static str),
    /// The daemon refused the request.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: crate::ErrorCode,
        /// Message.
        message: String,
    },
    /// Transport failure.
    #[error("talking to p2pd: {0}")]
    Transport(String),
}

/// A connection factory for the daemon's socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// An answer whose body is read line by line.
pub struct LineStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    done: bool,
}

impl LineStream {
    /// The next line, without its newline; `None` at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..pos]).into_owned()));
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        if self.buf.len() > RESPONSE_BYTES_MAX {
                            return Err(ClientError::Transport("answer line too long".into()));
                        }
                    }
                }
            }
        }
    }
}

impl Client {
    /// A client for `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// Connects to the socket, waiting up to [`STARTUP_WAIT`] for it to appear.
    async fn connect(&self) -> Result<UnixStream, ClientError> {
        use std::os::unix::fs::FileTypeExt;
        let started = std::time::Instant::now();
        loop {
            match std::fs::metadata(&self.socket) {
                Ok(m) if m.is_dir() => {
                    return Err(ClientError::NotASocket(self.socket.clone(), "a directory"));
                }
                Ok(m) if !m.file_type().is_socket() => {
                    return Err(ClientError::NotASocket(self.socket.clone(), "not a socket"));
                }
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if started.elapsed() >= STARTUP_WAIT {
                        return Err(ClientError::NotRunning(self.socket.clone()));
                    }
                    tokio::time::sleep(STARTUP_POLL).await;
                }
                // Unreadable parent directory and the like: the connect says what it is.
                Err(_) => break,
            }
        }
        tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket))
            .await
            .map_err(|_| ClientError::NotRunning(self.socket.clone()))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied(self.socket.clone())
                }
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                _ => ClientError::Transport(e.to_string()),
            })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(format!("http://p2pd{path}"))
            .header("host", "p2pd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = read_body(resp.into_body()).await?;
        Err(match serde_json::from_slice::<ApiErrorBody>(&bytes) {
            Ok(body) => ClientError::Api {
                status,
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => ClientError::Api {
                status,
                code: crate::ErrorCode::Http,
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            },
        })
    }

    /// Sends a request and decodes the JSON answer.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = self.send(method, path, body).await?;
        let bytes = read_body(resp.into_body()).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Transport(format!("bad answer: {e}")))
    }

    /// Sends a request whose answer is a stream of lines.
    pub async fn call_lines<B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<LineStream, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = self.send(method, path, Some(body)).await?;
        Ok(LineStream {
            body: resp.into_body(),
            buf: Vec::new(),
            done: false,
        })
    }
}

async fn read_body(mut body: hyper::body::Incoming) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Transport(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > RESPONSE_BYTES_MAX {
                return Err(ClientError::Transport("answer too large".into()));
            }
        }
    }
    Ok(out)
}
