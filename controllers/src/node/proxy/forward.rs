//! Forwards one accepted TCP connection to its backend, both ways, until both sides close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::TcpStream;

/// Connects to `backend` (within `connect_timeout`) and copies bytes both ways until both
/// directions are closed. A backend that cannot be reached resets the client's connection
/// at once: one attempt only, as kube-proxy and IPVS do, so a client never waits on a
/// backend that is down and a Ready endpoint that does not answer shows as the failure it
/// is.
pub async fn forward(client: TcpStream, backend: SocketAddr, connect_timeout: Duration) {
    let mut client = client;
    let server = match tokio::time::timeout(connect_timeout, TcpStream::connect(backend)).await {
        Ok(Ok(server)) => server,
        Ok(Err(error)) => {
            tracing::debug!(%backend, %error, "cannot reach the backend; resetting the client");
            reset(client);
            return;
        }
        Err(_) => {
            tracing::debug!(%backend, ?connect_timeout, "backend connect timed out; resetting the client");
            reset(client);
            return;
        }
    };
    let mut server = server;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if let Err(error) = copy_bidirectional(&mut client, &mut server).await {
        tracing::trace!(%backend, %error, "connection ended with an error");
    }
}

/// Closes `stream` with a RST instead of a FIN, so the peer sees a refusal at once rather
/// than an orderly (and ambiguous) end of stream.
pub fn reset(stream: TcpStream) {
    // A zero linger makes close send RST and drop unsent data.
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_resets_when_the_backend_is_down() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = backend.accept().await.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(b"pong").await.unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        // Nothing listens on a closed listener's port any more.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        tokio::spawn(async move {
            for backend in [backend_addr, gone] {
                let (stream, _) = front.accept().await.unwrap();
                tokio::spawn(forward(stream, backend, Duration::from_secs(1)));
            }
        });
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong");
        drop(client);

        let mut client = TcpStream::connect(front_addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = client.read(&mut buf).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
    }
}
