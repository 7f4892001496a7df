//! CPU cost of the OMEMO layer per message: `Account::encrypt` / `decrypt` plus the commit of
//! the advanced state (`StateUpdate::commit`, which also flushes the store). In memory, and one
//! round trip on a file-snapshotted `MemoryStore` in a tempdir to show the cost of a flush
//! (an fsync and a rename per commit). Results: docs/performance.md.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::sync::Arc;

use tokio::runtime::Runtime;
use xmpp_omemo::omemo::{Account, DeviceAddress, MemoryStore, OmemoStore, TrustPolicy};
use xmpp_omemo::stanza::omemo::{Bundle, Encrypted};

const ALICE: &str = "alice@x.test";
const BOB: &str = "bob@x.test";
/// A 100-byte body.
const BODY: &str = "The quick brown fox jumps over the lazy dog; the bridge carries it across, sealed for each device!!!";

/// Where the parties keep their state: in memory, or each in a snapshot file in `dir`.
enum Backend {
    Memory,
    Files(tempfile::TempDir),
}

impl Backend {
    fn store(&self, name: &str) -> Arc<dyn OmemoStore> {
        match self {
            Self::Memory => Arc::new(MemoryStore::new()),
            Self::Files(dir) => Arc::new(
                MemoryStore::open(dir.path().join(format!("{name}.json"))).expect("open store"),
            ),
        }
    }
}

struct Party {
    account: Account,
    bundle: Bundle,
}

impl Party {
    /// `name` names the state in `backend`; `jid` is the bare JID (a second device shares it).
    fn new(backend: &Backend, name: &str, jid: &str) -> Self {
        let account =
            Account::open_or_create(backend.store(name), jid, TrustPolicy::default(), &[])
                .expect("create account");
        let bundle = account.bundle().expect("bundle");
        Self { account, bundle }
    }

    fn address(&self) -> DeviceAddress {
        DeviceAddress::new(self.account.jid(), self.account.device_id())
    }
}

/// A message's addressing, built outside the timed code. The first device is the contact's.
struct Recipients {
    to: String,
    targets: Vec<DeviceAddress>,
    bundles: BTreeMap<DeviceAddress, Bundle>,
}

impl Recipients {
    fn new(devices: &[&Party]) -> Self {
        Self {
            to: devices[0].account.jid().to_owned(),
            targets: devices.iter().map(|p| p.address()).collect(),
            bundles: devices
                .iter()
                .map(|p| (p.address(), p.bundle.clone()))
                .collect(),
        }
    }
}

async fn seal(from: &Party, to: &Recipients) -> Encrypted {
    let guard = from.account.lock().await;
    let sealed = from
        .account
        .encrypt(guard, &to.to, Some(BODY), &to.targets, &to.bundles)
        .await
        .expect("encrypt");
    sealed.state.commit().await.expect("commit");
    sealed.element
}

async fn open(at: &Party, from: &Party, message: &Encrypted) {
    let guard = at.account.lock().await;
    let decrypted = at
        .account
        .decrypt(guard, from.account.jid(), message)
        .await
        .map_err(|f| f.error)
        .expect("decrypt");
    black_box(&decrypted.body);
    decrypted.state.commit().await.expect("commit");
}

async fn round(from: &Party, to: &Party, recipients: &Recipients) {
    open(to, from, &seal(from, recipients).await).await;
}

/// Alice and bob with a session each way (alice then sends plain SignalMessages), plus the
/// recipients of alice's messages to bob.
fn pair(rt: &Runtime, backend: &Backend) -> (Party, Party, Recipients) {
    let (alice, bob) = (
        Party::new(backend, ALICE, ALICE),
        Party::new(backend, BOB, BOB),
    );
    establish(rt, &alice, &bob);
    let to_bob = Recipients::new(&[&bob]);
    (alice, bob, to_bob)
}

fn establish(rt: &Runtime, a: &Party, b: &Party) {
    rt.block_on(async {
        round(a, b, &Recipients::new(&[b])).await;
        round(b, a, &Recipients::new(&[a])).await;
    });
}

fn omemo(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let (alice, _bob, to_bob) = pair(&rt, &Backend::Memory);
    c.bench_function("encrypt_1_device", |b| {
        b.iter(|| rt.block_on(seal(&alice, &to_bob)))
    });

    let (alice, bob, to_bob) = pair(&rt, &Backend::Memory);
    c.bench_function("decrypt_1_device", |b| {
        b.iter_batched(
            || rt.block_on(seal(&alice, &to_bob)),
            |m| rt.block_on(open(&bob, &alice, &m)),
            BatchSize::SmallInput,
        )
    });

    let backend = Backend::Memory;
    let (alice, bob, _) = pair(&rt, &backend);
    let (bob2, alice2) = (
        Party::new(&backend, "bob#2", BOB),
        Party::new(&backend, "alice#2", ALICE),
    );
    establish(&rt, &alice, &bob2);
    establish(&rt, &alice, &alice2);
    let to_all = Recipients::new(&[&bob, &bob2, &alice2]);
    c.bench_function("encrypt_3_devices", |b| {
        b.iter(|| rt.block_on(seal(&alice, &to_all)))
    });

    let mut slow = c.benchmark_group("slow");
    slow.sample_size(20);
    slow.bench_function("session_setup", |b| {
        b.iter_batched(
            || {
                let backend = Backend::Memory;
                let (alice, bob) = (
                    Party::new(&backend, ALICE, ALICE),
                    Party::new(&backend, BOB, BOB),
                );
                let to_bob = Recipients::new(&[&bob]);
                (backend, alice, bob, to_bob)
            },
            // Returned, so that dropping the accounts is not timed.
            |world| {
                rt.block_on(round(&world.1, &world.2, &world.3));
                world
            },
            BatchSize::SmallInput,
        )
    });

    let (alice, bob, to_bob) = pair(&rt, &Backend::Memory);
    slow.bench_function("round_trip_1_device/memory", |b| {
        b.iter(|| rt.block_on(round(&alice, &bob, &to_bob)))
    });
    let files = Backend::Files(tempfile::tempdir().expect("tempdir"));
    let (alice, bob, to_bob) = pair(&rt, &files);
    slow.bench_function("round_trip_1_device/file_flush", |b| {
        b.iter(|| rt.block_on(round(&alice, &bob, &to_bob)))
    });
    slow.finish();
}

criterion_group!(benches, omemo);
criterion_main!(benches);
