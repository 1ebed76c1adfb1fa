//! The cluster zone as a pure function of one snapshot: a question in, the
//! records of the Kubernetes DNS specification (schema 1.1.0) out. No sockets,
//! so every record shape is testable without a server.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use lb_core::{ClusterIp, Protocol, ServiceEntry, ServiceKey, ServiceType, Snapshot};

/// The schema version `dns-version.<zone>` announces.
pub(crate) const SCHEMA_VERSION: &str = "1.1.0";

/// How many CNAMEs inside the zone are followed before giving up (a loop of
/// ExternalName services pointing at each other must not spin).
pub(crate) const MAX_CNAME_CHAIN: usize = 8;

/// The CPU field of the HINFO that answers ANY (RFC 8482, section 4.2).
pub(crate) const ANY_HINFO_CPU: &str = "RFC8482";

/// The zone being served: its origin and the TTL of its records.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// `cluster.local.`, lower-case, fully qualified.
    pub(crate) origin: Name,
    /// TTL of every record of the zone (and the SOA minimum).
    pub(crate) ttl: u32,
}

/// What the zone says about one question.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// NOERROR (with or without records) or NXDOMAIN.
    pub(crate) rcode: ResponseCode,
    /// Answer section.
    pub(crate) answers: Vec<Record>,
    /// Additional section (A/AAAA of SRV targets).
    pub(crate) additionals: Vec<Record>,
    /// An ExternalName target to follow for the asked type: inside the zone by
    /// the caller's next lookup, outside through the upstreams.
    pub(crate) chase: Option<Name>,
}

impl Answer {
    fn nxdomain() -> Self {
        Answer {
            rcode: ResponseCode::NXDomain,
            ..Answer::default()
        }
    }

    fn nodata() -> Self {
        Answer::default()
    }

    fn records(answers: Vec<Record>) -> Self {
        Answer {
            answers,
            ..Answer::default()
        }
    }

    /// Whether the answer is negative (NXDOMAIN, or NODATA) and so carries
    /// the zone's SOA in its authority section.
    pub(crate) fn is_negative(&self) -> bool {
        self.answers.is_empty()
    }
}

/// A question's place relative to the data we hold.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The zone (or a reverse name of one of its addresses) answers.
    Answer(Answer),
    /// Not ours: forward it, or refuse it.
    Outside,
}

impl Zone {
    /// Whether `name` (lower-case) lies in the cluster zone.
    pub(crate) fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// The SOA that negative answers carry in their authority section.
    /// The serial is the snapshot generation, so it moves with every change.
    pub(crate) fn soa(&self, serial: u64) -> Record {
        let mname = Name::from_ascii("ns.dns")
            .and_then(|n| n.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone());
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone());
        let soa = SOA::new(
            mname,
            rname,
            (serial & u64::from(u32::MAX)) as u32,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }

    /// Answers `qname` (as asked: its case is kept in the records) of type
    /// `qtype` from `snap`. ANY is answered minimally (RFC 8482): a name
    /// that has records gets one synthesized HINFO "RFC8482" (an ExternalName
    /// its CNAME, not followed), never every record it has; a headless
    /// service's ANY would otherwise be every endpoint of both families, an
    /// amplifier for one small question.
    pub(crate) fn lookup(&self, snap: &Snapshot, qname: &Name, qtype: RecordType) -> Lookup {
        match self.lookup_all(snap, qname, qtype) {
            Lookup::Answer(answer) if qtype == RecordType::ANY => {
                Lookup::Answer(self.minimal_any(qname, answer))
            }
            other => other,
        }
    }

