//! The fast DNS backend of the UDP benchmark (`benches/dns/udp_compare.sh`):
//! answers every query for an A record with `127.1.1.1`, straight from the
//! datagram, with no cache, no zone and no logging. dnsmasq (the backend the
//! benchmark used first) spends more per query than the proxies in front of
//! it, so it, not the proxy, set the rate; this one spends two system calls
//! per query on as many threads as asked, so the figures measure the proxy.
//!
//! ```text
//! cargo build --release -p lb-examples --example dns_answer
//! target/release/examples/dns_answer 127.0.153.1:5300 [threads]
//! ```
//!
//! Each thread owns one socket bound to the same address with `SO_REUSEPORT`;
//! the kernel spreads clients (a proxy's flows, dnsperf's sockets) over them
//! by address. A datagram that is not a query with one question gets no
//! answer, as a server would drop it.

use std::net::{SocketAddr, UdpSocket};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

/// The answer's address (what `udp_compare.sh` waits for with dig).
const ANSWER: [u8; 4] = [127, 1, 1, 1];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .context("usage: dns_answer ADDR:PORT [threads]")?
        .parse()
        .context("ADDR:PORT")?;
    let threads: usize = match args.next() {
        Some(n) => n.parse().context("threads")?,
        None => 1,
    };
    let sockets = (0..threads.max(1))
        .map(|_| bind(listen))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        for socket in &sockets {
            scope.spawn(move || serve(socket));
        }
    });
    Ok(())
}

fn bind(listen: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_recv_buffer_size(4 << 20)?;
    socket
        .bind(&listen.into())
        .with_context(|| format!("bind {listen}"))?;
    Ok(socket.into())
}

/// Answers until the process is killed; a failed receive or send is one
/// lost datagram, as on a real server.
fn serve(socket: &UdpSocket) {
    let mut query = [0u8; 512];
    let mut reply = [0u8; 512 + 16];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut query) else {
            continue;
        };
        if let Some(n) = answer(&query[..len], &mut reply) {
            let _ = socket.send_to(&reply[..n], from);
        }
    }
}

/// Writes the answer to `query` into `out` and returns its length: the
/// header with QR, RA and one answer, the question as asked, and an A record
/// pointing back at the question's name. Additional records (EDNS) are not
/// echoed. `None` for anything that is not a single-question query.
fn answer(query: &[u8], out: &mut [u8]) -> Option<usize> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    // The question: the name's labels up to the root, then type and class.
    let mut at = 12;
    loop {
        let label = *query.get(at)? as usize;
        if label & 0xc0 != 0 {
            return None;
        }
        at += 1 + label;
        if label == 0 {
            break;
        }
    }
    let question_end = at + 4;
    if question_end > query.len() || question_end + 16 > out.len() {
        return None;
    }
    out[..question_end].copy_from_slice(&query[..question_end]);
    out[2] = 0x80 | (query[2] & 0x79); // QR, the opcode and RD as asked
    out[3] = 0x80; // RA, NOERROR
    out[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // one answer, nothing else
    let record = [
        0xc0, 0x0c, // the question's name
        0, 1, 0, 1, // A, IN
        0, 0, 0, 0, // TTL 0
        0, 4, ANSWER[0], ANSWER[1], ANSWER[2], ANSWER[3],
    ];
    out[question_end..question_end + 16].copy_from_slice(&record);
    Some(question_end + 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_gets_one_a_record_pointing_at_its_name() {
        // id 0x1234, RD, one question: www.x A IN.
        let query = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 1, b'x', 0, 0, 1,
            0, 1,
        ];
        let mut out = [0u8; 64];
        let n = answer(&query, &mut out).expect("a query is answered");
        assert_eq!(&out[..2], &[0x12, 0x34]);
        assert_eq!(out[2], 0x81);
        assert_eq!(&out[6..8], &[0, 1]);
        assert_eq!(&out[12..query.len()], &query[12..]);
        assert_eq!(&out[n - 4..n], &ANSWER);
    }

    #[test]
    fn a_response_or_a_truncated_name_gets_no_answer() {
        let mut out = [0u8; 64];
        let response = [0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(answer(&response, &mut out), None);
        let cut = [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, b'a'];
        assert_eq!(answer(&cut, &mut out), None);
    }
}
