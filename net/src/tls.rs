//! TLS for the data plane: libp2p's certificate format with rustls's default cipher suites.
//!
//! The certificate is libp2p-tls's: a self-signed X.509 certificate for a fresh TLS key,
//! carrying an extension in which the node's ed25519 identity key signs that TLS key. So a
//! verified handshake proves the libp2p peer id, the same id the control plane knows.
//!
//! libp2p-tls's own configs put ChaCha20-Poly1305 first, and the client's order decides. On
//! CPUs with AES instructions that costs a quarter of a serving node's CPU at loopback speed
//! (measured with `benches/swarm.sh`). These configs use the same certificate checks with
//! rustls's default provider and order (AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305), TLS 1.3
//! only, client certificates mandatory.

use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p_tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// Server side: any peer may connect, but must present a valid libp2p certificate.
pub fn server_config(keypair: &Keypair) -> crate::Result<rustls::ServerConfig> {
    let provider = provider();
    let cert = certified_key(keypair, &provider)?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(crate::Error::setup)?
        .with_client_cert_verifier(Arc::new(PeerVerifier { expected: None }))
        .with_cert_resolver(cert))
}

/// Client side: the server must prove it is `peer`.
pub fn client_config(keypair: &Keypair, peer: PeerId) -> crate::Result<rustls::ClientConfig> {
    let provider = provider();
    let cert = certified_key(keypair, &provider)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(crate::Error::setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier {
            expected: Some(peer),
        }))
        .with_client_cert_resolver(cert))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The node's certificate and TLS key. Not through `with_single_cert`: that parses the
/// certificate with webpki, which refuses libp2p's critical identity extension.
fn certified_key(
    keypair: &Keypair,
    provider: &rustls::crypto::CryptoProvider,
) -> crate::Result<Arc<SingleCertAndKey>> {
    let (cert, key) = certificate::generate(keypair).map_err(crate::Error::setup)?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(crate::Error::setup)?;
    Ok(Arc::new(SingleCertAndKey::from(CertifiedKey::new(
        vec![cert],
        key,
    ))))
}

/// Checks a libp2p certificate (one certificate, self-signed, a valid identity extension)
/// and, for a server, that it proves the expected peer id.
#[derive(Debug)]
struct PeerVerifier {
    expected: Option<PeerId>,
}

impl PeerVerifier {
    fn check_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<PeerId, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a p2pd peer presents exactly one certificate".into(),
            ));
        }
        Ok(certificate::parse(end_entity)?.peer_id())
    }

    fn check_signature(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)?.verify_signature(dss.scheme, message, dss.signature())?;
        Ok(HandshakeSignatureValid::assertion())
    }

    /// The TLS key of a libp2p certificate is ECDSA (rcgen's default) or ed25519.
    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
        ]
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let peer = self.check_chain(end_entity, intermediates)?;
        if self.expected.is_some_and(|e| e != peer) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_chain(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_comes_first() {
        let config = client_config(&Keypair::generate_ed25519(), PeerId::random()).unwrap();
        let first = config.crypto_provider().cipher_suites[0].suite();
        assert_eq!(first, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    }
}
