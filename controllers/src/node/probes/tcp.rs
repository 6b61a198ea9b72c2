//! The tcpSocket handler: passes when a TCP connection opens within the timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::prober::ProbeResult;

/// Opens (and at once closes) a connection to `address`.
pub async fn tcp_socket(address: SocketAddr, timeout: Duration) -> ProbeResult {
    match connect(address, timeout).await {
        Ok(_) => ProbeResult::Success,
        Err(failure) => ProbeResult::Failure(failure),
    }
}

/// A connection to `address`, or the failure as a probe's output.
pub(super) async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(describe(&error)),
        Err(_) => Err(timed_out(timeout)),
    }
}

/// `timeout after 1s`: what a probe that did not answer in time reports.
pub(super) fn timed_out(timeout: Duration) -> String {
    format!("timeout after {}", humanize(timeout))
}

fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// An I/O failure in the words an operator expects (`connection refused`).
pub(super) fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::TimedOut => "connection timed out".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn passes_on_an_open_port_and_fails_on_a_closed_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(tcp_socket(open, second).await, ProbeResult::Success);
        drop(listener);
        assert_eq!(
            tcp_socket(open, second).await,
            ProbeResult::Failure("connection refused".into())
        );
    }

    #[test]
    fn timeouts_read_as_durations() {
        assert_eq!(timed_out(Duration::from_secs(1)), "timeout after 1s");
        assert_eq!(timed_out(Duration::from_millis(250)), "timeout after 250ms");
    }
}
