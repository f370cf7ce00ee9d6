//! A minimal HTTP/1.1 server for loopback upstreams: the built-in advisor
//! ([`crate::advisor::server`]), the labelled stand-in ([`crate::devkit::standin`]) and the
//! scriptable upstreams of the tests. One request per connection (`Connection: close`); a body is
//! capped at 1 MiB and a request must arrive within 10 s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to send back.
#[derive(Debug, Clone)]
pub enum Response {
    /// A status and a JSON (or any) body with a correct Content-Length.
    Body(u16, String),
    /// Exactly these bytes, then close (for truncated or malformed answers).
    Raw(Vec<u8>),
    /// Wait, then answer.
    After(Duration, Box<Response>),
}

/// Largest request body read; a larger one gets 413.
pub const MAX_BODY: usize = 1 << 20;
/// Time allowed for a whole request to arrive.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Serve `handler` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let _ = one(sock, h).await;
        });
    }
}

async fn one(mut sock: TcpStream, handler: Handler) -> std::io::Result<()> {
    let req = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut sock)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::FileTooLarge => {
            let head = "HTTP/1.1 413 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            sock.write_all(head.as_bytes()).await?;
            return sock.shutdown().await;
        }
        Ok(Err(e)) => return Err(e),
    };
    let mut resp = handler(req).await;
    loop {
        match resp {
            Response::After(d, next) => {
                tokio::time::sleep(d).await;
                resp = *next;
            }
            Response::Raw(bytes) => {
                sock.write_all(&bytes).await?;
                break;
            }
            Response::Body(status, text) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    text.len()
                );
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(text.as_bytes()).await?;
                break;
            }
        }
    }
    sock.shutdown().await
}

/// Read one request (head, then a Content-Length body of at most [`MAX_BODY`] bytes);
/// `None` if the peer closed first or the head is over 64 KiB.
async fn read_request(sock: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return Err(std::io::ErrorKind::FileTooLarge.into());
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}
