//! The cluster DNS responder: service names resolve, and headless and
//! ExternalName services, which exist only in DNS, work.
//!
//! Records follow the Kubernetes DNS specification, schema 1.1.0 (see
//! `records`). Every question reads the live [`Table`] once, so a reload or a
//! readiness change shows in the very next answer; nothing is cached. Names
//! outside the cluster zone go to the configured upstreams (`forward`), or are
//! REFUSED when there are none: an open forwarder on a node is an amplifier
//! nobody asked for.
//!
//! - `records` (private): the zone as a pure function of a snapshot.
//! - `forward` (private): plain forwarding over UDP, TCP on truncation.

mod forward;
mod records;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use lb_config::DnsSettings;
use lb_core::Table;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{info, warn};

use crate::lifecycle::Tasks;

use records::{Lookup, Zone, MAX_CNAME_CHAIN};

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the responder serves: the zone and how it answers. Replaced whole on
/// a reload ([`Dns::set_options`]); the listen address is not part of it,
/// since rebinding is a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOptions {
    /// The cluster zone (`cluster.domain`), e.g. `cluster.local`.
    pub zone: String,
    /// TTL of the zone's records, seconds.
    pub ttl: u32,
    /// Where other names are forwarded; empty = REFUSED.
    pub upstreams: Vec<SocketAddr>,
}

impl DnsOptions {
    /// The options a config file asks for: `[dns]` with `cluster.domain`.
    /// `None` when the file has no `[dns]` section.
    pub fn from_config(config: &lb_config::Config) -> Option<DnsOptions> {
        config
            .dns
            .as_ref()
            .map(|d| DnsOptions::new(&config.cluster.domain, d))
    }

    /// Options for `zone` from typed `[dns]` settings.
    pub fn new(zone: &str, settings: &DnsSettings) -> DnsOptions {
        DnsOptions {
            zone: zone.to_string(),
            ttl: settings.ttl,
            upstreams: settings.upstreams.clone(),
        }
    }

    fn zone(&self) -> Result<Zone, DnsError> {
        let mut origin = Name::from_ascii(&self.zone)
            .map_err(|e| DnsError::Zone(self.zone.clone(), e.to_string()))?
            .to_lowercase();
        origin.set_fqdn(true);
        Ok(Zone {
            origin,
            ttl: self.ttl,
        })
    }
}

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The zone is not a valid DNS name.
    #[error("dns zone {0:?}: {1}")]
    Zone(String, String),
    /// A listener could not be bound.
    #[error("dns listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

pub use lb_core::stats::DnsCounters;

/// The hickory-server handler: one question, one snapshot.
#[derive(Debug)]
struct Handler {
    table: Arc<Table>,
    options: Arc<ArcSwap<(DnsOptions, Zone)>>,
    counters: Arc<DnsCounters>,
}

/// A running responder (what the App holds). Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Dns {
    options: Arc<ArcSwap<(DnsOptions, Zone)>>,
    counters: Arc<DnsCounters>,
    tasks: Tasks,
    local_addr: SocketAddr,
}

impl Dns {
    /// Binds `listen` on UDP and TCP (the same port; port 0 picks one free on
    /// both) and starts answering from `table`, the server a task of
    /// `tasks` (hickory-server's own listener tasks are waited for by it).
    pub async fn start(
        listen: SocketAddr,
        table: Arc<Table>,
        options: DnsOptions,
        tasks: Tasks,
    ) -> Result<Dns, DnsError> {
        let (udp, tcp) = bind(listen).await?;
        let local_addr = udp.local_addr().unwrap_or(listen);
        let zone = options.zone()?;
        let shared = Arc::new(ArcSwap::from_pointee((options, zone)));
        let counters = Arc::new(DnsCounters::default());
        let handler = Handler {
            table,
            options: shared.clone(),
            counters: counters.clone(),
        };
        let stop = tasks.token().clone();
        tasks.spawn(async move { run(udp, tcp, handler, stop.cancelled()).await });
        info!(%local_addr, "dns responder listening (udp, tcp)");
        Ok(Dns {
            options: shared,
            counters,
            tasks,
            local_addr,
        })
    }

    /// Where the responder answers (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// New zone, TTL or upstreams from a reload; the next question uses them.
    /// A zone that is not a valid name is logged and the old options kept.
    pub fn set_options(&self, options: DnsOptions) {
        if self.options.load().0 == options {
            return;
        }
        match options.zone() {
            Ok(zone) => self.options.store(Arc::new((options, zone))),
            Err(e) => warn!("dns options not applied: {e}"),
        }
    }

    /// Answer counters.
    pub fn counters(&self) -> &DnsCounters {
        &self.counters
    }

    /// Stops answering (both listeners close) and returns once the server
    /// and its listener tasks have ended.
    pub async fn shutdown(&self) {
        self.tasks.stop().await;
    }
}

