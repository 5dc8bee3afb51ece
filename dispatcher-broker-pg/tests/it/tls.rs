//! The `tls` feature: the broker's connections over TLS (the server's certificate is the
//! machine's self-signed one, so this test accepts any certificate: it checks the transport, not
//! certificate verification, which is rustls's).

use std::sync::Arc;
use std::time::Duration;

use dispatcher_broker_pg::{PgBroker, PgBrokerConfig, Tls};
use dispatcher_core::Broker;
use dispatcher_testkit::postgres::PgFixture;
use futures_util::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn broker_connections_use_tls() {
    let fx = PgFixture::new().await.unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let mut pg = fx.config().clone();
    pg.ssl_mode(tokio_postgres::config::SslMode::Require);
    let mut config = PgBrokerConfig::new(pg);
    config.tls = Tls::Rustls(Arc::new(tls));
    let b = PgBroker::with_config(config).await.unwrap();
    let channel = "tls_round_trip".to_string();
    let mut sub = b.subscribe(std::slice::from_ref(&channel)).await.unwrap();
    b.publish(&channel, "over tls").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload, "over tls");
    let admin = fx.client().await.unwrap();
    let row = admin
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = $1",
            &[&b.listener_pid()],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the LISTEN connection is not encrypted"
    );
}
