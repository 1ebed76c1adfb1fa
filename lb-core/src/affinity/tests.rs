//! Tests of the affinity table: pins, their sliding timeout, the bound, endpoint
//! ids across reloads, and a model-based property test.

use super::*;
use crate::fixtures::{ip, sa as ep};
use proptest::prelude::*;

#[test]
fn pin_holds_while_the_client_keeps_coming_within_the_timeout() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
    for k in 1..10 {
        let now = t0 + Duration::from_secs(8 * k);
        assert_eq!(t.lookup(ip("127.0.0.5"), now), Some(ep("127.0.0.1:80")));
    }
}

#[test]
fn pin_expires_after_the_timeout() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
    assert_eq!(
        t.lookup(ip("127.0.0.5"), t0 + Duration::from_secs(11)),
        None
    );
    assert!(t.is_empty());
}

#[test]
fn table_is_bounded_and_drops_the_idlest_pin() {
    let t = AffinityTable::with_capacity_limit(Duration::from_secs(100), 2);
    let t0 = Instant::now();
    t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
    t.pin(
        ip("127.0.0.2"),
        ep("127.0.0.1:80"),
        t0 + Duration::from_secs(1),
    );
    t.pin(
        ip("127.0.0.3"),
        ep("127.0.0.1:80"),
        t0 + Duration::from_secs(2),
    );
    assert_eq!(t.len(), 2);
    assert_eq!(t.lookup(ip("127.0.0.1"), t0 + Duration::from_secs(3)), None);
}

#[test]
fn reap_removes_only_expired_pins() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
    t.pin(
        ip("127.0.0.2"),
        ep("127.0.0.1:80"),
        t0 + Duration::from_secs(5),
    );
    assert_eq!(t.reap(t0 + Duration::from_secs(12)), 1);
    assert_eq!(t.len(), 1);
}

#[test]
fn a_changed_timeout_applies_to_existing_pins() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
    t.set_timeout(Duration::from_secs(100));
    let later = t0 + Duration::from_secs(50);
    assert_eq!(t.lookup(ip("127.0.0.5"), later), Some(ep("127.0.0.1:80")));
    t.set_timeout(Duration::from_secs(5));
    assert_eq!(
        t.lookup(ip("127.0.0.5"), later + Duration::from_secs(6)),
        None
    );
}

#[test]
fn a_v4_client_seen_as_v4_mapped_v6_keeps_its_pin() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
    assert_eq!(
        t.lookup(ip("::ffff:127.0.0.5"), t0),
        Some(ep("127.0.0.1:80"))
    );
}

#[test]
fn pick_refreshes_a_hit_and_repins_in_place_on_a_miss() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let ids = t.endpoint_ids(&[ep("127.0.0.1:80"), ep("127.0.0.3:80")]);
    let t0 = Instant::now();
    let client = ip("127.0.0.5");
    let first = t.pick(client, t0, |_, _| None, || Some((3, ids[1])));
    assert_eq!(
        first,
        Some(Sticky {
            index: 3,
            hit: false
        })
    );
    assert_eq!(t.lookup(client, t0), Some(ep("127.0.0.3:80")));
    // A hit hands the endpoint's id and the stored index as a hint, and
    // keeps what accept says.
    let hit = t.pick(
        client,
        t0 + Duration::from_secs(9),
        |id, hint| (id == ids[1] && hint == 3).then_some(7),
        || None,
    );
    assert_eq!(
        hit,
        Some(Sticky {
            index: 7,
            hit: true
        })
    );
    // Refreshed at 9 s, so still held at 18 s; the new hint is 7.
    let hit = t.pick(
        client,
        t0 + Duration::from_secs(18),
        |_, hint| Some(hint),
        || None,
    );
    assert_eq!(
        hit,
        Some(Sticky {
            index: 7,
            hit: true
        })
    );
    // Rejected (the endpoint may no longer take connections): re-pinned.
    let moved = t.pick(
        client,
        t0 + Duration::from_secs(19),
        |_, _| None,
        || Some((1, ids[0])),
    );
    assert_eq!(
        moved,
        Some(Sticky {
            index: 1,
            hit: false
        })
    );
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.lookup(client, t0 + Duration::from_secs(19)),
        Some(ep("127.0.0.1:80"))
    );
    // Expired and nothing to choose: the pin goes.
    assert_eq!(
        t.pick(client, t0 + Duration::from_secs(60), |_, _| None, || None),
        None
    );
    assert!(t.is_empty());
}

