//! Reading a header off an accepted TCP connection: exactly the header's
//! bytes, none of the payload after it.
//!
//! The bytes are peeked (`MSG_PEEK`) until they hold a whole header, then
//! exactly that many are read. A peek returns whatever the socket holds,
//! the same bytes again while nothing new came, so a header that arrives in
//! pieces is waited for with short pauses (1 ms doubling to 16 ms) between
//! peeks that brought nothing new, never a busy loop; the specification
//! asks senders to send the header at once, so pieces are rare. A peer
//! that closes mid-header is told by the socket's read-closed readiness
//! (`EPOLLRDHUP`), since a peek keeps returning the bytes it left.

use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::parse::{progress, ParseError, Progress};
use super::Parsed;

/// Why no header could be read off a connection; the connection is to be
/// closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// No complete header within the time allowed.
    #[error("no complete PROXY protocol header in time")]
    Timeout,
    /// The peer closed the connection before a complete header.
    #[error("connection closed before a complete PROXY protocol header")]
    Closed,
    /// The bytes are no header.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(#[from] ParseError),
    /// The socket failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Bytes held inline while peeking: every v1 line (107 bytes at most) and
/// v2 header without TLVs (52 at most); a longer v2 header spills to the
/// heap, up to `MAX_HEADER`.
const INLINE: usize = 128;

/// The first pause after a peek that brought nothing new, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(16);

/// Reads a header (v1 or v2) from the start of an accepted connection,
/// consuming exactly its bytes: the payload after it is left in the socket
/// for whoever reads next. Gives up after `timeout` in all (the
/// specification suggests at least 3 seconds, to cover a TCP retransmit).
pub(crate) async fn read_header(
    stream: &TcpStream,
    timeout: Duration,
) -> Result<Parsed, ReadError> {
    tokio::time::timeout(timeout, read(stream))
        .await
        .unwrap_or(Err(ReadError::Timeout))
}

async fn read(stream: &TcpStream) -> Result<Parsed, ReadError> {
    let mut inline = [0u8; INLINE];
    let mut spill = Vec::new();
    let mut seen = 0;
    let mut pause = FIRST_PAUSE;
    loop {
        let buf: &mut [u8] = if spill.is_empty() {
            &mut inline
        } else {
            &mut spill
        };
        let n = stream.peek(buf).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        let at_least = match progress(&buf[..n])? {
            Progress::Complete(parsed) => {
                consume(stream, &mut buf[..parsed.len]).await?;
                return Ok(parsed);
            }
            Progress::Incomplete { at_least } => at_least,
        };
        if at_least > buf.len() {
            spill.resize(at_least, 0);
        } else if n > seen {
            (seen, pause) = (n, FIRST_PAUSE);
        } else {
            // Returns at once: the socket is readable (it holds bytes).
            if stream.ready(Interest::READABLE).await?.is_read_closed() {
                return Err(ReadError::Closed);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

/// Reads exactly `buf.len()` bytes, which a peek has shown are there.
async fn consume(stream: &TcpStream, buf: &mut [u8]) -> Result<(), ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        stream.readable().await?;
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
