//! `--check URL|PORT`: a probe command for exec probes and HEALTHCHECKs in a FROM scratch
//! image, which has no shell and no curl. Exit 0 when the check passes, 1 when not.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

/// `http://host:port/path`: passes on a status from 200 to 399. A bare port: passes when
/// `127.0.0.1:PORT` accepts a connection.
///
/// # Errors
/// Why the check failed, for the probe's output.
pub fn check(target: &str) -> Result<String, String> {
    if let Ok(port) = target.parse::<u16>() {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| format!("{address}: {e}"))?;
        return Ok(format!("{address} accepts connections"));
    }
    let rest = target
        .strip_prefix("http://")
        .ok_or_else(|| format!("expected http://host:port/path or a port, got {target:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut found| found.next())
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let mut stream =
        TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| format!("{address}: {e}"))?;
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("no HTTP status in the answer")?;
    if (200..400).contains(&status) {
        Ok(format!("HTTP {status}"))
    } else {
        Err(format!("HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn checks_ports_and_urls() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(check(&port.to_string()).is_ok());
        std::thread::spawn(move || {
            // The first connection is the port check's, closed without a request.
            let answers = ["", "200 OK", "503 Service Unavailable"];
            for (answer, stream) in answers.iter().zip(listener.incoming()) {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 512];
                let _ = stream.read(&mut request);
                let _ = write!(stream, "HTTP/1.0 {answer}\r\n\r\n");
            }
        });
        let url = format!("http://127.0.0.1:{port}/ready");
        assert_eq!(check(&url), Ok("HTTP 200".into()));
        assert_eq!(check(&url), Err("HTTP 503".into()));
        assert!(check("ftp://x").is_err());
    }
}