#[test]
fn an_endpoint_keeps_its_id_while_it_stays_and_a_returning_one_gets_a_new_id() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let (a, b, c) = (ep("127.0.0.1:80"), ep("127.0.0.2:80"), ep("127.0.0.3:80"));
    let first = t.endpoint_ids(&[a, b]);
    assert_ne!(first[0], first[1]);
    // Reordered, with c added: a and b keep theirs, c gets a fresh one.
    let second = t.endpoint_ids(&[c, b, a]);
    assert_eq!((second[2], second[1]), (first[0], first[1]));
    assert!(!first.contains(&second[0]));
    // b leaves and comes back: a new id, so a pin made under the old one
    // (by a snapshot still in use) can never be taken for another endpoint.
    t.endpoint_ids(&[a, c]);
    let back = t.endpoint_ids(&[a, b, c]);
    assert!(![first[1], second[0], first[0]].contains(&back[1]));
}

#[test]
fn pins_to_an_endpoint_that_left_go_with_its_id() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
    t.pin(ip("127.0.0.2"), ep("127.0.0.2:80"), t0);
    t.endpoint_ids(&[ep("127.0.0.2:80")]);
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(ip("127.0.0.1"), t0), None);
    assert_eq!(t.lookup(ip("127.0.0.2"), t0), Some(ep("127.0.0.2:80")));
}

#[test]
fn running_out_of_endpoint_ids_starts_again_without_pins() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
    t.lock().endpoints.next = u32::MAX - 1;
    let ids = t.endpoint_ids(&[ep("127.0.0.1:80"), ep("127.0.0.2:80")]);
    assert_eq!(t.len(), 1, "one fresh id still fits");
    assert_eq!(ids[1], u32::MAX - 1);
    let ids = t.endpoint_ids(&[ep("127.0.0.1:80"), ep("127.0.0.2:80"), ep("127.0.0.3:80")]);
    assert!(t.is_empty(), "no pin may name a reused id");
    assert_eq!(ids, vec![0, 1, 2]);
}

#[test]
fn instants_before_the_table_was_made_work_too() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let Some(t0) = Instant::now().checked_sub(Duration::from_secs(5)) else {
        return; // the machine booted less than 5 s ago
    };
    t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
    let at = |s| t0 + Duration::from_secs(s);
    assert_eq!(t.lookup(ip("127.0.0.5"), at(10)), Some(ep("127.0.0.1:80")));
    assert_eq!(t.lookup(ip("127.0.0.5"), at(21)), None);
}

#[test]
fn a_pin_takes_one_cache_line() {
    assert_eq!(std::mem::size_of::<Pin>(), 64);
    assert_eq!(std::mem::align_of::<Pin>(), 64);
}

#[test]
fn pins_to_removed_endpoints_go() {
    let t = AffinityTable::new(Duration::from_secs(10));
    let t0 = Instant::now();
    t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
    t.pin(ip("127.0.0.2"), ep("127.0.0.2:80"), t0);
    t.retain_endpoints(&[ep("127.0.0.2:80")].into_iter().collect());
    assert_eq!(t.lookup(ip("127.0.0.1"), t0), None);
    assert_eq!(t.lookup(ip("127.0.0.2"), t0), Some(ep("127.0.0.2:80")));
}

/// What the table must do, written the obvious way: pins by client with
/// their last-seen time, checked against the current timeout.
#[derive(Default)]
struct Model {
    timeout: Duration,
    pins: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Model {
    fn lookup(&mut self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let timeout = self.timeout;
        match self.pins.get_mut(&client) {
            Some((e, seen)) if now.duration_since(*seen) <= timeout => {
                *seen = now;
                Some(*e)
            }
            Some(_) => {
                self.pins.remove(&client);
                None
            }
            None => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Pin(u8, u8),
    Lookup(u8),
    /// Pick with endpoints `< accept_below` still taking connections and
    /// endpoint `choose` (if any) next in line.
    Pick(u8, u8, Option<u8>),
    SetTimeout(u8),
    Reap,
    Retain(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0u8..4).prop_map(|(c, e)| Op::Pin(c, e)),
        (0u8..6).prop_map(Op::Lookup),
        (0u8..6, 0u8..5, proptest::option::of(0u8..4)).prop_map(|(c, a, e)| Op::Pick(c, a, e)),
        (1u8..20).prop_map(Op::SetTimeout),
        Just(Op::Reap),
        (0u8..5).prop_map(Op::Retain),
        (0u16..8_000).prop_map(Op::Advance),
    ]
}

fn client(c: u8) -> IpAddr {
    IpAddr::from([127, 0, 1, c])
}
fn endpoint(e: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 2, e], 80))
}

#[derive(Debug, Clone)]
enum Churn {
    /// A port is built with the endpoints whose bit is set.
    Build(u8),
    Pin(u8, u8),
    Lookup(u8),
    Advance(u16),
}

