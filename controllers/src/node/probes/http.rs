//! The httpGet handler: passes when the answer's status is from 200 to 399. HTTPS
//! probes do not verify the certificate, as in Kubernetes ([`super::tls`]).

use std::net::SocketAddr;
use std::time::Duration;

use dctl_apis::probe::{HttpGetAction, Scheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::prober::ProbeResult;
use super::tcp::{connect, describe, timed_out};

/// How much of an answer is read to find its status line.
const HEAD_LIMIT: usize = 4096;

/// `GET action.path` from `address`, within `timeout` for the whole exchange. Redirects
/// are not followed: a 3xx passes, as in Kubernetes.
pub async fn http_get(
    action: &HttpGetAction,
    address: SocketAddr,
    timeout: Duration,
) -> ProbeResult {
    let exchange = async {
        let stream = connect(address, timeout).await?;
        if action.scheme == Scheme::Https {
            let name = super::tls::server_name(action.host.as_deref(), address.ip());
            let stream = super::tls::connector()
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake: {}", describe(&e)))?;
            exchange(stream, action, address).await
        } else {
            exchange(stream, action, address).await
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => ProbeResult::Failure(timed_out(timeout)),
        Ok(Err(failure)) => ProbeResult::Failure(failure),
        Ok(Ok(code)) if (200..400).contains(&code) => ProbeResult::Success,
        Ok(Ok(code)) => ProbeResult::Failure(format!("HTTP {code}")),
    }
}

/// The request: the probe's own headers win over the defaults (a `Host` header included).
fn request(action: &HttpGetAction, address: SocketAddr) -> String {
    let path = if action.path.is_empty() {
        "/"
    } else {
        action.path.as_str()
    };
    let host = match &action.host {
        Some(host) => format!("{host}:{}", address.port()),
        None => address.to_string(),
    };
    let mut headers = vec![
        ("Host".to_string(), host),
        ("User-Agent".to_string(), "dctl-probe/1".to_string()),
        ("Accept".to_string(), "*/*".to_string()),
    ];
    for header in &action.http_headers {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(&header.name));
    }
    headers.extend(
        action
            .http_headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone())),
    );
    let mut text = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Connection: close\r\n\r\n");
    text
}

/// Sends the probe's request on `stream` and reads the answer's status code.
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    action: &HttpGetAction,
    address: SocketAddr,
) -> Result<u16, String> {
    stream
        .write_all(request(action, address).as_bytes())
        .await
        .map_err(|e| describe(&e))?;
    status(&mut stream).await
}

/// Reads the answer's status code from its first line (`HTTP/1.1 503 Service Unavailable`).
async fn status(stream: &mut (impl AsyncRead + Unpin)) -> Result<u16, String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if head.len() >= HEAD_LIMIT {
            return Err("malformed HTTP response: no status line".into());
        }
        let read = stream.read(&mut buffer).await.map_err(|e| describe(&e))?;
        if read == 0 {
            return Err("connection closed before an HTTP response".into());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(code))) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("malformed HTTP response: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::probe::HttpHeader;
    use dctl_apis::template::PortRef;
    use tokio::net::TcpListener;

    use super::*;

    fn action(path: &str) -> HttpGetAction {
        HttpGetAction {
            path: path.into(),
            port: PortRef::Number(0),
            host: None,
            scheme: Scheme::Http,
            http_headers: vec![HttpHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }],
        }
    }

    /// A server that answers every request with `status`, or never answers at all.
    async fn server(status: Option<u16>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 1024];
                    let read = stream.read(&mut request).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(&request[..read]).to_string();
                    assert!(text.starts_with("GET /ready HTTP/1.1\r\n"), "{text}");
                    assert!(text.contains("\r\nX-Probe: yes\r\n"), "{text}");
                    match status {
                        Some(code) => {
                            let answer =
                                format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\n\r\n");
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn passes_from_200_to_399() {
        let second = Duration::from_secs(1);
        let cases = [
            (Some(200), ProbeResult::Success),
            (Some(301), ProbeResult::Success),
            (Some(399), ProbeResult::Success),
            (Some(404), ProbeResult::Failure("HTTP 404".into())),
            (Some(503), ProbeResult::Failure("HTTP 503".into())),
            (None, ProbeResult::Failure("timeout after 1s".into())),
        ];
        for (status, expected) in cases {
            let address = server(status).await;
            assert_eq!(
                http_get(&action("/ready"), address, second).await,
                expected,
                "{status:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let second = Duration::from_secs(1);
        let refused = ProbeResult::Failure("connection refused".into());
        assert_eq!(http_get(&action("/ready"), address, second).await, refused);
    }

    /// A TLS server with a self-signed certificate answering every request with `status`.
    async fn tls_server(status: u16) -> SocketAddr {
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio_rustls::rustls::ServerConfig;

        let certified = rcgen::generate_simple_self_signed(vec!["web.internal".into()]).unwrap();
        let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let config = ServerConfig::builder_with_provider(super::super::tls::provider().into())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut request = vec![0u8; 1024];
                    let read = stream.read(&mut request).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(&request[..read]).to_string();
                    assert!(text.starts_with("GET /ready HTTP/1.1\r\n"), "{text}");
                    let answer = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n");
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn https_probes_pass_on_a_self_signed_certificate_and_read_the_status() {
        let second = Duration::from_secs(1);
        let https = |host: Option<&str>| HttpGetAction {
            scheme: Scheme::Https,
            host: host.map(String::from),
            ..action("/ready")
        };
        let ok = tls_server(200).await;
        assert_eq!(
            http_get(&https(None), ok, second).await,
            ProbeResult::Success
        );
        // With a host, it is sent as the server name; a name the certificate lacks is fine.
        let named = https(Some("other.example"));
        assert_eq!(http_get(&named, ok, second).await, ProbeResult::Success);
        let failing = tls_server(503).await;
        assert_eq!(
            http_get(&https(None), failing, second).await,
            ProbeResult::Failure("HTTP 503".into())
        );
        // Plain HTTP on the other end: the handshake fails, and says so.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let result = http_get(&https(None), plain, second).await;
        assert!(
            matches!(&result, ProbeResult::Failure(m) if m.starts_with("TLS handshake: ")),
            "{result:?}"
        );
    }

    #[test]
    fn probe_headers_replace_the_defaults() {
        let address: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        let mut action = action("");
        action.http_headers.push(HttpHeader {
            name: "host".into(),
            value: "example.com".into(),
        });
        let text = request(&action, address);
        assert!(text.starts_with("GET / HTTP/1.1\r\n"), "{text}");
        assert!(!text.contains("Host: 10.0.0.2:8080"), "{text}");
        assert!(text.contains("\r\nhost: example.com\r\n"), "{text}");
    }
}
