//! dctl's test workload: a static HTTP server with switchable health, readiness and exit.
//!
//! `GET /` says who and which version answered; `/healthz` and `/ready` answer 200 until
//! `POST /healthz/fail` or `POST /ready/fail` (and again after `…/ok`); `GET /exit?code=N`
//! exits with N after answering; `GET /sleep?ms=N` answers late; `GET /upstream` fetches
//! the `--upstream` URL; `GET /bytes?n=N` streams N zero bytes. Each UDP datagram to the
//! same port number is answered with the `GET /` greeting. SIGTERM exits 0 once the open
//! connections are answered (at most [`SHUTDOWN_WAIT`]), as a well-behaved server does. Every
//! HTTP request is logged on stdout, one line each. See `config.rs` for the settings.
#![forbid(unsafe_code)]

mod check;
mod config;
mod http;
mod udp;

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How long a SIGTERM waits for open connections before the server exits anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// HTTP connections accepted and not yet closed.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, target] = args.as_slice() {
        if flag == "--check" {
            // A probe command: `dctl-testserver --check http://127.0.0.1:8080/healthz`.
            match check::check(target) {
                Ok(message) => println!("{message}"),
                Err(message) => {
                    println!("{message}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let config = match config::parse(&args, &env) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("dctl-testserver: {message}");
            std::process::exit(2);
        }
    };

    // First, so that a stop during the startup delay is prompt too. As PID 1 in a
    // container, a process without a handler never sees SIGTERM at all.
    match Signals::new([SIGTERM, SIGINT]) {
        Ok(mut signals) => {
            thread::spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    // Requests already on their way (sent before the proxies took this
                    // task out of traffic) are answered, not cut off.
                    let open = OPEN_CONNECTIONS.load(Ordering::SeqCst);
                    println!(
                        "received signal {signal}; exiting once {open} open connections close"
                    );
                    let started = Instant::now();
                    while OPEN_CONNECTIONS.load(Ordering::SeqCst) > 0
                        && started.elapsed() < SHUTDOWN_WAIT
                    {
                        thread::sleep(Duration::from_millis(10));
                    }
                    std::process::exit(0);
                }
            });
        }
        Err(err) => eprintln!("dctl-testserver: cannot handle SIGTERM: {err}"),
    }

    if let Some(after) = config.crash_after {
        thread::spawn(move || {
            thread::sleep(after);
            println!("crashing after {after:?} as asked");
            std::process::exit(1);
        });
    }

    if !config.startup_delay.is_zero() {
        println!("starting in {:?}", config.startup_delay);
        thread::sleep(config.startup_delay);
    }

    let listener = match TcpListener::bind(("0.0.0.0", config.port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "dctl-testserver: cannot listen on port {}: {err}",
                config.port
            );
            std::process::exit(1);
        }
    };
    println!(
        "{} version {} listening on :{} (ready: {})",
        config.name, config.version, config.port, config.ready
    );
    let state = Arc::new(http::State {
        healthy: AtomicBool::new(true),
        ready: AtomicBool::new(config.ready),
        config,
    });
    match UdpSocket::bind(("0.0.0.0", state.config.port)) {
        Ok(socket) => {
            let state = state.clone();
            thread::spawn(move || udp::serve(&socket, &state));
        }
        Err(err) => eprintln!(
            "dctl-testserver: no UDP on port {}: {err}",
            state.config.port
        ),
    }
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let state = state.clone();
                OPEN_CONNECTIONS.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    http::serve(stream, &state);
                    OPEN_CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
                });
            }
            // Out of descriptors or a reset before accept: the next one may work.
            Err(err) => eprintln!("dctl-testserver: accept failed: {err}"),
        }
    }
}
