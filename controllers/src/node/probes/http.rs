//! The httpGet handler: passes when the answer's status is from 200 to 399.

use std::net::SocketAddr;
use std::time::Duration;

use dctl_apis::probe::{HttpGetAction, Scheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    if action.scheme == Scheme::Https {
        // Kubernetes would skip certificate checks; this agent has no TLS client at all.
        return ProbeResult::Failure("HTTPS probes are not supported by this agent".into());
    }
    let exchange = async {
        let mut stream = connect(address, timeout).await?;
        stream
            .write_all(request(action, address).as_bytes())
            .await
            .map_err(|e| describe(&e))?;
        status(&mut stream).await
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

/// Reads the answer's status code from its first line (`HTTP/1.1 503 Service Unavailable`).
async fn status(stream: &mut tokio::net::TcpStream) -> Result<u16, String> {
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
    async fn a_closed_port_is_refused_and_https_is_unsupported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let second = Duration::from_secs(1);
        let refused = ProbeResult::Failure("connection refused".into());
        assert_eq!(http_get(&action("/ready"), address, second).await, refused);
        let https = HttpGetAction {
            scheme: Scheme::Https,
            ..action("/ready")
        };
        assert!(
            matches!(http_get(&https, address, second).await, ProbeResult::Failure(m) if m.contains("HTTPS"))
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
