//! Keys on disk: the node identity and publisher keys.
//!
//! Both are ed25519 keys stored as PKCS#8 PEM files with mode 0600, the format
//! `openssl genpkey -algorithm ed25519` writes, so operators can make and inspect them with
//! standard tools. The node key is the node's [`protocol::NodeId`]; a publisher key never
//! leaves `p2pctl`.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A key file problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not an ed25519 PKCS#8 PEM key.
    #[error("{0}: not an ed25519 private key in PKCS#8 PEM form")]
    Format(PathBuf),
    /// The file exists and would be overwritten.
    #[error("{0}: already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// The system random source failed.
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

/// A new random key.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to a new file `path` with mode 0600; refuses to overwrite.
pub fn write_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Format(path.to_owned()))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_owned())
            } else {
                KeyError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Reads a key written by [`write_key`] (or by openssl).
pub fn read_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|_| KeyError::Format(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_round_trips_with_private_mode_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = generate().unwrap();
        write_key(&path, &key).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_key(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(matches!(write_key(&path, &key), Err(KeyError::Exists(_))));
        std::fs::write(dir.path().join("bad"), "nope").unwrap();
        assert!(matches!(
            read_key(&dir.path().join("bad")),
            Err(KeyError::Format(_))
        ));
    }
}
