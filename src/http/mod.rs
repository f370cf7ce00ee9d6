//! HTTP pieces every role shares: reading a request body or a peer's answer with a size limit,
//! one [`Reply`] type for every answer the sidecar writes, and the small loopback [`server`].

pub mod limit;
pub mod server;

use bytes::Bytes;

/// Reading an HTTP answer with a size limit failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// Read `resp`'s body, refusing more than `max` bytes (announced or streamed): a peer cannot
/// make us buffer an unbounded answer.
pub async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes, ReadError> {
    let announced = resp.content_length().unwrap_or(0);
    if announced > max as u64 {
        return Err(ReadError::TooLarge(max));
    }
    let mut buf = bytes::BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit, announced or streamed.
    TooLarge,
    /// The connection failed while the body arrived.
    Unreadable,
}

/// A request whose body arrives in chunks: pingora's server session, or its proxy session.
#[async_trait::async_trait]
pub trait RequestBody: Send {
    /// The `Content-Length` the client announced, if any.
    fn declared_len(&self) -> Option<usize>;
    /// The next chunk; `None` at the end.
    async fn next_chunk(&mut self) -> pingora_core::Result<Option<Bytes>>;
}

#[async_trait::async_trait]
impl RequestBody for pingora_core::protocols::http::ServerSession {
    fn declared_len(&self) -> Option<usize> {
        content_length(&self.req_header().headers)
    }
    async fn next_chunk(&mut self) -> pingora_core::Result<Option<Bytes>> {
        self.read_request_body().await
    }
}

#[async_trait::async_trait]
impl RequestBody for pingora_proxy::Session {
    fn declared_len(&self) -> Option<usize> {
        content_length(&self.req_header().headers)
    }
    async fn next_chunk(&mut self) -> pingora_core::Result<Option<Bytes>> {
        self.read_request_body().await
    }
}

fn content_length(h: &http::HeaderMap) -> Option<usize> {
    h.get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Read a whole request body, refusing more than `max` bytes (announced or streamed).
pub async fn read_body(s: &mut impl RequestBody, max: usize) -> Result<Bytes, BodyError> {
    let declared = s.declared_len();
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    while let Some(chunk) = s.next_chunk().await.map_err(|_| BodyError::Unreadable)? {
        if buf.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A complete answer, built in one place: JSON by default, always `Cache-Control: no-store`
/// and a `Content-Length`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: &impl serde::Serialize) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Bytes::from(serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())),
        }
    }

    /// An error answer: a machine-readable code and a sentence for people.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            &serde_json::json!({ "error": code, "message": message.into() }),
        )
    }

    /// Any other body, with its content type.
    pub fn raw(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Add a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Add `Retry-After`.
    pub fn retry_after(self, secs: u64) -> Reply {
        self.with("Retry-After", secs.to_string())
    }

    /// As an `http` response (pingora's `ServeHttp` apps answer with one).
    pub fn into_response(self) -> http::Response<Vec<u8>> {
        let mut b = http::Response::builder()
            .status(self.status)
            .header("Content-Type", self.content_type)
            .header("Cache-Control", "no-store")
            .header("Content-Length", self.body.len());
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        b.body(self.body.to_vec())
            .unwrap_or_else(|_| http::Response::new(Vec::new()))
    }
}
