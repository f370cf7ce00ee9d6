//! HTTP pieces every role shares: reading a peer's answer with a size limit and the small
//! loopback [`server`].

pub mod server;

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
