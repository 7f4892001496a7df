//! What a contact's client supports (replies, corrections, reactions, ...), learnt from the
//! XEP-0115 caps in its presence and a XEP-0030 disco#info query, so a bridge only sends what
//! the other side will render.
//!
//! [`FeatureCache`] keeps the answers: by caps `ver` when the answer hashes to it (one entry for
//! every contact running the same client), otherwise by full JID only, so a client that lies
//! about its `ver` cannot poison what other contacts are believed to support. Both maps are
//! bounded, and concurrent look-ups of one key share one query.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::jid::Jid;
use crate::stanza::caps::{Caps, SHA1, verification_string};
use crate::stanza::disco::DiscoInfo;
use crate::stanza::ns;

/// How many distinct verified caps `ver`s we remember (there are few client versions around).
const MAX_BY_VER: usize = 512;
/// How many full JIDs' own answers we remember (contacts without verifiable caps).
const MAX_BY_JID: usize = 1024;

/// What one client supports, from the feature `var`s of its disco#info answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// XEP-0461 message replies (`urn:xmpp:reply:0`).
    pub replies: bool,
    /// XEP-0308 last message correction (`urn:xmpp:message-correct:0`).
    pub corrections: bool,
    /// XEP-0444 message reactions (`urn:xmpp:reactions:0`).
    pub reactions: bool,
    /// XEP-0424 message retraction (`urn:xmpp:message-retract:1`, or the older `:0`).
    pub retractions: bool,
    /// XEP-0333 chat markers (`urn:xmpp:chat-markers:0`).
    pub markers: bool,
    /// XEP-0184 message delivery receipts (`urn:xmpp:receipts`).
    pub receipts: bool,
    /// XEP-0085 chat state notifications (`http://jabber.org/protocol/chatstates`).
    pub chat_states: bool,
}

impl Features {
    /// Reads the features we care about from disco#info feature `var`s; others are ignored.
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = &'a str>) -> Self {
        let mut features = Self::default();
        for var in vars {
            match var {
                ns::REPLY => features.replies = true,
                ns::CORRECT => features.corrections = true,
                ns::REACTIONS => features.reactions = true,
                ns::RETRACT | ns::RETRACT_0 => features.retractions = true,
                ns::CHAT_MARKERS => features.markers = true,
                ns::RECEIPTS => features.receipts = true,
                ns::CHAT_STATES => features.chat_states = true,
                _ => {}
            }
        }
        features
    }

    fn from_info(info: &DiscoInfo) -> Self {
        Self::from_vars(info.features.iter().map(String::as_str))
    }
}

/// Remembers what contacts' clients support, by verified caps `ver` and by full JID, bounded
/// (the oldest entry goes first). Cloning shares the cache; all methods take `&self`.
#[derive(Clone)]
pub struct FeatureCache {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
}

struct State {
    /// Answers whose hash matched their caps `ver` (XEP-0115 SHA-1 only).
    by_ver: Bounded<String, Features>,
    /// Answers good for one resource only, with the caps they came with (`None`: no caps).
    by_jid: Bounded<Jid, (Option<CapsTag>, Features)>,
    /// Queries under way; a resolve of the same key waits for the first one's outcome.
    in_flight: HashMap<Key, watch::Receiver<Option<Outcome>>>,
}

/// What a look-up waits on: a verifiable `ver`, or one resource.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Ver(String),
    Jid(Jid),
}

/// The caps a per-JID answer was given for: a new presence with other caps asks again.
#[derive(Clone, PartialEq, Eq)]
struct CapsTag {
    hash: String,
    ver: String,
}

impl CapsTag {
    fn of(caps: &Caps) -> Self {
        Self {
            hash: caps.hash.clone(),
            ver: caps.ver.clone(),
        }
    }
}

/// One query's result, as shared with the resolves that waited for it.
#[derive(Clone)]
struct Outcome {
    /// Whom the query went to: an unverified answer is good for them only.
    asked: Jid,
    features: Option<Features>,
    verified: bool,
}

