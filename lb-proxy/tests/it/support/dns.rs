//! The cluster DNS responder on its own: served over a table built from
//! TOML, asked by a real resolver client (hickory-resolver, pointed at it,
//! never at the system's resolver) and by raw queries for exact flags and
//! sections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use lb_core::{Snapshot, Table};
use lb_proxy::ops::dns::DnsOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

/// A responder serving a table on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct Responder {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// The table it answers from; rebuild it to change the answers.
    pub table: Arc<Table>,
    /// The config the table was built from.
    pub config: lb_config::Config,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The service CIDR every test file uses.
pub const HEADER: &str = "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n[admin]\nlisten = \"\"\n";

/// Loads `body` (after [`HEADER`]) and serves it with `upstreams`.
pub async fn responder(body: &str, upstreams: Vec<SocketAddr>) -> Responder {
    let (table, config) = table(body);
    serve_table(table, config, upstreams).await
}

/// The table `body` (after [`HEADER`]) describes, and its config.
pub fn table(body: &str) -> (Arc<Table>, lb_config::Config) {
    let config = lb_config::Loader::new(Box::<lb_core::alloc::MemoryStore>::default())
        .with_default_node_name("node-1")
        .load_str(&format!("{HEADER}{body}"))
        .expect("valid config");
    let snapshot = Snapshot::build(
        config.node.clone(),
        config.services.clone(),
        None,
        SystemTime::now(),
    );
    (Arc::new(Table::new(snapshot)), config)
}

/// Serves an existing table.
pub async fn serve_table(
    table: Arc<Table>,
    config: lb_config::Config,
    upstreams: Vec<SocketAddr>,
) -> Responder {
    // The UDP port may be taken on TCP by another test: try a few.
    let mut pair = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            pair = Some((udp, addr, tcp));
            break;
        }
    }
    let (udp, addr, tcp) = pair.expect("a port free on UDP and TCP within 16 tries");
    let (tx, rx) = oneshot::channel();
    let options = DnsOptions {
        zone: config.cluster.domain.clone(),
        ttl: 5,
        upstreams,
    };
    tokio::spawn(lb_proxy::ops::dns::serve(
        udp,
        tcp,
        table.clone(),
        options,
        async move {
            let _ = rx.await;
        },
    ));
    Responder {
        addr,
        table,
        config,
        stop: Some(tx),
    }
}

/// A hickory resolver that asks only `server` (no cache, no search list, no
/// hosts file, one attempt), over UDP or TCP.
pub fn resolver(server: SocketAddr, protocol: Protocol) -> TokioResolver {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(server, protocol));
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(3);
    opts.ndots = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    opts.edns0 = true;
    opts.recursion_desired = true;
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// The addresses `resolver` finds for `name` (A and AAAA), in the order
/// of the answer.
pub async fn lookup_ips(resolver: &TokioResolver, name: &str) -> Vec<IpAddr> {
    resolver
        .lookup_ip(name)
        .await
        .unwrap_or_else(|e| panic!("{name} resolves: {e}"))
        .iter()
        .collect()
}

/// The A and AAAA addresses of a raw answer, sorted.
pub fn ips(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// One raw question over UDP: the whole response message, for exact rcode,
/// flags and sections. Bounded by a 3 s timeout.
pub async fn query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let question = question(name, qtype, None);
    let answer = Message::from_vec(&exchange_udp(server, &question).await).unwrap();
    assert_eq!(answer.id(), question.id());
    answer
}

/// A question for `name`/`qtype` with a random id, recursion desired, and
/// an EDNS OPT record advertising `edns` bytes when given.
pub fn question(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(payload) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        m.set_edns(opt);
    }
    m
}

/// Sends `question` over UDP and returns the reply datagram as it came
/// (its length is what a reflection victim would receive). Bounded by a
/// 3 s timeout.
pub async fn exchange_udp(server: SocketAddr, question: &Message) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&question.to_vec().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .expect("an answer within 3 s")
        .unwrap();
    buf.truncate(n);
    buf
}

/// Sends `question` over TCP (two-byte length prefix) and returns the
/// reply message's bytes. Bounded by a 3 s timeout.
pub async fn exchange_tcp(server: SocketAddr, question: &Message) -> Vec<u8> {
    let bytes = question.to_vec().unwrap();
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.unwrap();
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        stream
            .write_all(&[&len[..], &bytes].concat())
            .await
            .unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await.unwrap();
        reply
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .expect("an answer over TCP within 3 s")
}

/// The answer section as `name TYPE rdata` lines (sorted), for readable
/// assertions.
pub fn answers(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers()
        .iter()
        .map(|r| format!("{} {} {}", r.name(), r.record_type(), r.data()))
        .collect();
    v.sort();
    v
}
