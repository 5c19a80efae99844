//! Readers that stop reading: streams of a run's log opened by clients that never read,
//! with small receive buffers, on a run whose log holds large client lines. What the
//! server holds for them is its resident memory before, while they are open, and after.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::scenarios::Client;
use crate::server::Server;

/// Client lines per `POST …/logs` and their length (`logs.max_line_bytes` is 8192).
const LINES_PER_POST: usize = 100;
const LINE_BYTES: usize = 8000;

/// What the scenario measured.
pub struct Stalled {
    pub streams: usize,
    pub entries: usize,
    pub rss_before: u64,
    pub rss_held: u64,
    pub rss_closed: u64,
}

/// Opens `streams` log streams that are never read on a run of `posts` × 100 lines of
/// 8,000 bytes.
pub async fn stalled(
    server: &Server,
    client: &Client,
    streams: usize,
    posts: usize,
) -> anyhow::Result<Stalled> {
    let workflow = client
        .create_workflow(json!({"name": "stalled", "steps": [
            {"name": "hold", "action": "wait", "input": {"duration_ms": 3_600_000}}]}))
        .await?;
    let run = client
        .post("/v1/runs", &json!({"workflow_id": workflow}))
        .await?["id"]
        .as_str()
        .context("run id")?
        .to_owned();
    let line = "x".repeat(LINE_BYTES);
    for post in 0..posts {
        let text: String = (0..LINES_PER_POST)
            .map(|i| format!("{post}.{i} {line}\n"))
            .collect();
        client
            .post_text(&format!("/v1/runs/{run}/logs"), text)
            .await?;
    }
    let entries = client.log_len(&run).await?;
    let rss_before = server.rss();
    let address = server
        .url
        .trim_start_matches("http://")
        .parse()
        .context("the server's address")?;
    let request = format!("GET /v1/runs/{run}/logs/stream HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut open: Vec<TcpStream> = Vec::with_capacity(streams);
    for _ in 0..streams {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut stream = socket.connect(address).await?;
        stream.write_all(request.as_bytes()).await?;
        open.push(stream);
    }
    let rss_held = settled(server).await;
    drop(open);
    let rss_closed = settled(server).await;
    Ok(Stalled {
        streams,
        entries,
        rss_before,
        rss_held,
        rss_closed,
    })
}

/// The server's RSS once it has not grown for a second (at most 30 s of looking).
async fn settled(server: &Server) -> u64 {
    let mut last = server.rss();
    let mut still = 0;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = server.rss();
        still = if now > last { 0 } else { still + 1 };
        last = last.max(now);
        if still >= 5 {
            break;
        }
    }
    last
}
