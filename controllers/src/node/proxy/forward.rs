//! Forwards one accepted TCP connection to its backend, both ways, until both sides close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The user-space copy's buffer per direction, where bytes cannot move in the kernel: as
/// large as Go's `io.Copy` (docker-proxy's), four times tokio's default, so a bulk
/// stream makes a quarter of the system calls.
const COPY_BUFFER: usize = 32 * 1024;

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
    if let Err(error) = copy_both_ways(&mut client, &mut server).await {
        tracing::trace!(%backend, %error, "connection ended with an error");
    }
}

/// Copies bytes both ways until both directions are closed, each closed direction's end
/// passed on as a shutdown of the other side's write half. On Linux the bytes move
/// through a pipe per direction with splice(2), never through user space; when no pipe
/// can be had (out of file descriptors), nothing was read yet and the copy goes through
/// user space instead.
async fn copy_both_ways(client: &mut TcpStream, server: &mut TcpStream) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    match realm_io::bidi_zero_copy(client, server).await {
        Err(error) if pipes_unavailable(&error) => {
            tracing::debug!(%error, "no pipe for splice; copying through user space");
        }
        result => return result.map(drop),
    }
    tokio::io::copy_bidirectional_with_sizes(client, server, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(drop)
}

/// Whether creating the splice pipes failed (the only error before any byte moves).
#[cfg(target_os = "linux")]
fn pipes_unavailable(error: &std::io::Error) -> bool {
    // EMFILE, ENFILE: out of file descriptors for the process or the system.
    matches!(error.raw_os_error(), Some(24 | 23))
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
