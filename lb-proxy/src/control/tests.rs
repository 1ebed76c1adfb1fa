//! The control plane's pipeline with a source a test sets: coalescing,
//! refusal, level-triggering, and its lifecycle.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lb_config::source::{DesiredState, MemorySource, Origin};
use lb_core::alloc::MemoryStore;
use lb_core::ProxySettings;

use super::{ControlOptions, ControlPlane};
use crate::dataplane::DataPlane;
use crate::lifecycle::Tasks;

/// The settings every test runs with: cluster IPs on loopback, no admin.
fn settings() -> MemorySource {
    let source = MemorySource::new("settings");
    source.set(DesiredState {
        file: Some(
            lb_config::parse_str("[cluster]\nservice_cidr = \"127.97.0.0/16\"\n")
                .expect("settings parse"),
        ),
        ..DesiredState::default()
    });
    source
}

/// `count` services named `svc-0`..; `bad` adds one that fails validation.
fn services(count: usize, bad: bool) -> DesiredState {
    let mut text = String::new();
    for i in 0..count {
        text.push_str(&format!(
            "[[services]]\nname = \"svc-{i}\"\nports = [{{ port = 80 }}]\n"
        ));
    }
    if bad {
        text.push_str("[[services]]\nname = \"bad\"\nports = [{ port = 70000 }]\n");
    }
    let raw = lb_config::parse_str(&text).expect("objects parse");
    DesiredState::from_objects(
        raw,
        &Origin::Program {
            source: "test".into(),
        },
    )
}

struct Running {
    objects: MemorySource,
    control: ControlPlane,
    dataplane: DataPlane,
    tasks: Tasks,
}

async fn running(first: DesiredState) -> Running {
    running_with(first, None).await
}

/// [`running`] with one more source after the settings and the objects.
async fn running_with(
    first: DesiredState,
    extra: Option<Arc<dyn lb_config::source::Source>>,
) -> Running {
    let objects = MemorySource::new("objects");
    objects.set(first);
    let tasks = Tasks::new();
    let mut options = ControlOptions::new(Box::<MemoryStore>::default())
        .source(Arc::new(settings()))
        .source(Arc::new(objects.clone()));
    if let Some(source) = extra {
        options = options.source(source);
    }
    let options = options.node_name("node-1");
    let (control, loaded) = ControlPlane::load(options, tasks.child())
        .await
        .expect("first load");
    let dataplane = DataPlane::start_in(
        &tasks,
        ProxySettings::default(),
        loaded.snapshot,
        Default::default(),
    )
    .await;
    control.serve(&dataplane);
    Running {
        objects,
        control,
        dataplane,
        tasks,
    }
}

impl Running {
    fn successes(&self) -> u64 {
        self.control.reloads().success.load(Ordering::Relaxed)
    }

    fn failures(&self) -> u64 {
        self.control.reloads().failure.load(Ordering::Relaxed)
    }

    fn services(&self) -> usize {
        self.dataplane.table().load().services().count()
    }

