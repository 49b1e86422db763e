//! Certificates made by the test: a CA, and a server and a client
//! certificate it signed.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA, a server certificate for `localhost` and a client certificate, as PEM
/// (certificate, private key) pairs.
pub struct TestPki {
    pub ca_pem: String,
    pub server: (String, String),
    pub client: (String, String),
}

pub fn make_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (certificate.pem(), key.serialize_pem())
    };
    TestPki {
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["gateway.internal".into()]),
        ca_pem: ca.pem(),
    }
}