impl std::fmt::Debug for FeatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("FeatureCache")
            .field("by_ver", &state.by_ver.len())
            .field("by_jid", &state.by_jid.len())
            .field("in_flight", &state.in_flight.len())
            .finish()
    }
}

impl Default for FeatureCache {
    fn default() -> Self {
        Self::new()
    }
}

impl FeatureCache {
    /// An empty cache holding up to 512 `ver`s and 1024 full JIDs.
    pub fn new() -> Self {
        Self::limited(MAX_BY_VER, MAX_BY_JID)
    }

    /// An empty cache with other bounds, so tests can fill it.
    #[cfg(test)]
    pub(crate) fn with_limits(by_ver: usize, by_jid: usize) -> Self {
        Self::limited(by_ver, by_jid)
    }

    fn limited(by_ver: usize, by_jid: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    by_ver: Bounded::new(by_ver),
                    by_jid: Bounded::new(by_jid),
                    in_flight: HashMap::new(),
                }),
            }),
        }
    }

    /// What the client at `from` supports, given the caps of its latest presence. On a cache
    /// miss, `query(node)` asks `from` for its disco#info (the caller does the I/O; `None` is no
    /// answer, an error or a timeout, which is not cached). With SHA-1 caps the node is
    /// `<node>#<ver>` and an answer that hashes to `ver` is shared by every contact with that
    /// `ver`; any other answer is kept for `from` alone. `None` when no answer came.
    pub async fn resolve<F, Fut>(
        &self,
        from: &Jid,
        caps: Option<&Caps>,
        query: F,
    ) -> Option<Features>
    where
        F: FnOnce(Option<String>) -> Fut,
        Fut: Future<Output = Option<DiscoInfo>>,
    {
        let verifiable = caps.filter(|c| c.hash == SHA1);
        let tag = caps.map(CapsTag::of);
        let mut key = match verifiable {
            Some(c) => Key::Ver(c.ver.clone()),
            None => Key::Jid(from.clone()),
        };
        loop {
            match self.begin(&key, from, verifiable, tag.as_ref()) {
                Step::Done(features) => return Some(features),
                Step::Wait(mut rx) => {
                    let outcome = rx
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|o| o.clone());
                    match outcome {
                        // The query was dropped unfinished: try again, maybe as the asker.
                        None => continue,
                        Some(o) if o.verified || o.asked == *from => return o.features,
                        // Another contact's unverified (or missing) answer says nothing of ours.
                        Some(_) => key = Key::Jid(from.clone()),
                    }
                }
                Step::Lead(flight) => {
                    let info = query(verifiable.map(Caps::disco_node)).await;
                    let features = info.as_ref().map(Features::from_info);
                    let verified = match (verifiable, &info) {
                        (Some(c), Some(info)) => {
                            let ok = verifies(c, info);
                            if !ok {
                                tracing::debug!(
                                    node = %c.node,
                                    "disco#info answer does not match its caps; kept for that resource only"
                                );
                            }
                            ok
                        }
                        _ => false,
                    };
                    flight.finish(
                        Outcome {
                            asked: from.clone(),
                            features,
                            verified,
                        },
                        verifiable,
                        tag,
                    );
                    return features;
                }
            }
        }
    }

    /// Forgets the answer kept for the full JID `from` alone (its resource went offline).
    /// Answers shared by `ver` stay.
    pub fn forget(&self, from: &Jid) {
        self.inner.lock().by_jid.remove(from);
    }

    /// Looks in the cache, joins a query under way for `key`, or starts one.
    fn begin(&self, key: &Key, from: &Jid, caps: Option<&Caps>, tag: Option<&CapsTag>) -> Step<'_> {
        let mut state = self.inner.lock();
        if let Some(c) = caps
            && let Some(features) = state.by_ver.get(&c.ver)
        {
            return Step::Done(*features);
        }
        if let Some((for_caps, features)) = state.by_jid.get(from)
            && for_caps.as_ref() == tag
        {
            return Step::Done(*features);
        }
        if let Some(rx) = state.in_flight.get(key) {
            return Step::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        state.in_flight.insert(key.clone(), rx);
        Step::Lead(Flight {
            inner: &self.inner,
            key: key.clone(),
            tx,
            finished: false,
        })
    }

    /// How many entries each map holds (`by_ver`, `by_jid`).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let state = self.inner.lock();
        (state.by_ver.len(), state.by_jid.len())
    }
}

