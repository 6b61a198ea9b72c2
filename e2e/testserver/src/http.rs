//! Serves HTTP/1.1 on one connection: reads requests, routes them, writes the answers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Config;

/// The longest request line or header line read; longer ones are refused.
const MAX_LINE: usize = 8 * 1024;

/// How long an idle keep-alive connection is kept open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the switches of the server are now.
pub struct State {
    pub config: Config,
    pub healthy: AtomicBool,
    pub ready: AtomicBool,
}

/// A parsed request: what routing needs and nothing more.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// HTTP/1.0 without keep-alive, or `Connection: close`.
    pub close: bool,
}

/// An answer; `exit` ends the process with that code once the answer is sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// Zero bytes sent after `body`, streamed rather than held in memory (`/bytes`).
    pub zeros: u64,
    pub exit: Option<i32>,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            body: body.into(),
            zeros: 0,
            exit: None,
        }
    }
}

/// The chunk `/bytes` streams its zeros in.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Answers requests on `stream` until the client closes it, asks to, or idles too long.
pub fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(err) => {
                let response = Response::new(400, format!("bad request: {err}\n"));
                let _ = write_response(&mut writer, &response, false, true);
                return;
            }
        };
        let response = route(&request, state);
        // One line per request, so `dctl logs` has something to show.
        println!("{}", access_line(&request, response.status, &peer));
        let head_only = request.method == "HEAD";
        let close = request.close || response.exit.is_some();
        if write_response(&mut writer, &response, head_only, close).is_err() {
            return;
        }
        if let Some(code) = response.exit {
            // The answer is on its way: the client learns the exit was asked for.
            let _ = writer.shutdown(std::net::Shutdown::Write);
            println!("exiting with code {code} as asked");
            std::process::exit(code);
        }
        if close {
            return;
        }
    }
}

/// `GET /sleep?ms=5 200 from 172.17.0.1:40312`: what was asked, the answer, and by whom.
pub fn access_line(request: &Request, status: u16, peer: &str) -> String {
    let query = if request.query.is_empty() { "" } else { "?" };
    format!(
        "{} {}{query}{} {status} from {peer}",
        request.method, request.path, request.query
    )
}

/// One request from `reader`; `None` when the client closed the connection between
/// requests. The body, if any, is read and discarded.
///
/// # Errors
/// A malformed request or a read failure.
pub fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some(line) = read_line(reader)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("malformed request line {line:?}")));
    };
    let mut close = version == "HTTP/1.0";
    let mut length = 0usize;
    loop {
        let header = read_line(reader)?.ok_or_else(|| invalid("headers cut short"))?;
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid(format!("malformed header {header:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close")
                || (close && !value.eq_ignore_ascii_case("keep-alive"));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked request bodies are not supported"));
        }
    }
    io::copy(&mut reader.take(length as u64), &mut io::sink())?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        close,
    }))
}

/// A line without its `\r\n`; `None` at the end of the stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(invalid("line too long or cut short"));
    }
    let text = String::from_utf8(line).map_err(|_| invalid("not UTF-8"))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// What each path does.
pub fn route(request: &Request, state: &State) -> Response {
    let config = &state.config;
    let method = request.method.as_str();
    let read = method == "GET" || method == "HEAD";
    let switch = |flag: &AtomicBool, on: bool| {
        flag.store(on, Ordering::SeqCst);
        Response::new(200, "ok\n")
    };
    match (request.path.as_str(), read, method == "POST") {
        ("/", true, _) => Response::new(
            200,
            format!(
                "{} from {} version {}\n",
                config.greeting, config.name, config.version
            ),
        ),
        ("/healthz", true, _) => flag_answer(&state.healthy, "unhealthy"),
        ("/ready", true, _) => flag_answer(&state.ready, "not ready"),
        ("/healthz/fail", _, true) => switch(&state.healthy, false),
        ("/healthz/ok", _, true) => switch(&state.healthy, true),
        ("/ready/fail", _, true) => switch(&state.ready, false),
        ("/ready/ok", _, true) => switch(&state.ready, true),
        ("/exit", true, _) => match query_param(&request.query, "code").map(str::parse::<i32>) {
            None => exit_with(0),
            Some(Ok(code)) => exit_with(code),
            Some(Err(_)) => Response::new(400, "code must be an integer\n"),
        },
        // Holds the answer back: for tests of draining, where open requests must finish.
        ("/sleep", true, _) => match query_param(&request.query, "ms").map(str::parse::<u64>) {
            Some(Ok(ms)) => {
                std::thread::sleep(Duration::from_millis(ms));
                Response::new(200, format!("slept {ms}ms\n"))
            }
            _ => Response::new(400, "ms must be a number of milliseconds\n"),
        },
        // A bulk stream for the proxy's throughput benchmark.
        ("/bytes", true, _) => match query_param(&request.query, "n").map(str::parse::<u64>) {
            Some(Ok(n)) => Response {
                zeros: n,
                ..Response::new(200, "")
            },
            _ => Response::new(400, "n must be a number of bytes\n"),
        },
        ("/upstream", true, _) => match &config.upstream {
            None => Response::new(404, "no upstream configured (--upstream)\n"),
            Some(url) => match fetch(url) {
                Ok(body) => Response::new(200, format!("upstream {url} said: {body}")),
                Err(err) => Response::new(502, format!("upstream {url} failed: {err}\n")),
            },
        },
        (
            "/" | "/healthz" | "/ready" | "/exit" | "/sleep" | "/bytes" | "/upstream"
            | "/healthz/fail" | "/healthz/ok" | "/ready/fail" | "/ready/ok",
            _,
            _,
        ) => Response::new(405, format!("{method} not allowed here\n")),
        (path, _, _) => Response::new(404, format!("no such path {path:?}\n")),
    }
}