/// Serves the cluster zone from `table` on already bound sockets until
/// `shutdown` resolves (mini-redis style: tests and embedders bind, pass a
/// oneshot, and own the lifetime).
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    table: Arc<Table>,
    options: DnsOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DnsError> {
    let zone = options.zone()?;
    let handler = Handler {
        table,
        options: Arc::new(ArcSwap::from_pointee((options, zone))),
        counters: Arc::new(DnsCounters::default()),
    };
    run(udp, tcp, handler, shutdown).await;
    Ok(())
}

async fn run(
    udp: UdpSocket,
    tcp: TcpListener,
    handler: Handler,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE);
    shutdown.await;
    if let Err(e) = server.shutdown_gracefully().await {
        warn!("dns responder stopped with an error: {e}");
    }
}

/// Binds UDP and TCP on the same address; with port 0, the port UDP got is
/// tried on TCP a few times (another socket may hold it on TCP).
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let err = |source| DnsError::Bind {
        addr: listen,
        source,
    };
    let attempts = if listen.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen).await.map_err(err)?;
        let addr = udp.local_addr().map_err(err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "no common port")
    })))
}

/// One response, ready to send.
#[derive(Debug, Default)]
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(rcode: ResponseCode) -> Reply {
        Reply {
            rcode,
            ..Reply::default()
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let options = self.options.load_full();
        let reply = self.reply(request, &options.0, &options.1).await;
        let counter = match reply.rcode {
            ResponseCode::Refused | ResponseCode::NotImp | ResponseCode::FormErr => {
                &self.counters.refused
            }
            ResponseCode::ServFail => &self.counters.failed,
            _ if reply.authoritative => &self.counters.local,
            _ => &self.counters.forwarded,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = request.edns() {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().max(512));
            builder.edns(ours);
        }
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(reply.authoritative);
        header.set_recursion_available(!options.0.upstreams.is_empty());
        header.set_response_code(reply.rcode);
        let response = builder.build(
            header,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("dns response not sent: {e}");
                let mut header = Header::new();
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

impl Handler {
    async fn reply(&self, request: &Request, options: &DnsOptions, zone: &Zone) -> Reply {
        if request.message_type() != MessageType::Query {
            return Reply::code(ResponseCode::FormErr);
        }
        if request.op_code() != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::code(ResponseCode::FormErr);
        };
        if request.queries().len() != 1 {
            return Reply::code(ResponseCode::FormErr);
        }
        let query = info.query.original();
        let (qname, qtype) = (query.name().clone(), query.query_type());
        if query.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let snap = self.table.load();
        match zone.lookup(&snap, &qname, qtype) {
            Lookup::Outside => {
                let rd = request.recursion_desired();
                self.forwarded(options, &qname, qtype, rd).await
            }
            Lookup::Answer(mut answer) => {
                let mut reply = Reply {
                    authoritative: true,
                    ..Reply::default()
                };
                // ExternalName: follow the CNAME inside the zone here, outside
                // through the upstreams, bounded against loops.
                let mut chased_outside = false;
                for _ in 0..MAX_CNAME_CHAIN {
                    let Some(target) = answer.chase.take() else {
                        break;
                    };
                    reply.answers.append(&mut answer.answers);
                    reply.additionals.append(&mut answer.additionals);
                    if zone.contains(&target.to_lowercase()) {
                        match zone.lookup(&snap, &target, qtype) {
                            Lookup::Answer(next) => answer = next,
                            Lookup::Outside => break,
                        }
                    } else {
                        let mut outside = self.forwarded(options, &target, qtype, true).await;
                        if matches!(
                            outside.rcode,
                            ResponseCode::NoError | ResponseCode::NXDomain
                        ) {
                            reply.answers.append(&mut outside.answers);
                        }
                        chased_outside = true;
                        break;
                    }
                }
                let negative = answer.is_negative() && !chased_outside;
                reply.rcode = answer.rcode;
                reply.answers.append(&mut answer.answers);
                reply.additionals.append(&mut answer.additionals);
                if negative {
                    reply.authority.push(zone.soa(snap.generation()));
                }
                reply
            }
        }
    }

    async fn forwarded(
        &self,
        options: &DnsOptions,
        name: &Name,
        qtype: RecordType,
        rd: bool,
    ) -> Reply {
        match forward::forward(&options.upstreams, name, qtype, rd).await {
            Ok(mut m) => Reply {
                rcode: m.response_code(),
                authoritative: false,
                answers: m.take_answers(),
                authority: m.take_name_servers(),
                additionals: m.take_additionals(),
            },
            Err(forward::ForwardError::NoUpstreams) => Reply::code(ResponseCode::Refused),
            Err(e) => {
                warn!(%name, ?qtype, "dns forward failed: {e}");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}
