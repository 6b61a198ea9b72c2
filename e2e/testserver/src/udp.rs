//! UDP on the same port number as HTTP: each datagram is answered with one saying who
//! answered (`hello from web.1.abcde version 1`), so tests can see which task a
//! datagram reached through the proxy.

use std::net::UdpSocket;
use std::sync::Arc;

use crate::http::State;

/// Answers datagrams on `socket` until the process ends.
pub fn serve(socket: &UdpSocket, state: &Arc<State>) {
    let config = &state.config;
    let answer = format!(
        "{} from {} version {}\n",
        config.greeting, config.name, config.version
    );
    let mut buffer = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buffer) {
            Ok((_, peer)) => {
                if let Err(err) = socket.send_to(answer.as_bytes(), peer) {
                    eprintln!("dctl-testserver: udp answer to {peer} failed: {err}");
                }
            }
            Err(err) => eprintln!("dctl-testserver: udp receive failed: {err}"),
        }
    }
}