    /// RFC 8482's answer to ANY from the full one: negative answers as they
    /// are, a CNAME alone (a name with a CNAME has no other data), else one
    /// HINFO with CPU "RFC8482" and an empty OS.
    fn minimal_any(&self, qname: &Name, answer: Answer) -> Answer {
        if answer.answers.is_empty() {
            return answer;
        }
        if let Some(cname) = answer
            .answers
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME)
        {
            return Answer::records(vec![cname.clone()]);
        }
        Answer::records(vec![Record::from_rdata(
            qname.clone(),
            self.ttl,
            RData::HINFO(HINFO::new(ANY_HINFO_CPU.to_string(), String::new())),
        )])
    }

    fn lookup_all(&self, snap: &Snapshot, qname: &Name, qtype: RecordType) -> Lookup {
        let lower = qname.to_lowercase();
        if self.contains(&lower) {
            let depth = usize::from(lower.num_labels() - self.origin.num_labels());
            let labels: Vec<String> = lower
                .iter()
                .take(depth)
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            return Lookup::Answer(self.in_zone(snap, qname, &labels, qtype));
        }
        match reverse(&lower) {
            Some(ip) => self.reverse(snap, qname, ip, qtype),
            None => Lookup::Outside,
        }
    }

    fn in_zone(&self, snap: &Snapshot, qname: &Name, labels: &[&str], qtype: RecordType) -> Answer {
        match labels {
            [] => match qtype {
                RecordType::SOA | RecordType::ANY => {
                    Answer::records(vec![self.soa(snap.generation())])
                }
                _ => Answer::nodata(),
            },
            ["dns-version"] => match qtype {
                RecordType::TXT | RecordType::ANY => Answer::records(vec![Record::from_rdata(
                    qname.clone(),
                    self.ttl,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                )]),
                _ => Answer::nodata(),
            },
            ["svc"] | ["pod"] => Answer::nodata(),
            [ns, "svc"] | [ns, "pod"] => {
                if labels[1] == "pod" || snap.services().any(|s| s.spec.key.namespace == *ns) {
                    Answer::nodata()
                } else {
                    Answer::nxdomain()
                }
            }
            [ip, _ns, "pod"] => self.pod(qname, ip, qtype),
            [svc, ns, "svc"] => match service(snap, ns, svc) {
                Some(entry) => self.service(qname, entry, qtype),
                None => Answer::nxdomain(),
            },
            [proto, svc, ns, "svc"] if proto.starts_with('_') => {
                match service(snap, ns, svc).and_then(|e| protocol(proto).map(|p| (e, p))) {
                    Some((entry, proto))
                        if entry.ports.iter().any(|p| p.key().protocol == proto) =>
                    {
                        Answer::nodata()
                    }
                    _ => Answer::nxdomain(),
                }
            }
            [host, svc, ns, "svc"] => match service(snap, ns, svc) {
                Some(entry) => self.hostname(qname, entry, host, qtype),
                None => Answer::nxdomain(),
            },
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                match (service(snap, ns, svc), protocol(proto)) {
                    (Some(entry), Some(proto)) => self.srv(qname, entry, &port[1..], proto, qtype),
                    _ => Answer::nxdomain(),
                }
            }
            _ => Answer::nxdomain(),
        }
    }

    /// `<svc>.<ns>.svc.<zone>`: the cluster IP, the ready endpoints of a
    /// headless service, or the CNAME of an ExternalName service.
    fn service(&self, qname: &Name, entry: &ServiceEntry, qtype: RecordType) -> Answer {
        let spec = &entry.spec;
        if spec.service_type == ServiceType::ExternalName {
            let Ok(target) = Name::from_ascii(&spec.external_name).map(fqdn) else {
                return Answer::nxdomain();
            };
            let cname =
                Record::from_rdata(qname.clone(), self.ttl, RData::CNAME(CNAME(target.clone())));
            let chase = (qtype != RecordType::CNAME).then_some(target);
            return Answer {
                answers: vec![cname],
                chase,
                ..Answer::default()
            };
        }
        let ips: Vec<IpAddr> = match spec.cluster_ip {
            ClusterIp::Ip(ip) => vec![ip],
            ClusterIp::None => {
                let ips: Vec<IpAddr> = ready_addresses(entry).into_keys().collect();
                if ips.is_empty() {
                    return Answer::nxdomain();
                }
                ips
            }
        };
        Answer::records(self.addresses(qname, &ips, qtype))
    }

    /// `<hostname>.<svc>.<ns>.svc.<zone>` of a headless service's ready
    /// endpoints (an explicit hostname, else the generated one).
    fn hostname(
        &self,
        qname: &Name,
        entry: &ServiceEntry,
        host: &str,
        qtype: RecordType,
    ) -> Answer {
        if entry.spec.cluster_ip != ClusterIp::None
            || entry.spec.service_type == ServiceType::ExternalName
        {
            return Answer::nxdomain();
        }
        let ips: Vec<IpAddr> = ready_addresses(entry)
            .into_iter()
            .filter(|(_, h)| h.eq_ignore_ascii_case(host))
            .map(|(ip, _)| ip)
            .collect();
        if ips.is_empty() {
            return Answer::nxdomain();
        }
        Answer::records(self.addresses(qname, &ips, qtype))
    }

    /// `_<port>._<proto>.<svc>.<ns>.svc.<zone>` for a named port.
    fn srv(
        &self,
        qname: &Name,
        entry: &ServiceEntry,
        port_name: &str,
        proto: Protocol,
        qtype: RecordType,
    ) -> Answer {
        let spec = &entry.spec;
        let Ok(service_name) = self.service_name(&spec.key) else {
            return Answer::nxdomain();
        };
        let ports: Vec<_> = entry
            .ports
            .iter()
            .filter(|p| {
                let k = p.key();
                !k.port_name.is_empty()
                    && k.port_name.eq_ignore_ascii_case(port_name)
                    && k.protocol == proto
            })
            .collect();
        if ports.is_empty() || spec.service_type == ServiceType::ExternalName {
            return Answer::nxdomain();
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match spec.cluster_ip {
            ClusterIp::Ip(ip) => {
                for p in &ports {
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(0, 100, p.key().port, service_name.clone())),
                    ));
                }
                additionals.extend(self.addresses(&service_name, &[ip], RecordType::ANY));
            }
            ClusterIp::None => {
                let mut targets: Vec<(u16, IpAddr, String)> = Vec::new();
                for p in &ports {
                    for e in p.endpoints().iter().filter(|e| e.ready) {
                        let host = e
                            .hostname
                            .clone()
                            .unwrap_or_else(|| generated_hostname(e.addr.ip()));
                        targets.push((e.addr.port(), e.addr.ip(), host));
                    }
                }
                if targets.is_empty() {
                    return Answer::nxdomain();
                }
                let weight = u16::try_from(100 / targets.len()).unwrap_or(1).max(1);
                for (port, ip, host) in targets {
                    let Ok(target) =
                        Name::from_ascii(&host).and_then(|h| h.append_domain(&service_name))
                    else {
                        continue;
                    };
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(0, weight, port, target.clone())),
                    ));
                    additionals.extend(self.addresses(&target, &[ip], RecordType::ANY));
                }
            }
        }
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Answer::nodata();
        }
        Answer {
            answers,
            additionals,
            ..Answer::default()
        }
    }

    /// `<a-b-c-d>.<ns>.pod.<zone>`: any well-formed address in that form (the
    /// specification's deprecated but required pod records); IPv6 with `-`
    /// for `:`.
    fn pod(&self, qname: &Name, label: &str, qtype: RecordType) -> Answer {
        let v4 = label.replace('-', ".").parse::<std::net::Ipv4Addr>().ok();
        let ip = v4.map(IpAddr::V4).or_else(|| {
            label
                .replace('-', ":")
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        });
        match ip {
            Some(ip) => Answer::records(self.addresses(qname, &[ip], qtype)),
            None => Answer::nxdomain(),
        }
    }

    /// PTR for cluster IPs and ready headless endpoints; anything else is not
    /// ours (the caller forwards it).
    fn reverse(&self, snap: &Snapshot, qname: &Name, ip: IpAddr, qtype: RecordType) -> Lookup {
        let mut targets = Vec::new();
        for entry in snap.services() {
            let Ok(service_name) = self.service_name(&entry.spec.key) else {
                continue;
            };
            match entry.spec.cluster_ip {
                ClusterIp::Ip(cip) if cip == ip => targets.push(service_name),
                ClusterIp::None if entry.spec.service_type != ServiceType::ExternalName => {
                    if let Some(host) = ready_addresses(entry).get(&ip) {
                        if let Ok(n) =
                            Name::from_ascii(host).and_then(|h| h.append_domain(&service_name))
                        {
                            targets.push(n);
                        }
                    }
                }
                _ => {}
            }
        }
        if targets.is_empty() {
            return Lookup::Outside;
        }
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Lookup::Answer(Answer::nodata());
        }
        Lookup::Answer(Answer::records(
            targets
                .into_iter()
                .map(|t| Record::from_rdata(qname.clone(), self.ttl, RData::PTR(PTR(t))))
                .collect(),
        ))
    }

    /// A and AAAA records of `ips` under `name`, filtered by `qtype` (ANY
    /// keeps both families).
    fn addresses(&self, name: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
        ips.iter()
            .filter_map(|ip| {
                let rdata = match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                    _ => return None,
                };
                Some(Record::from_rdata(name.clone(), self.ttl, rdata))
            })
            .collect()
    }

    /// `<svc>.<ns>.svc.<zone>.`
    fn service_name(&self, key: &ServiceKey) -> Result<Name, hickory_proto::ProtoError> {
        Name::from_ascii(format!("{}.{}.svc", key.name, key.namespace))?.append_domain(&self.origin)
    }
}

