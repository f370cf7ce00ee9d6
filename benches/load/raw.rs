//! A lean HTTP/1.1 load client for the 402 rows, as `wrk` is: one keep-alive connection per
//! worker, the request's bytes encoded once, each answer read to its end (`Content-Length` or
//! chunked) and its status compared. The 402 path of a fast seller costs a few tens of µs; a
//! general client (reqwest: a request builder, a URL, header maps, a pool) costs as much again
//! on the same two cores, so the seller's throughput would be the client's. Every seller of the
//! comparison is driven by this same client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::measure::{Outcome, Run, status_kind, timed_with};

/// The bytes of one `POST path` with a JSON body, keep-alive.
pub(crate) fn post_json(addr: SocketAddr, path: &str, body: &[u8]) -> Arc<[u8]> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req.into()
}

/// One worker's connection: (re)opened when needed, closed when the server says so.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// Where a whole answer ends in the buffer, or that more bytes are needed.
enum Framed {
    /// Status, the answer's length in the buffer, the server closes after it.
    Whole(u16, usize, bool),
    More,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Send `req`, read its answer; `Ok` when its status is `want`.
    async fn exchange(&mut self, req: &[u8], want: u16) -> Outcome {
        let r = self.round_trip(req).await;
        if r.is_err() {
            self.stream = None;
            self.buf.clear();
        }
        let (status, body) = r?;
        if status == want {
            Ok(())
        } else {
            Err(status_kind(status, &body))
        }
    }

    async fn round_trip(&mut self, req: &[u8]) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|_| "connect error".to_string())?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("connect error".into());
        };
        stream
            .write_all(req)
            .await
            .map_err(|e| format!("transport: {e}"))?;
        loop {
            match frame(&self.buf)? {
                Framed::Whole(status, len, close) => {
                    // The body is kept only for an error's kind.
                    let body = if status >= 400 && self.buf.len() >= len {
                        body_of(&self.buf[..len])
                    } else {
                        Vec::new()
                    };
                    self.buf.drain(..len);
                    if close {
                        self.stream = None;
                    }
                    return Ok((status, body));
                }
                Framed::More => {
                    let n = stream
                        .read_buf(&mut self.buf)
                        .await
                        .map_err(|e| format!("transport: {e}"))?;
                    if n == 0 {
                        return Err("transport: connection closed mid-answer".into());
                    }
                }
            }
        }
    }
}

/// Parse the head in `buf`; if the whole answer is there, its status and length.
fn frame(buf: &[u8]) -> Result<Framed, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Framed::More),
        Err(e) => return Err(format!("transport: bad answer head ({e})")),
    };
    let status = resp.code.unwrap_or(0);
    let (mut length, mut chunked, mut close) = (None, false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let rest = &buf[head..];
    if chunked {
        return Ok(match chunked_len(rest) {
            Some(n) => Framed::Whole(status, head + n, close),
            None => Framed::More,
        });
    }
    let Some(length) = length else {
        return Err("transport: an answer without Content-Length".into());
    };
    Ok(if rest.len() >= length {
        Framed::Whole(status, head + length, close)
    } else {
        Framed::More
    })
}

/// The length of a whole chunked body at the start of `b`, if it is all there.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = b[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size = std::str::from_utf8(&b[at..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2 + size + 2;
        if at > b.len() {
            return None;
        }
        if size == 0 {
            return Some(at);
        }
    }
}

/// The body of a whole answer (its JSON `error` names the kind of a wrong status).
fn body_of(answer: &[u8]) -> Vec<u8> {
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    answer[at..].to_vec()
}

/// Closed loop as [`crate::measure::timed`], on this client: `conc` connections, each sending
/// `req` again as soon as the last answer is read, for `warmup + measure`.
pub(crate) async fn timed(
    conc: usize,
    warmup: Duration,
    measure: Duration,
    addr: SocketAddr,
    req: Arc<[u8]>,
    want: u16,
) -> Run {
    timed_with(
        conc,
        warmup,
        measure,
        || Conn::new(addr),
        move |mut conn: Conn| {
            let req = req.clone();
            async move {
                let r = conn.exchange(&req, want).await;
                (conn, r)
            }
        },
    )
    .await
}
