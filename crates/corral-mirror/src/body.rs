//! Response bodies: small in-memory ones, and file slices streamed from disk.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

const CHUNK: usize = 128 * 1024;

/// What the mirror sends back.
pub enum MirrorBody {
    Bytes(Option<Bytes>),
    /// `remaining` bytes read from `file`'s current position.
    File {
        file: tokio::fs::File,
        remaining: u64,
        buf: Vec<u8>,
    },
}

impl MirrorBody {
    pub fn empty() -> MirrorBody {
        MirrorBody::Bytes(None)
    }

    pub fn bytes(bytes: impl Into<Bytes>) -> MirrorBody {
        let bytes = bytes.into();
        MirrorBody::Bytes((!bytes.is_empty()).then_some(bytes))
    }

    pub fn file(file: tokio::fs::File, len: u64) -> MirrorBody {
        MirrorBody::File {
            file,
            remaining: len,
            buf: Vec::new(),
        }
    }
}

impl Body for MirrorBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            MirrorBody::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MirrorBody::File {
                file,
                remaining,
                buf,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = (*remaining).min(CHUNK as u64) as usize;
                buf.resize(want, 0);
                let mut read_buf = ReadBuf::new(&mut buf[..want]);
                match Pin::new(file).poll_read(cx, &mut read_buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(())) => {
                        let n = read_buf.filled().len();
                        if n == 0 {
                            // The file shrank under us: end the response short rather than lie.
                            return Poll::Ready(Some(Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "file shrank while being served",
                            ))));
                        }
                        *remaining -= n as u64;
                        Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n])))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MirrorBody::Bytes(b) => b.is_none(),
            MirrorBody::File { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MirrorBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            MirrorBody::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