impl Inner {
    /// The state; a panic elsewhere cannot leave it half-updated, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What [`FeatureCache::begin`] found.
enum Step<'a> {
    Done(Features),
    Wait(watch::Receiver<Option<Outcome>>),
    Lead(Flight<'a>),
}

/// A query we are making for `key`; dropped unfinished (the resolve was cancelled), it
/// withdraws, and those waiting on it try again.
struct Flight<'a> {
    inner: &'a Inner,
    key: Key,
    tx: watch::Sender<Option<Outcome>>,
    finished: bool,
}

impl Flight<'_> {
    /// Stores the outcome and hands it to the waiting resolves, in one step with withdrawing the
    /// query, so a new resolve sees either the query or its result.
    fn finish(mut self, outcome: Outcome, caps: Option<&Caps>, tag: Option<CapsTag>) {
        {
            let mut state = self.inner.lock();
            if let Some(features) = outcome.features {
                match caps {
                    Some(c) if outcome.verified => state.by_ver.insert(c.ver.clone(), features),
                    _ => state.by_jid.insert(outcome.asked.clone(), (tag, features)),
                }
            }
            state.in_flight.remove(&self.key);
            self.finished = true;
        }
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.lock().in_flight.remove(&self.key);
        }
    }
}

/// Whether `info` is what `caps.ver` stands for (XEP-0115 §5.4). An answer with XEP-0128 forms
/// is not: we do not hash them. Duplicate identities or features make an answer ill-formed.
fn verifies(caps: &Caps, info: &DiscoInfo) -> bool {
    if !info.extensions.is_empty() {
        return false;
    }
    let mut vars: Vec<&str> = info.features.iter().map(String::as_str).collect();
    vars.sort_unstable();
    if vars.windows(2).any(|w| w[0] == w[1]) {
        return false;
    }
    if info.identities.iter().collect::<HashSet<_>>().len() != info.identities.len() {
        return false;
    }
    verification_string(&info.identities, &vars) == caps.ver
}

/// A map of at most `limit` entries that drops the oldest insertion when full.
struct Bounded<K, V> {
    limit: usize,
    entries: HashMap<K, (u64, V)>,
    /// Insertion sequence number → key, oldest first.
    order: BTreeMap<u64, K>,
    next: u64,
}

