//! Plain forwarding of names outside the cluster zone: the question is asked
//! again of each upstream in turn (UDP, then TCP when the answer is
//! truncated) and the upstream's answer is passed on as it came, rcode,
//! NODATA and all. No cache: the upstream has one, and a forwarder that caches
//! would have to get negative caching right too.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer before the next is asked.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The UDP payload size we advertise upstream (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// There is no upstream to ask.
    #[error("no upstreams configured")]
    NoUpstreams,
    /// Every upstream failed; the last error.
    #[error("no upstream answered ({0})")]
    Failed(String),
}

/// Asks the upstreams, in order, for `name`/`qtype`; the first parsable
/// answer wins.
pub(crate) async fn forward(
    upstreams: &[SocketAddr],
    name: &Name,
    qtype: RecordType,
    recursion_desired: bool,
) -> Result<Message, ForwardError> {
    if upstreams.is_empty() {
        return Err(ForwardError::NoUpstreams);
    }
    let mut last = String::new();
    for upstream in upstreams {
        match ask(*upstream, name, qtype, recursion_desired).await {
            Ok(m) => return Ok(m),
            Err(e) => {
                tracing::debug!(%upstream, %name, ?qtype, "upstream failed: {e}");
                last = format!("{upstream}: {e}");
            }
        }
    }
    Err(ForwardError::Failed(last))
}

fn question(id: u16, name: &Name, qtype: RecordType, rd: bool) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(rd)
        .add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    m.set_edns(edns);
    m
}

async fn ask(
    upstream: SocketAddr,
    name: &Name,
    qtype: RecordType,
    rd: bool,
) -> Result<Message, String> {
    let id: u16 = rand::random();
    let query = question(id, name, qtype, rd);
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, udp(upstream, &bytes, id, name))
        .await
        .map_err(|_| "timed out".to_string())??;
    if !answer.truncated() {
        return Ok(answer);
    }
    tokio::time::timeout(UPSTREAM_TIMEOUT, tcp(upstream, &bytes, id))
        .await
        .map_err(|_| "timed out over TCP".to_string())?
}

async fn udp(upstream: SocketAddr, bytes: &[u8], id: u16, name: &Name) -> Result<Message, String> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    socket.connect(upstream).await.map_err(|e| e.to_string())?;
    socket.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    // Bounded by the caller's timeout; datagrams that are not our answer
    // (wrong id or question: spoofed or late) are skipped.
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let same_question = m
            .query()
            .is_some_and(|q| q.name().to_lowercase() == name.to_lowercase());
        if m.id() == id && m.message_type() == MessageType::Response && same_question {
            return Ok(m);
        }
    }
}

async fn tcp(upstream: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let mut stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let m = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if m.id() != id {
        return Err("answer with a different id".into());
    }
    Ok(m)
}
