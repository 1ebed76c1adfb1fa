//! The hash maps and sets of a load: foldhash rather than SipHash. A load of
//! 10,000 services builds maps of every object's name, every frontend and
//! every endpoint address; SipHash was the largest single cost of a reload
//! there. The keys come from the operator's own sources, and each map is
//! seeded afresh, so a flooding attack has nothing to aim at.

pub(crate) use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