impl<K: Clone + Eq + Hash, V> Bounded<K, V> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// Inserts or replaces `key`, which becomes the newest entry.
    fn insert(&mut self, key: K, value: V) {
        if self.limit == 0 {
            return;
        }
        self.remove(&key);
        while self.entries.len() >= self.limit {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.clone());
        self.entries.insert(key, (seq, value));
    }

    fn remove(&mut self, key: &K) {
        if let Some((seq, _)) = self.entries.remove(key) {
            self.order.remove(&seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Ready;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::stanza::disco::Identity;
    use crate::xml::Element;

    const CONVERSATIONS_NODE: &str = "http://conversations.im";

    /// A Conversations-like client's disco#info answer (its identity and features as of 2.x).
    fn conversations() -> DiscoInfo {
        let features = [
            "urn:xmpp:jingle:1",
            "urn:xmpp:jingle:apps:file-transfer:3",
            "urn:xmpp:jingle:transports:s5b:1",
            "urn:xmpp:jingle:transports:ibb:1",
            "http://jabber.org/protocol/muc",
            "jabber:x:conference",
            "jabber:x:oob",
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#info",
            "urn:xmpp:avatar:metadata+notify",
            "http://jabber.org/protocol/nick+notify",
            "urn:xmpp:ping",
            "jabber:iq:version",
            "http://jabber.org/protocol/chatstates",
            "eu.siacs.conversations.axolotl.devicelist+notify",
            "urn:xmpp:chat-markers:0",
            "urn:xmpp:receipts",
            "urn:xmpp:message-correct:0",
            "urn:xmpp:reactions:0",
            "urn:xmpp:message-retract:0",
            "urn:xmpp:reply:0",
        ];
        DiscoInfo {
            node: None,
            identities: vec![Identity {
                name: Some("Conversations".into()),
                ..Identity::new("client", "phone")
            }],
            features: features.iter().map(|&f| f.to_owned()).collect(),
            extensions: vec![],
        }
    }

    /// The SHA-1 caps a client answering `info` sends.
    fn caps_of(info: &DiscoInfo) -> Caps {
        let vars: Vec<&str> = info.features.iter().map(String::as_str).collect();
        Caps::sha1(CONVERSATIONS_NODE, &info.identities, &vars)
    }

    /// A minimal client answering with chat states only.
    fn plain() -> DiscoInfo {
        DiscoInfo {
            identities: vec![Identity::new("client", "pc")],
            features: vec![ns::DISCO_INFO.into(), ns::CHAT_STATES.into()],
            ..DiscoInfo::default()
        }
    }

    fn jid(s: &str) -> Jid {
        Jid::parse(s).expect("valid JID")
    }

    /// A disco#info responder: counts the queries and notes the nodes asked.
    #[derive(Default, Clone)]
    struct Peer {
        calls: Arc<AtomicUsize>,
        nodes: Arc<Mutex<Vec<Option<String>>>>,
    }

    impl Peer {
        fn answer(
            &self,
            info: Option<DiscoInfo>,
        ) -> impl FnOnce(Option<String>) -> Ready<Option<DiscoInfo>> + use<> {
            let peer = self.clone();
            move |node| {
                peer.calls.fetch_add(1, Ordering::SeqCst);
                peer.nodes.lock().expect("lock").push(node);
                std::future::ready(info)
            }
        }

        /// Like `answer`, but the answer comes after a few scheduler turns, so that other
        /// resolves can start while the query is under way.
        fn answer_later(
            &self,
            info: Option<DiscoInfo>,
        ) -> impl FnOnce(
            Option<String>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Option<DiscoInfo>> + Send>>
        + use<> {
            let peer = self.clone();
            move |node| {
                peer.calls.fetch_add(1, Ordering::SeqCst);
                peer.nodes.lock().expect("lock").push(node);
                Box::pin(async move {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    info
                })
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn nodes(&self) -> Vec<Option<String>> {
            self.nodes.lock().expect("lock").clone()
        }
    }

    #[test]
    fn features_from_vars() {
        let info = conversations();
        assert_eq!(
            Features::from_info(&info),
            Features {
                replies: true,
                corrections: true,
                reactions: true,
                retractions: true,
                markers: true,
                receipts: true,
                chat_states: true,
            }
        );
        assert_eq!(
            Features::from_vars(["urn:xmpp:message-retract:1", "urn:example"]),
            Features {
                retractions: true,
                ..Features::default()
            }
        );
        assert_eq!(Features::from_vars([]), Features::default());
    }

    #[tokio::test]
    async fn verified_caps_are_shared_by_ver() {
        let cache = FeatureCache::new();
        let info = conversations();
        let caps = caps_of(&info);
        let peer = Peer::default();

        let juliet = jid("juliet@capulet.example/phone");
        let got = cache
            .resolve(&juliet, Some(&caps), peer.answer(Some(info.clone())))
            .await;
        assert_eq!(got, Some(Features::from_info(&info)));
        assert_eq!(peer.nodes(), vec![Some(caps.disco_node())]);

        // Another contact on the same client: no second query.
        let romeo = jid("romeo@montague.example/orchard");
        let again = cache.resolve(&romeo, Some(&caps), peer.answer(None)).await;
        assert_eq!(again, got);
        assert_eq!(peer.calls(), 1);
        assert_eq!(cache.sizes(), (1, 0));

        // Forgetting a resource leaves the shared entry alone.
        cache.forget(&juliet);
        assert_eq!(
            cache.resolve(&juliet, Some(&caps), peer.answer(None)).await,
            got
        );
        assert_eq!(peer.calls(), 1);
    }

    #[tokio::test]
    async fn wrong_ver_is_kept_for_that_jid_only() {
        let cache = FeatureCache::new();
        let info = conversations();
        let lie = Caps {
            ver: caps_of(&plain()).ver,
            ..caps_of(&info)
        };
        let peer = Peer::default();

        let mallory = jid("mallory@evil.example/res");
        let got = cache
            .resolve(&mallory, Some(&lie), peer.answer(Some(info.clone())))
            .await;
        assert_eq!(got, Some(Features::from_info(&info)));
        assert_eq!(cache.sizes(), (0, 1));

        // Same JID, same caps: the per-JID answer serves.
        assert_eq!(
            cache.resolve(&mallory, Some(&lie), peer.answer(None)).await,
            got
        );
        assert_eq!(peer.calls(), 1);

        // Someone else with that ver is asked, and gets their own answer.
        let alice = jid("alice@example.org/pc");
        let honest = cache
            .resolve(&alice, Some(&lie), peer.answer(Some(plain())))
            .await;
        assert_eq!(honest, Some(Features::from_info(&plain())));
        assert_eq!(peer.calls(), 2);
        assert_eq!(cache.sizes(), (1, 1));
    }

    #[tokio::test]
    async fn extended_answer_is_not_cached_by_ver() {
        // XEP-0128 forms are part of the real hash; we do not hash them, so such an answer
        // never verifies and stays with its JID.
        let cache = FeatureCache::new();
        let mut info = conversations();
        let caps = caps_of(&info);
        info.extensions
            .push(Element::new("x", ns::DATA_FORMS).attr("type", "result"));
        let peer = Peer::default();
        let got = cache
            .resolve(
                &jid("a@example.org/x"),
                Some(&caps),
                peer.answer(Some(info)),
            )
            .await;
        assert!(got.is_some_and(|f| f.reactions));
        assert_eq!(cache.sizes(), (0, 1));
    }

    #[tokio::test]
    async fn duplicate_identities_do_not_verify() {
        let cache = FeatureCache::new();
        let mut info = plain();
        info.identities.push(Identity::new("client", "pc"));
        let vars: Vec<&str> = info.features.iter().map(String::as_str).collect();
        let caps = Caps::sha1(CONVERSATIONS_NODE, &info.identities, &vars);
        let peer = Peer::default();
        let got = cache
            .resolve(
                &jid("a@example.org/x"),
                Some(&caps),
                peer.answer(Some(info)),
            )
            .await;
        assert!(got.is_some());
        assert_eq!(cache.sizes(), (0, 1));
    }

    #[tokio::test]
    async fn no_caps_are_cached_per_jid() {
        let cache = FeatureCache::new();
        let peer = Peer::default();
        let juliet = jid("juliet@capulet.example/balcony");

        let got = cache
            .resolve(&juliet, None, peer.answer(Some(plain())))
            .await;
        assert_eq!(got, Some(Features::from_info(&plain())));
        assert_eq!(peer.nodes(), vec![None]);
        assert_eq!(cache.resolve(&juliet, None, peer.answer(None)).await, got);
        assert_eq!(peer.calls(), 1);

        // Another resource of the same account is its own client.
        let other = jid("juliet@capulet.example/laptop");
        assert_eq!(cache.resolve(&other, None, peer.answer(None)).await, None);
        assert_eq!(peer.calls(), 2);

        // New caps from the same resource: asked again.
        let caps = caps_of(&conversations());
        let with_caps = cache
            .resolve(&juliet, Some(&caps), peer.answer(Some(conversations())))
            .await;
        assert!(with_caps.is_some_and(|f| f.replies));
        assert_eq!(peer.calls(), 3);
    }

    #[tokio::test]
    async fn other_hash_is_cached_per_jid() {
        let cache = FeatureCache::new();
        let info = conversations();
        let caps = Caps {
            hash: "sha-256".into(),
            ..caps_of(&info)
        };
        let peer = Peer::default();
        let juliet = jid("juliet@capulet.example/balcony");
        let got = cache
            .resolve(&juliet, Some(&caps), peer.answer(Some(info)))
            .await;
        assert!(got.is_some_and(|f| f.corrections));
        assert_eq!(peer.nodes(), vec![None]);
        assert_eq!(cache.sizes(), (0, 1));
        assert_eq!(
            cache.resolve(&juliet, Some(&caps), peer.answer(None)).await,
            got
        );
        assert_eq!(peer.calls(), 1);
    }

    #[tokio::test]
    async fn forget_drops_the_jid_entry() {
        let cache = FeatureCache::new();
        let peer = Peer::default();
        let juliet = jid("juliet@capulet.example/balcony");
        cache
            .resolve(&juliet, None, peer.answer(Some(plain())))
            .await;
        assert_eq!(cache.sizes(), (0, 1));

        cache.forget(&juliet);
        assert_eq!(cache.sizes(), (0, 0));
        let got = cache
            .resolve(&juliet, None, peer.answer(Some(plain())))
            .await;
        assert!(got.is_some_and(|f| f.chat_states));
        assert_eq!(peer.calls(), 2);

        // Forgetting what is not there is fine.
        cache.forget(&jid("nobody@example.org/x"));
        assert_eq!(cache.sizes(), (0, 1));
    }

    #[tokio::test]
    async fn eviction_keeps_the_bounds() {
        let cache = FeatureCache::with_limits(2, 3);
        let peer = Peer::default();

        // Three client versions: the oldest is evicted.
        let mut versions = Vec::new();
        for i in 0..3 {
            let mut info = plain();
            info.features.push(format!("urn:example:v{i}"));
            let caps = caps_of(&info);
            let from = jid(&format!("user{i}@example.org/res"));
            cache
                .resolve(&from, Some(&caps), peer.answer(Some(info)))
                .await;
            versions.push((from, caps));
        }
        assert_eq!(cache.sizes(), (2, 0));
        assert_eq!(peer.calls(), 3);
        let (from, caps) = &versions[2];
        cache.resolve(from, Some(caps), peer.answer(None)).await;
        assert_eq!(peer.calls(), 3);
        let (from, caps) = &versions[0];
        assert_eq!(
            cache.resolve(from, Some(caps), peer.answer(None)).await,
            None
        );
        assert_eq!(peer.calls(), 4);

        // Five resources without caps: only the newest three stay.
        for i in 0..5 {
            let from = jid(&format!("user@example.org/r{i}"));
            cache.resolve(&from, None, peer.answer(Some(plain()))).await;
        }
        assert_eq!(cache.sizes(), (2, 3));
        let newest = jid("user@example.org/r4");
        assert!(
            cache
                .resolve(&newest, None, peer.answer(None))
                .await
                .is_some()
        );
        let oldest = jid("user@example.org/r0");
        assert_eq!(cache.resolve(&oldest, None, peer.answer(None)).await, None);
        assert_eq!(peer.calls(), 4 + 5 + 1);
    }

    #[tokio::test]
    async fn concurrent_resolves_share_one_query() {
        let cache = FeatureCache::new();
        let info = conversations();
        let caps = caps_of(&info);
        let peer = Peer::default();

        // Two contacts on the same client.
        let (a, b) = (jid("a@example.org/x"), jid("b@example.org/y"));
        let (fa, fb) = tokio::join!(
            cache.resolve(&a, Some(&caps), peer.answer_later(Some(info.clone()))),
            cache.resolve(&b, Some(&caps), peer.answer_later(Some(info.clone()))),
        );
        assert_eq!(peer.calls(), 1);
        assert_eq!(fa, Some(Features::from_info(&info)));
        assert_eq!(fa, fb);

        // One resource without caps, twice.
        let c = jid("c@example.org/z");
        let (fa, fb) = tokio::join!(
            cache.resolve(&c, None, peer.answer_later(Some(plain()))),
            cache.resolve(&c, None, peer.answer_later(Some(plain()))),
        );
        assert_eq!(peer.calls(), 2);
        assert_eq!(fa, Some(Features::from_info(&plain())));
        assert_eq!(fa, fb);
    }

    #[tokio::test]
    async fn unverified_answer_is_not_shared_with_a_waiting_contact() {
        let cache = FeatureCache::new();
        let lie = caps_of(&plain());
        let peer = Peer::default();
        let (mallory, alice) = (jid("mallory@evil.example/x"), jid("alice@example.org/y"));
        let (fm, fa) = tokio::join!(
            cache.resolve(
                &mallory,
                Some(&lie),
                peer.answer_later(Some(conversations()))
            ),
            cache.resolve(&alice, Some(&lie), peer.answer_later(Some(plain()))),
        );
        assert_eq!(peer.calls(), 2);
        assert_eq!(fm, Some(Features::from_info(&conversations())));
        assert_eq!(fa, Some(Features::from_info(&plain())));
        assert_eq!(cache.sizes(), (1, 1));
    }

    #[tokio::test]
    async fn failed_query_is_not_cached() {
        let cache = FeatureCache::new();
        let peer = Peer::default();
        let caps = caps_of(&conversations());
        let juliet = jid("juliet@capulet.example/balcony");

        assert_eq!(
            cache.resolve(&juliet, Some(&caps), peer.answer(None)).await,
            None
        );
        assert_eq!(cache.sizes(), (0, 0));
        let got = cache
            .resolve(&juliet, Some(&caps), peer.answer(Some(conversations())))
            .await;
        assert!(got.is_some_and(|f| f.reactions));
        assert_eq!(peer.calls(), 2);

        assert_eq!(cache.resolve(&juliet, None, peer.answer(None)).await, None);
        assert_eq!(cache.resolve(&juliet, None, peer.answer(None)).await, None);
        assert_eq!(peer.calls(), 4);
    }

    #[tokio::test]
    async fn a_cancelled_query_hands_over() {
        let cache = FeatureCache::new();
        let peer = Peer::default();
        let juliet = jid("juliet@capulet.example/balcony");

        let stuck = tokio::spawn({
            let (cache, juliet, peer) = (cache.clone(), juliet.clone(), peer.clone());
            async move {
                let query = move |_node| {
                    peer.calls.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<Option<DiscoInfo>>()
                };
                cache.resolve(&juliet, None, query).await
            }
        });
        tokio::task::yield_now().await;
        let waiter = tokio::spawn({
            let (cache, juliet, peer) = (cache.clone(), juliet.clone(), peer.clone());
            async move {
                cache
                    .resolve(&juliet, None, peer.answer(Some(plain())))
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(peer.calls(), 1);

        stuck.abort();
        let got = waiter.await.expect("the waiter finishes");
        assert!(got.is_some_and(|f| f.chat_states));
        assert_eq!(peer.calls(), 2);
        assert_eq!(cache.sizes(), (0, 1));
    }

    #[test]
    fn resolve_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let cache = FeatureCache::new();
        let juliet = jid("juliet@capulet.example/balcony");
        let peer = Peer::default();
        assert_send(&cache.resolve(&juliet, None, peer.answer_later(None)));
    }
}