/// The stable name of a headless endpoint without a hostname, for SRV targets
/// and PTR: its address with `-` for `.` and `:` (`127-0-244-1`), as CoreDNS
/// names them; it also resolves as `<name>.<svc>.<ns>.svc.<zone>`.
pub(crate) fn generated_hostname(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The ready endpoint addresses of a service (over all its ports), each with
/// its DNS hostname (explicit, else generated).
fn ready_addresses(entry: &ServiceEntry) -> BTreeMap<IpAddr, String> {
    let mut out: BTreeMap<IpAddr, String> = BTreeMap::new();
    for port in &entry.ports {
        for e in port.endpoints().iter().filter(|e| e.ready) {
            let ip = e.addr.ip();
            match (&e.hostname, out.get(&ip)) {
                (Some(h), _) => {
                    out.insert(ip, h.to_ascii_lowercase());
                }
                (None, None) => {
                    out.insert(ip, generated_hostname(ip));
                }
                (None, Some(_)) => {}
            }
        }
    }
    out
}

/// The service `ns/name`; names in the table are lower-case (validation), a
/// case-insensitive scan covers services built by hand.
fn service<'a>(snap: &'a Snapshot, ns: &str, name: &str) -> Option<&'a ServiceEntry> {
    snap.service(&ServiceKey::new(ns, name)).or_else(|| {
        snap.services().find(|s| {
            s.spec.key.namespace.eq_ignore_ascii_case(ns)
                && s.spec.key.name.eq_ignore_ascii_case(name)
        })
    })
}

fn protocol(label: &str) -> Option<Protocol> {
    match label {
        "_tcp" => Some(Protocol::Tcp),
        "_udp" => Some(Protocol::Udp),
        _ => None,
    }
}

fn fqdn(mut name: Name) -> Name {
    name.set_fqdn(true);
    name
}

/// The address a full reverse name (`4.3.2.1.in-addr.arpa.`, 32 nibbles of
/// `ip6.arpa.`) stands for; `None` for partial or other names.
fn reverse(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}
