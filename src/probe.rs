//! `orchestrator health`: the probe of container health checks, which have no `curl`.
//!
//! It sends one `GET` over plain HTTP/1.1 (standard library only: no TLS, no CA store, no
//! async runtime) to the server's `/health`, or to a given URL, and succeeds on a `200`.
//! The default address follows the configuration (`server.host`, `server.port`), so
//! `ORCHESTRATOR_SERVER__PORT` moves the probe with the server.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use url::Url;

/// How long the probe waits to connect, and then for the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Usage(String),
    #[error("{url}: cannot connect: {cause}")]
    Connect { url: String, cause: std::io::Error },
    #[error("{url}: {cause}")]
    Io { url: String, cause: std::io::Error },
    #[error("{url}: answered {status_line:?}")]
    Unhealthy { url: String, status_line: String },
}

/// The `/health` URL of a server configured to listen on `host` and `port`: a server
/// listening on every address (`0.0.0.0`, `::`) is probed on loopback.
pub fn default_url(host: &str, port: u16) -> Result<String, ProbeError> {
    if port == 0 {
        return Err(ProbeError::Usage(
            "server.port is 0 (any free port), so the probe cannot know it: pass --url".into(),
        ));
    }
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => "[::1]".to_owned(),
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_owned(),
    };
    Ok(format!("http://{host}:{port}/health"))
}

/// Sends `GET url`; the status line of a `200` answer, else why not.
pub fn probe(url: &str, timeout: Duration) -> Result<String, ProbeError> {
    let parsed = Url::parse(url).map_err(|e| ProbeError::Usage(format!("{url}: {e}")))?;
    let host = match (parsed.scheme(), parsed.host_str()) {
        ("http", Some(host)) => host.to_owned(),
        _ => {
            return Err(ProbeError::Usage(format!(
                "{url}: only http:// URLs with a host can be probed"
            )));
        }
    };
    let port = parsed.port_or_known_default().unwrap_or(80);
    let io = |cause| ProbeError::Io {
        url: url.to_owned(),
        cause,
    };
    let mut stream = connect(url, host.trim_matches(['[', ']']), port, timeout)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let target = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: orchestrator-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let status_line = read_status_line(&mut stream).map_err(io)?;
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(status_line)
    } else {
        Err(ProbeError::Unhealthy {
            url: url.to_owned(),
            status_line,
        })
    }
}

fn connect(url: &str, host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ProbeError> {
    let failed = |cause| ProbeError::Connect {
        url: url.to_owned(),
        cause,
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
    for address in (host, port).to_socket_addrs().map_err(failed)? {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(failed(last))
}

/// The first line of the answer, without its line end.
fn read_status_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while head.len() < 512 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        head.push(byte[0]);
    }
    if head.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed without an answer",
        ));
    }
    Ok(String::from_utf8_lossy(&head).trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server answering `answer`; returns its address and the request it read.
    fn serve_once(answer: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        });
        (port, handle)
    }

    #[test]
    fn a_server_on_every_address_is_probed_on_loopback_at_its_port() {
        assert_eq!(
            default_url("0.0.0.0", 8100).unwrap(),
            "http://127.0.0.1:8100/health"
        );
        assert_eq!(default_url("::", 9000).unwrap(), "http://[::1]:9000/health");
        assert_eq!(
            default_url("10.1.2.3", 8100).unwrap(),
            "http://10.1.2.3:8100/health"
        );
        assert!(matches!(
            default_url("0.0.0.0", 0),
            Err(ProbeError::Usage(_))
        ));
    }

    #[test]
    fn a_200_answer_is_healthy_and_the_request_names_the_path() {
        let (port, server) = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let url = format!("http://127.0.0.1:{port}/health?probe=1");
        assert_eq!(probe(&url, TIMEOUT).unwrap(), "HTTP/1.1 200 OK");
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /health?probe=1 HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[test]
    fn any_other_answer_is_unhealthy_with_its_status_line() {
        let (port, _server) = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let err = probe(&format!("http://127.0.0.1:{port}/ready"), TIMEOUT).unwrap_err();
        assert!(err.to_string().contains("503 Service Unavailable"), "{err}");
    }

    #[test]
    fn a_closed_port_and_a_non_http_url_fail_with_what_was_tried() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/health");
        let err = probe(&url, TIMEOUT).unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
        assert!(err.to_string().starts_with(&url), "{err}");
        let err = probe("https://127.0.0.1/health", TIMEOUT).unwrap_err();
        assert!(matches!(err, ProbeError::Usage(_)), "{err}");
    }
}