fn flag_answer(flag: &AtomicBool, failing: &str) -> Response {
    if flag.load(Ordering::SeqCst) {
        Response::new(200, "ok\n")
    } else {
        Response::new(503, format!("{failing}\n"))
    }
}

fn exit_with(code: i32) -> Response {
    Response {
        exit: Some(code),
        ..Response::new(200, format!("exiting with code {code}\n"))
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn write_response(
    writer: &mut impl Write,
    response: &Response,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    };
    let connection = if close { "close" } else { "keep-alive" };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        response.status,
        response.body.len() as u64 + response.zeros
    );
    if !head_only {
        out.push_str(&response.body);
    }
    writer.write_all(out.as_bytes())?;
    if !head_only {
        let mut left = response.zeros;
        while left > 0 {
            let chunk = left.min(ZEROS.len() as u64);
            writer.write_all(&ZEROS[..chunk as usize])?;
            left -= chunk;
        }
    }
    writer.flush()
}

/// `GET /` of `url` (`http://host:port[/path]`); the body of a 2xx answer.
fn fetch(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = authority
        .to_socket_addrs()
        .or_else(|_| (authority, 80).to_socket_addrs())
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(body.to_string())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn state() -> State {
        let env = BTreeMap::from([("TASK_NAME".to_string(), "web.1.abcde".to_string())]);
        State {
            config: crate::config::parse(&[], &env).unwrap(),
            healthy: AtomicBool::new(true),
            ready: AtomicBool::new(true),
        }
    }

    fn request(method: &str, target: &str) -> Request {
        let text = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        read_request(&mut text.as_bytes()).unwrap().unwrap()
    }

    fn answer(state: &State, method: &str, target: &str) -> (u16, String) {
        let response = route(&request(method, target), state);
        (response.status, response.body)
    }

    #[test]
    fn parses_requests_with_bodies_and_keep_alive() {
        let text =
            "POST /ready/fail?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\n\r\n";
        let mut reader = text.as_bytes();
        let first = read_request(&mut reader).unwrap().unwrap();
        assert_eq!(
            first,
            Request {
                method: "POST".into(),
                path: "/ready/fail".into(),
                query: "x=1".into(),
                close: false
            }
        );
        let second = read_request(&mut reader).unwrap().unwrap();
        assert_eq!((second.path.as_str(), second.close), ("/", true));
        assert_eq!(read_request(&mut reader).unwrap(), None);
        assert!(read_request(&mut "nonsense\r\n\r\n".as_bytes()).is_err());
    }

    #[test]
    fn switches_health_and_readiness() {
        let state = state();
        assert_eq!(
            answer(&state, "GET", "/"),
            (200, "hello from web.1.abcde version 1\n".into())
        );
        assert_eq!(answer(&state, "GET", "/healthz"), (200, "ok\n".into()));
        assert_eq!(answer(&state, "POST", "/healthz/fail").0, 200);
        assert_eq!(
            answer(&state, "GET", "/healthz"),
            (503, "unhealthy\n".into())
        );
        assert_eq!(answer(&state, "GET", "/ready").0, 200);
        assert_eq!(answer(&state, "POST", "/ready/fail").0, 200);
        assert_eq!(answer(&state, "GET", "/ready"), (503, "not ready\n".into()));
        assert_eq!(answer(&state, "POST", "/ready/ok").0, 200);
        assert_eq!(answer(&state, "POST", "/healthz/ok").0, 200);
        assert_eq!(answer(&state, "GET", "/ready").0, 200);
        assert_eq!(answer(&state, "GET", "/healthz").0, 200);
        assert_eq!(answer(&state, "GET", "/ready/fail").0, 405);
        assert_eq!(answer(&state, "GET", "/nope").0, 404);
        let bytes = route(&request("GET", "/bytes?n=100000"), &state);
        assert_eq!((bytes.status, bytes.zeros), (200, 100_000));
        let mut out = Vec::new();
        write_response(&mut out, &bytes, false, true).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(String::from_utf8_lossy(&out[..200]).contains("Content-Length: 100000\r\n"));
        assert!(out.ends_with(&[0; 100_000]));
    }

    #[test]
    fn logs_one_line_per_request() {
        let line = access_line(&request("GET", "/sleep?ms=5"), 200, "10.0.0.1:1");
        assert_eq!(line, "GET /sleep?ms=5 200 from 10.0.0.1:1");
        assert_eq!(
            access_line(&request("GET", "/"), 404, "?"),
            "GET / 404 from ?"
        );
    }

    #[test]
    fn exit_answers_first() {
        let state = state();
        let response = route(&request("GET", "/exit?code=3"), &state);
        assert_eq!((response.status, response.exit), (200, Some(3)));
        assert_eq!(route(&request("GET", "/exit"), &state).exit, Some(0));
        assert_eq!(route(&request("GET", "/exit?code=x"), &state).status, 400);
    }
}