    async fn until(&self, what: impl Fn(&Running) -> bool) -> bool {
        for _ in 0..250 {
            if what(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn stop(self) {
        self.dataplane.shutdown().await;
        self.control.stop().await;
        self.tasks.stop().await;
        assert_eq!(self.tasks.running(), 0, "a task outlived stop");
    }
}

#[tokio::test]
async fn a_burst_of_changes_gives_one_snapshot() {
    let r = running(services(1, false)).await;
    let before = r.dataplane.table().load().generation();
    for n in 2..=20 {
        r.objects.set(services(n, false));
    }
    assert!(
        r.until(|r| r.services() == 20).await,
        "the last state is served"
    );
    let published = r.dataplane.table().load().generation() - before;
    assert!(
        published <= 2,
        "19 changes in a burst gave {published} snapshots"
    );
    r.stop().await;
}

#[tokio::test]
async fn a_state_that_fails_validation_changes_nothing_and_is_counted() {
    let r = running(services(2, false)).await;
    let generation = r.dataplane.table().load().generation();
    r.objects.set(services(5, true));
    assert!(r.until(|r| r.failures() == 1).await);
    assert_eq!(r.services(), 2, "the previous state keeps serving");
    assert_eq!(r.dataplane.table().load().generation(), generation);
    assert_eq!(r.control.config().services.len(), 2);
    // The same bad state again is not a second failure: nothing changed.
    assert!(!r.control.reload(false).await);
    assert_eq!(r.failures(), 1);
    r.stop().await;
}

#[tokio::test]
async fn a_reload_that_finds_nothing_new_applies_nothing_unless_forced() {
    let r = running(services(3, false)).await;
    assert!(
        !r.control.reload(false).await,
        "nothing new, nothing applied"
    );
    assert_eq!(r.successes(), 0);
    assert!(
        r.control.reload(true).await,
        "SIGHUP applies the same state"
    );
    assert_eq!(r.successes(), 1);
    assert_eq!(r.services(), 3);
    r.stop().await;
}

#[tokio::test]
async fn a_control_plane_that_does_not_serve_answers_no_request() {
    let tasks = Tasks::new();
    let options = ControlOptions::new(Box::<MemoryStore>::default())
        .source(Arc::new(settings()))
        .node_name("node-1");
    let (control, _loaded) = ControlPlane::load(options, tasks.child())
        .await
        .expect("first load");
    assert!(!control.reload(true).await, "not serving yet");
    control.stop().await;
    tasks.stop().await;
    assert_eq!(tasks.running(), 0);
}

#[tokio::test]
async fn an_invalid_first_state_starts_nothing() {
    let objects = MemorySource::new("objects");
    objects.set(services(1, true));
    let tasks = Tasks::new();
    let options = ControlOptions::new(Box::<MemoryStore>::default())
        .source(Arc::new(settings()))
        .source(Arc::new(objects))
        .node_name("node-1");
    let errors = ControlPlane::load(options, tasks.child())
        .await
        .expect_err("the bad port is refused");
    assert!(
        errors.to_string().contains("services[bad].ports[0].port"),
        "{errors}"
    );
    assert_eq!(tasks.running(), 0, "the sources' watches stopped");
}

/// A source whose reads wait while its gate is shut: a manifest that takes
/// a minute to parse, an etcd that does not answer.
#[derive(Debug, Clone)]
struct Gated {
    inner: MemorySource,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Gated {
    fn new(state: DesiredState) -> Gated {
        let inner = MemorySource::new("gated");
        inner.set(state);
        Gated {
            inner,
            gate: Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new())),
        }
    }

    fn set_open(&self, open: bool) {
        *self.gate.0.lock().unwrap() = open;
        self.gate.1.notify_all();
    }
}

impl lb_config::source::Source for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    fn desired(&self) -> Result<DesiredState, lb_config::ConfigErrors> {
        let mut open = self.gate.0.lock().unwrap();
        while !*open {
            open = self.gate.1.wait(open).unwrap();
        }
        drop(open);
        self.inner.desired()
    }

    fn watch(
        self: Arc<Self>,
        changed: lb_config::source::Changed,
        stop: tokio_util::sync::CancellationToken,
    ) -> lb_config::source::WatchFuture {
        Arc::new(self.inner.clone()).watch(changed, stop)
    }
}

/// One service named `name`, from the gated source.
fn one(name: &str) -> DesiredState {
    let raw = lb_config::parse_str(&format!(
        "[[services]]\nname = \"{name}\"\nports = [{{ port = 80 }}]\n"
    ))
    .expect("objects parse");
    DesiredState::from_objects(
        raw,
        &Origin::Program {
            source: "gated".into(),
        },
    )
}

#[tokio::test]
async fn a_source_stuck_in_a_read_does_not_hold_up_the_others() {
    let gated = Gated::new(one("slow-1"));
    let r = running_with(services(1, false), Some(Arc::new(gated.clone()))).await;
    let has = |r: &Running, name: &str| {
        r.dataplane
            .table()
            .load()
            .services()
            .any(|s| s.spec.key.name == name)
    };
    assert!(r.until(|r| has(r, "slow-1") && r.services() == 2).await);

    // The gated source changes and its read hangs; the other one changes too.
    gated.set_open(false);
    gated.inner.set(one("slow-2"));
    r.objects.set(services(3, false));
    assert!(
        r.until(|r| r.services() == 4).await,
        "the other source's change waited for the stuck read"
    );
    assert!(has(&r, "slow-1") && !has(&r, "slow-2"));

    // The read lands: its state follows without anyone asking.
    gated.set_open(true);
    assert!(r.until(|r| has(r, "slow-2") && !has(r, "slow-1")).await);
    r.stop().await;
}