fn churn() -> impl Strategy<Value = Churn> {
    prop_oneof![
        any::<u8>().prop_map(Churn::Build),
        (0u8..12, 0u8..8).prop_map(|(c, e)| Churn::Pin(c, e)),
        (0u8..12).prop_map(Churn::Lookup),
        (0u16..3_000).prop_map(Churn::Advance),
    ]
}

proptest! {
    /// Whatever the endpoints do: a live endpoint keeps its id, live
    /// endpoints have distinct ids, no id comes back for a different
    /// address, the table holds at most its bound, and a lookup returns
    /// the endpoint the client was last pinned to or nothing.
    #[test]
    fn ids_stay_stable_and_unique_and_the_bound_holds(ops in proptest::collection::vec(churn(), 1..150)) {
        let table = AffinityTable::with_capacity_limit(Duration::from_secs(5), 4);
        let mut now = Instant::now();
        let mut live: HashMap<SocketAddr, u32> = HashMap::new();
        let mut ever: HashMap<u32, SocketAddr> = HashMap::new();
        let mut pinned: HashMap<IpAddr, SocketAddr> = HashMap::new();
        for op in ops {
            match op {
                Churn::Build(bits) => {
                    let eps: Vec<SocketAddr> =
                        (0..8).filter(|e| bits & (1 << e) != 0).map(endpoint).collect();
                    let ids = table.endpoint_ids(&eps);
                    prop_assert_eq!(ids.len(), eps.len());
                    let distinct: HashSet<u32> = ids.iter().copied().collect();
                    prop_assert_eq!(distinct.len(), ids.len());
                    for (addr, id) in eps.iter().zip(&ids) {
                        if let Some(old) = live.get(addr) {
                            prop_assert_eq!(old, id, "a live endpoint keeps its id");
                        }
                        prop_assert_eq!(*ever.entry(*id).or_insert(*addr), *addr);
                    }
                    live = eps.iter().copied().zip(ids).collect();
                    pinned.retain(|_, e| live.contains_key(e));
                }
                Churn::Pin(c, e) => {
                    table.pin(client(c), endpoint(e), now);
                    pinned.insert(client(c), endpoint(e));
                }
                Churn::Lookup(c) => {
                    if let Some(got) = table.lookup(client(c), now) {
                        prop_assert_eq!(Some(&got), pinned.get(&client(c)));
                    }
                }
                Churn::Advance(ms) => now += Duration::from_millis(ms.into()),
            }
            prop_assert!(table.len() <= 4);
        }
    }

    #[test]
    fn the_table_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let table = AffinityTable::new(Duration::from_secs(5));
        let mut model = Model { timeout: Duration::from_secs(5), ..Model::default() };
        let mut now = Instant::now();
        for op in ops {
            match op {
                Op::Pin(c, e) => {
                    table.pin(client(c), endpoint(e), now);
                    model.pins.insert(client(c), (endpoint(e), now));
                }
                Op::Lookup(c) => {
                    prop_assert_eq!(table.lookup(client(c), now), model.lookup(client(c), now));
                }
                Op::Pick(c, below, choose) => {
                    // As a port built now would: the ids of all four
                    // endpoints (pins stay, as all four are live).
                    let all: Vec<SocketAddr> = (0..4).map(endpoint).collect();
                    let ids = table.endpoint_ids(&all);
                    let got = table.pick(
                        client(c),
                        now,
                        |id, _| {
                            let e = ids.iter().position(|&i| i == id)?;
                            (e < usize::from(below)).then_some(0)
                        },
                        || choose.map(|e| (1, ids[usize::from(e)])),
                    );
                    let want = match model.lookup(client(c), now) {
                        Some(addr) if addr.ip() < IpAddr::from([127, 0, 2, below]) => {
                            Some(Sticky { index: 0, hit: true })
                        }
                        _ => choose.map(|e| {
                            model.pins.insert(client(c), (endpoint(e), now));
                            Sticky { index: 1, hit: false }
                        }),
                    };
                    prop_assert_eq!(got, want);
                }
                Op::SetTimeout(secs) => {
                    table.set_timeout(Duration::from_secs(secs.into()));
                    model.timeout = Duration::from_secs(secs.into());
                }
                Op::Reap => {
                    let timeout = model.timeout;
                    let before = model.pins.len();
                    model.pins.retain(|_, (_, seen)| now.duration_since(*seen) <= timeout);
                    prop_assert_eq!(table.reap(now), before - model.pins.len());
                }
                Op::Retain(below) => {
                    let live: HashSet<SocketAddr> = (0..below).map(endpoint).collect();
                    table.retain_endpoints(&live);
                    model.pins.retain(|_, (e, _)| live.contains(e));
                }
                Op::Advance(ms) => now += Duration::from_millis(ms.into()),
            }
            prop_assert_eq!(table.len(), model.pins.len());
        }
    }
}
