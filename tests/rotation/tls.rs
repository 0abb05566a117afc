//! HTTPS (issue 4): the system's roots by default, a private CA from `ca_file` or
//! `CI_SERVER_TLS_CA_FILE`, and a certificate failure that explains itself. The simulator serves
//! TLS with a certificate authority made fresh for each test.

use crate::engine::tail;
use crate::helpers::*;
use patrol::simulator::Simulator;

/// A CA (PEM), and a certificate it signed for `names` with its key (PEM).
fn authority(names: &[&str]) -> (String, String, String) {
    let fail = |e: rcgen::Error| -> ! { panic!("rcgen: {e}") };
    let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(e));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(e));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "patrol test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap_or_else(|e| fail(e));
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(e));
    let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|e| fail(e));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap_or_else(|e| fail(e));
    (ca.pem(), cert.pem(), key.serialize_pem())
}

pub async fn tls_universe(names: &[&str], config: &str) -> (Universe, String) {
    let (ca, cert, key) = authority(names);
    let sim =
        Simulator::start_tls("127.0.0.1:0", fleet(), &cert, &key).await.unwrap_or_else(|e| panic!("simulator: {e}"));
    assert!(sim.api_url().starts_with("https://localhost:"), "{}", sim.api_url());
    (Universe::around(sim, config), ca)
}

#[tokio::test]
async fn a_private_ca_is_trusted_through_ci_server_tls_ca_file_or_ca_file() {
    let (u, ca) = tls_universe(&["localhost"], FLEET_CONFIG).await;
    let ca_path = u.dir.join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap_or_else(|e| panic!("{e}"));
    let ca_path = ca_path.display().to_string();

    let run = u.patrol_with(&["rotate", "--only", "project"], &[("CI_SERVER_TLS_CA_FILE", &ca_path)]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
    assert_eq!(outcomes(&run), vec![("project".to_string(), "rotated".to_string())]);

    // The same through the config file.
    let config = format!("[gitlab]\nca_file = {ca_path:?}\n{FLEET_CONFIG}");
    std::fs::write(u.dir.join("patrol.toml"), config).unwrap_or_else(|e| panic!("{e}"));
    let run = u.patrol(&["plan"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, tail(&run.stderr));
}

#[tokio::test]
async fn an_untrusted_certificate_is_explained_and_nothing_changes() {
    let (u, _ca) = tls_universe(&["localhost"], FLEET_CONFIG).await;
    let run = u.patrol(&["rotate"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    for needed in [
        "localhost",
        "certificate authority patrol does not trust",
        "ca_file",
        "CI_SERVER_TLS_CA_FILE",
        "Nothing was changed",
    ] {
        assert!(run.stderr.contains(needed), "{needed:?} missing from: {}", tail(&run.stderr));
    }
    assert!(u.sim.requests().is_empty(), "no request got through the handshake");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_explained() {
    let (u, ca) = tls_universe(&["gitlab.example.com"], FLEET_CONFIG).await;
    let ca_path = u.dir.join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap_or_else(|e| panic!("{e}"));
    let run = u.patrol_with(&["plan"], &[("CI_SERVER_TLS_CA_FILE", &ca_path.display().to_string())]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("was not issued for this host name"), "{}", tail(&run.stderr));
}

#[tokio::test]
async fn a_missing_or_broken_ca_file_is_a_usage_error() {
    let (u, _ca) = tls_universe(&["localhost"], FLEET_CONFIG).await;
    let missing = u.dir.join("nope.pem").display().to_string();
    let run = u.patrol_with(&["plan"], &[("CI_SERVER_TLS_CA_FILE", &missing)]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot read CA file") && run.stderr.contains("nope.pem"), "{}", run.stderr);
}
